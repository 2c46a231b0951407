//! Invariant 3: any single tampering of a stored chain is caught, at the right entry.
//!
//! A clean chain is written through the store; then, a thousand times, one random tampering is
//! made behind the application's back (triggers dropped inside a transaction, as someone with the
//! database owner's rights could) and the stored rows are verified inside that transaction, which
//! is then rolled back. The seed is printed; set `TAMPER_SEED` to replay a run.

use crate::common;

use common::TestDb;
use killswitch::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use killswitch::audit::{Actor, AuditEvent, Hash, KeyRing};
use killswitch::domain::ChainId;
use killswitch::reports::check::verify_records;
use killswitch::store::audit_sql::{SELECT_CHECKPOINTS, SELECT_ENTRIES, SELECT_HEAD};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::{Any, AnyConnection, Connection, Transaction};

const CHAIN: &str = "contoso";
const CASES: usize = 1000;

/// 45 entries; checkpoints every 10 (10, 20, 30, 40) plus one asked for at 43, so the newest
/// two entries are covered only by the chain head.
async fn clean_chain(db: &TestDb) -> KeyRing {
    let (store, key) = db.store(10).await;
    let chain: ChainId = CHAIN.parse().unwrap();
    let other: ChainId = "fabrikam".parse().unwrap();
    for n in 1..=45u32 {
        let event = AuditEvent::ConsentFailed {
            tenant_id: Some(format!("{n:08}-0000-0000-0000-000000000000")),
            reason: format!("Zoë's laptop – attempt {n} \"quoted\" \\ back\tslash"),
        };
        store
            .append(&chain, &Actor::operator(), &event)
            .await
            .unwrap();
        store.append(&other, &Actor::Service, &event).await.unwrap();
        if n == 43 {
            store.checkpoint(&chain).await.unwrap().unwrap();
        }
    }
    KeyRing::new([key.public_key()])
}

struct Stored {
    entries: Vec<EntryRecord>,
    checkpoints: Vec<CheckpointRecord>,
    head: Option<HeadRecord>,
}

async fn read(conn: &mut AnyConnection) -> Stored {
    Stored {
        entries: sqlx::query_as(SELECT_ENTRIES)
            .bind(CHAIN)
            .fetch_all(&mut *conn)
            .await
            .unwrap(),
        checkpoints: sqlx::query_as(SELECT_CHECKPOINTS)
            .bind(CHAIN)
            .fetch_all(&mut *conn)
            .await
            .unwrap(),
        head: sqlx::query_as(SELECT_HEAD)
            .bind(CHAIN)
            .fetch_optional(&mut *conn)
            .await
            .unwrap(),
    }
}

fn verify(stored: &Stored, keys: &KeyRing) -> Result<u64, (u64, String)> {
    verify_records(
        CHAIN,
        keys,
        stored.checkpoints.clone(),
        &stored.entries,
        stored.head.as_ref(),
    )
    .map(|s| s.entries)
    .map_err(|b| (b.seq, b.reason))
}

async fn exec(tx: &mut Transaction<'_, Any>, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut **tx)
        .await
        .unwrap();
}

async fn exec_plain(conn: &mut AnyConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap();
}

async fn drop_triggers(tx: &mut Transaction<'_, Any>, postgres: bool) {
    let statements: &[&str] = if postgres {
        &[
            "DROP TRIGGER audit_entries_append_only ON audit_entries",
            "DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints",
            "DROP TRIGGER audit_heads_advance_only ON audit_heads",
        ]
    } else {
        &[
            "DROP TRIGGER audit_entries_no_update",
            "DROP TRIGGER audit_entries_no_delete",
            "DROP TRIGGER audit_checkpoints_no_update",
            "DROP TRIGGER audit_heads_advance_only",
        ]
    };
    for sql in statements {
        exec(tx, sql).await;
    }
}

/// Flips one low bit of one ASCII byte, never producing NUL (PostgreSQL text cannot hold it).
fn flip(rng: &mut StdRng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    loop {
        let i = rng.random_range(0..bytes.len());
        let flipped = bytes[i] ^ (1 << rng.random_range(0..7));
        if bytes[i] < 0x80 && flipped != 0 {
            bytes[i] = flipped;
            return String::from_utf8(bytes).unwrap();
        }
    }
}

const ENTRY_TEXT_FIELDS: [&str; 5] = ["chain", "time", "event", "entry", "hash"];
const CHECKPOINT_TEXT_FIELDS: [&str; 4] = ["hash", "time", "key_id", "signature"];

/// Applies one random tampering and returns its name and the first seq that must be reported.
async fn tamper(
    rng: &mut StdRng,
    tx: &mut Transaction<'_, Any>,
    clean: &Stored,
    key_for_forgery: &Stored,
) -> (String, u64) {
    let n = clean.entries.len() as i64;
    let row = |seq: i64| &clean.entries[(seq - 1) as usize];
    match rng.random_range(0..8) {
        0 => {
            let seq = rng.random_range(1..=n);
            let field = ENTRY_TEXT_FIELDS[rng.random_range(0..ENTRY_TEXT_FIELDS.len())];
            let original = match field {
                "chain" => &row(seq).chain,
                "time" => &row(seq).time,
                "event" => &row(seq).event,
                "entry" => &row(seq).entry,
                _ => &row(seq).hash,
            };
            let forged = flip(rng, original);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE audit_entries SET {field} = $1 WHERE chain = $2 AND seq = $3"
            )))
            .bind(forged)
            .bind(CHAIN)
            .bind(seq)
            .execute(&mut **tx)
            .await
            .unwrap();
            (format!("bit flip in {field} of entry {seq}"), seq as u64)
        }
        1 => {
            let seq = rng.random_range(1..=n);
            // High bits only: the new number lies beyond the chain, so it collides with nothing.
            let forged = seq ^ (1i64 << rng.random_range(7..40));
            exec(tx, &format!("UPDATE audit_entries SET seq = {forged} WHERE chain = '{CHAIN}' AND seq = {seq}")).await;
            (format!("bit flip in seq of entry {seq}"), seq as u64)
        }
        2 => {
            let seq = rng.random_range(1..=n);
            exec(
                tx,
                &format!("DELETE FROM audit_entries WHERE chain = '{CHAIN}' AND seq = {seq}"),
            )
            .await;
            (format!("deleted entry {seq}"), seq as u64)
        }
        3 => {
            let a = rng.random_range(1..n);
            let b = rng.random_range(a + 1..=n);
            for (to, from) in [(a, b), (b, a)] {
                let r = row(from);
                sqlx::query("UPDATE audit_entries SET time = $1, event = $2, entry = $3, hash = $4 WHERE chain = $5 AND seq = $6")
                    .bind(r.time.clone())
                    .bind(r.event.clone())
                    .bind(r.entry.clone())
                    .bind(r.hash.clone())
                    .bind(CHAIN)
                    .bind(to)
                    .execute(&mut **tx)
                    .await
                    .unwrap();
            }
            (format!("swapped entries {a} and {b}"), a as u64)
        }
        4 => {
            // A well-formed forgery appended after the head, chained from the last entry.
            let last = row(n);
            let forged = forge(n + 1, &last.hash, &last.time);
            insert(tx, &forged).await;
            (
                "forged entry appended beyond the head".to_owned(),
                (n + 1) as u64,
            )
        }
        5 => {
            // A well-formed forgery slipped in at `seq`, later entries renumbered to make room.
            let seq = rng.random_range(2..=n);
            let prev = row(seq - 1);
            exec(tx, &format!("UPDATE audit_entries SET seq = seq + 1000000 WHERE chain = '{CHAIN}' AND seq >= {seq}")).await;
            exec(tx, &format!("UPDATE audit_entries SET seq = seq - 999999 WHERE chain = '{CHAIN}' AND seq >= 1000000")).await;
            insert(tx, &forge(seq, &prev.hash, &prev.time)).await;
            // The forgery links correctly, so the break shows at the displaced entry, unless a
            // signed checkpoint names the original hash at `seq`.
            let signed_here = clean.checkpoints.iter().any(|c| c.seq == seq);
            (
                format!("forged entry inserted at {seq}"),
                if signed_here { seq } else { seq + 1 } as u64,
            )
        }
        6 => {
            let keep = rng.random_range(0..n);
            exec(
                tx,
                &format!("DELETE FROM audit_entries WHERE chain = '{CHAIN}' AND seq > {keep}"),
            )
            .await;
            let signed_beyond = clean.checkpoints.iter().any(|c| c.seq > keep);
            if signed_beyond {
                // Cover the tracks in the head too: only the signed checkpoint can tell.
                let hash = if keep == 0 {
                    String::new()
                } else {
                    row(keep).hash.clone()
                };
                sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE chain = $3")
                    .bind(keep)
                    .bind(hash)
                    .bind(CHAIN)
                    .execute(&mut **tx)
                    .await
                    .unwrap();
            }
            (
                format!("truncated after entry {keep} (head rewound: {signed_beyond})"),
                (keep + 1) as u64,
            )
        }
        _ => {
            let cp = &key_for_forgery.checkpoints
                [rng.random_range(0..key_for_forgery.checkpoints.len())];
            let field = CHECKPOINT_TEXT_FIELDS[rng.random_range(0..CHECKPOINT_TEXT_FIELDS.len())];
            let original = match field {
                "hash" => &cp.hash,
                "time" => &cp.time,
                "key_id" => &cp.key_id,
                _ => &cp.signature,
            };
            let forged = flip(rng, original);
            if forged == *original {
                unreachable!()
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE audit_checkpoints SET {field} = $1 WHERE chain = $2 AND seq = $3"
            )))
            .bind(forged)
            .bind(CHAIN)
            .bind(cp.seq)
            .execute(&mut **tx)
            .await
            .unwrap();
            (
                format!("bit flip in {field} of the checkpoint at {}", cp.seq),
                cp.seq as u64,
            )
        }
    }
}

/// An entry a forger would write: valid JSON, correct seq and prev_hash, correct hash.
fn forge(seq: i64, prev_hash: &str, time: &str) -> EntryRecord {
    let prev = Hash::from_hex(prev_hash).unwrap();
    let entry = serde_json::json!({
        "actor": {"type": "service"},
        "chain": CHAIN,
        "event": {"reason": "nothing to see", "tenant_id": null, "type": "consent_failed"},
        "prev_hash": prev_hash,
        "seq": seq,
        "time": time,
        "v": 1,
    });
    let text = serde_jcs::to_string(&entry).unwrap();
    EntryRecord {
        chain: CHAIN.to_owned(),
        seq,
        time: time.to_owned(),
        event: "consent_failed".to_owned(),
        hash: Hash::link(&prev, text.as_bytes()).to_hex(),
        entry: text,
    }
}

async fn insert(tx: &mut Transaction<'_, Any>, row: &EntryRecord) {
    sqlx::query("INSERT INTO audit_entries (chain, seq, time, event, entry, hash) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(row.chain.clone())
        .bind(row.seq)
        .bind(row.time.clone())
        .bind(row.event.clone())
        .bind(row.entry.clone())
        .bind(row.hash.clone())
        .execute(&mut **tx)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_single_tampering_is_detected_at_the_first_bad_seq() {
    let db = TestDb::new().await;
    let keys = clean_chain(&db).await;
    let mut conn = db.raw().await;
    if !db.is_postgres() {
        // Only this test connection, which rolls everything back, skips the fsyncs.
        exec_plain(&mut conn, "PRAGMA synchronous = OFF").await;
    }
    let clean = read(&mut conn).await;
    assert_eq!(verify(&clean, &keys), Ok(45), "the clean chain verifies");
    assert_eq!(
        clean.checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [10, 20, 30, 40, 43]
    );

    let seed: u64 = std::env::var("TAMPER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("tamper seed {seed} (TAMPER_SEED={seed} replays this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..CASES {
        let mut tx = conn.begin().await.unwrap();
        drop_triggers(&mut tx, db.is_postgres()).await;
        let (what, expected) = tamper(&mut rng, &mut tx, &clean, &clean).await;
        let tampered = read(&mut tx).await;
        tx.rollback().await.unwrap();
        match verify(&tampered, &keys) {
            Err((seq, _)) if seq == expected => {}
            Err((seq, reason)) => {
                panic!("case {case}, {what}: reported seq {seq} ({reason}), expected {expected}")
            }
            Ok(_) => panic!("case {case}, {what}: not detected"),
        }
        *kinds
            .entry(what.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .or_default() += 1;
    }
    eprintln!("tamperings by kind: {kinds:?}");
    assert_eq!(
        verify(&read(&mut conn).await, &keys),
        Ok(45),
        "rolled back: clean again"
    );
}
