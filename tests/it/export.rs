//! Per-customer audit exports: the JSON Lines export verifies, and every way of tampering with
//! it is caught on the line where it happened; no format ever carries another customer's rows;
//! CSV cells cannot run as spreadsheet formulas.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::TestDb;
use common::export::{Rng, analyst, export_bytes, line_of, lines};
use futures::TryStreamExt;
use killswitch::audit::event::{
    AccountState, AuthMethod, GraphEvidence, MfaEvidence, Operation, Outcome, RequestContext,
};
use killswitch::audit::records::{EntryLines, EntryRecord};
use killswitch::audit::signing::{KeyRing, checkpoint_message};
use killswitch::audit::{Actor, AuditEvent, AuditKey, Hash};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{ChainId, TenantId};
use killswitch::reports::export::Format;
use killswitch::reports::export::verify::{BadLine, Verified, verify, verify_file};
use killswitch::store::Store;
use killswitch::time::Timestamp;
use serde_json::Value;
use uuid::Uuid;

async fn add_customer(store: &Arc<dyn Store>, slug: &str) {
    let customer = Customer {
        slug: slug.parse().unwrap(),
        name: format!("{slug} Ltd"),
        domain: format!("{slug}.example"),
        tenant_id: TenantId::new(Uuid::new_v4()),
        policy: Policy::default(),
        created_at: Timestamp::now(),
        connection: None,
    };
    store
        .add_customer(&customer, &Actor::operator())
        .await
        .unwrap();
}

/// Appends one random, realistic event to `slug`'s chain; every text names the customer, so a
/// leak into another customer's export is visible as that name.
async fn random_event(store: &Arc<dyn Store>, slug: &str, rng: &mut Rng) {
    let chain = ChainId::Customer(slug.parse().unwrap());
    let account = format!("user{}@{slug}.example", rng.below(50));
    let actor = analyst(slug);
    match rng.below(4) {
        0 | 1 => {
            let action_id = Uuid::new_v4();
            let operation = if rng.below(3) == 0 {
                Operation::Enable
            } else {
                Operation::Disable
            };
            let requested = AuditEvent::ActionRequested {
                action_id,
                operation,
                account: account.clone(),
                reason: format!("Falcon detection for {slug}, \"quoted\", with comma"),
                ticket: Some(format!("{slug}-{}", rng.below(1000))),
                revoke_sessions: true,
                mfa: Some(MfaEvidence {
                    method: "totp".into(),
                    time_step: 59_000_000 + rng.below(1000) as u64,
                    verified_at: Timestamp::now(),
                }),
                request: Some(RequestContext {
                    request_id: Some(Uuid::new_v4().to_string()),
                    client_ip: Some("192.0.2.7".into()),
                    user_agent: Some(format!("soc-console ({slug})")),
                }),
            };
            store.append(&chain, &actor, &requested).await.unwrap();
            let outcome = [
                Outcome::Succeeded,
                Outcome::Noop,
                Outcome::Failed,
                Outcome::Denied,
            ][rng.below(4)];
            let state = |enabled: bool| AccountState {
                id: Uuid::new_v4().to_string(),
                user_principal_name: account.clone(),
                account_enabled: Some(enabled),
                on_premises_sync_enabled: Some(false),
            };
            let finished = AuditEvent::ActionOutcome {
                action_id,
                outcome,
                detail: (outcome == Outcome::Failed).then(|| format!("Graph refused for {slug}")),
                warnings: vec![],
                before: Some(state(!operation.target_enabled())),
                after: Some(state(operation.target_enabled())),
                graph: Some(GraphEvidence {
                    status: Some(204),
                    error_code: None,
                    request_id: Some(Uuid::new_v4().to_string()),
                    client_request_id: Some(Uuid::new_v4().to_string()),
                    date: None,
                }),
                duration_ms: 120,
            };
            store.append(&chain, &actor, &finished).await.unwrap();
        }
        2 => {
            let event = AuditEvent::DetectionReceived {
                detection_id: Uuid::new_v4(),
                composite_id: format!("ind:{slug}:{}", rng.next()),
                severity: "critical".into(),
                account: Some(account),
                assurance: "signed".into(),
            };
            let falcon = Actor::Falcon {
                policy: "critical".into(),
                client_ip: None,
            };
            store.append(&chain, &falcon, &event).await.unwrap();
        }
        _ => {
            let event = AuditEvent::CustomerPolicyChanged {
                changes: serde_json::json!({"protected": [format!("breakglass@{slug}.example")]}),
            };
            store.append(&chain, &actor, &event).await.unwrap();
        }
    }
}

fn keys(key: &AuditKey) -> KeyRing {
    KeyRing::new([key.public_key()])
}

fn check_file(
    dir: &Path,
    bytes: &[u8],
    keys: &KeyRing,
    expected: Option<&str>,
) -> Result<Verified, BadLine> {
    let path = dir.join("export.jsonl");
    std::fs::write(&path, bytes).unwrap();
    verify_file(&path, keys, expected).unwrap()
}

/// A store with three customers whose entries interleave, checkpoints every 5 entries.
async fn dataset(db: &TestDb, per_customer: usize) -> (Arc<dyn Store>, Arc<AuditKey>) {
    let (store, key) = db.store(5).await;
    let slugs = ["contoso", "fabrikam", "northwind"];
    for slug in slugs {
        add_customer(&store, slug).await;
    }
    let mut rng = Rng(0x5EED_1234_ABCD);
    for _ in 0..per_customer {
        for slug in slugs {
            random_event(&store, slug, &mut rng).await;
        }
    }
    (store, key)
}

#[tokio::test]
async fn an_intact_export_verifies_and_a_changed_byte_anywhere_is_caught_on_its_line() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db, 12).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let keys = keys(&key);
    let verified = check_file(db.dir.path(), &bytes, &keys, Some("contoso")).unwrap();
    let chain_length = store.head("contoso").await.unwrap().unwrap().seq as u64;
    assert_eq!(
        verified.entries,
        chain_length - 1,
        "all but the export's own entry"
    );
    assert_eq!(verified.first_seq, Some(1));
    assert!(verified.checkpoints >= 2, "{verified:?}");
    // The same verdict from standard-input style streaming.
    assert_eq!(verify(&bytes[..], &keys, None).unwrap(), Ok(verified));

    // Every line's first, middle and last byte, and 300 more anywhere.
    let mut offsets = Vec::new();
    let mut start = 0;
    for line in lines(&bytes) {
        offsets.extend([start, start + line.len() / 2, start + line.len() - 1]);
        start += line.len();
    }
    let mut rng = Rng(0xB17E);
    offsets.extend((0..300).map(|_| rng.below(bytes.len())));
    for offset in offsets {
        for flip in [0x01u8, 0x20] {
            let mut changed = bytes.clone();
            changed[offset] ^= flip;
            let bad = check_file(db.dir.path(), &changed, &keys, None)
                .expect_err(&format!("byte {offset} ^ {flip:#x} went unnoticed"));
            assert_eq!(
                bad.line,
                line_of(&bytes, offset),
                "byte {offset} ^ {flip:#x}: {bad}"
            );
        }
    }
}

/// The store builds the export's entry lines itself (SQLite in one statement a page); they are
/// exactly the lines its entries make, in order, whatever range and however it is paged.
#[tokio::test]
async fn the_stores_export_lines_are_its_entries_line_for_line_across_pages() {
    let db = TestDb::new().await;
    let (store, _key) = db.store(500).await;
    add_customer(&store, "contoso").await;
    let mut rng = Rng(0x11E5);
    for _ in 0..1100 {
        random_event(&store, "contoso", &mut rng).await;
    }
    let last = store.head("contoso").await.unwrap().unwrap().seq;
    for (first, to) in [(1, last), (2, 1025), (1024, 1024), (700, last), (5, 4)] {
        let built: Vec<EntryLines> = store
            .entry_lines("contoso", first, to)
            .try_collect()
            .await
            .unwrap();
        let mut expected = EntryLines::default();
        let rows: Vec<EntryRecord> = store
            .entry_range("contoso", first, to)
            .try_collect()
            .await
            .unwrap();
        rows.into_iter().for_each(|row| expected.push(row));
        let text: String = built.iter().map(|run| run.text.as_str()).collect();
        assert_eq!(text, expected.text, "{first}..={to}");
        let count: u64 = built.iter().map(|run| run.count).sum();
        assert_eq!(count, expected.count, "{first}..={to}");
        assert_eq!(built.last().and_then(|run| run.last.clone()), expected.last);
    }
}

#[tokio::test]
async fn removed_swapped_appended_and_cut_lines_are_each_caught_where_they_happened() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db, 10).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let other = export_bytes(&store, &key, "fabrikam", Format::Jsonl, None, None).await;
    let keys = keys(&key);
    let original = lines(&bytes);
    let n = original.len();
    let dir = db.dir.path();

    for removed in 0..n {
        let mut l = original.clone();
        l.remove(removed);
        let bad = check_file(dir, &l.concat(), &keys, None).unwrap_err();
        assert_eq!(
            bad.line,
            removed as u64 + 1,
            "removing line {}: {bad}",
            removed + 1
        );
    }
    for first in 0..n - 1 {
        let mut l = original.clone();
        l.swap(first, first + 1);
        let bad = check_file(dir, &l.concat(), &keys, None).unwrap_err();
        assert_eq!(
            bad.line,
            first as u64 + 1,
            "swapping lines {} and {}: {bad}",
            first + 1,
            first + 2
        );
    }
    // Lines of another customer's export: after the seal, or slipped in among the entries.
    let foreign = lines(&other);
    let mut appended = original.clone();
    appended.extend(foreign[1..4].iter().cloned());
    let bad = check_file(dir, &appended.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, n as u64 + 1, "{bad}");
    let mut inserted = original.clone();
    inserted.insert(5, foreign[3].clone());
    let bad = check_file(dir, &inserted.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, 6, "{bad}");
    assert!(bad.reason.contains("fabrikam"), "{bad}");

    // A later export of the same customer continues the chain, but its entries still cannot
    // be slipped in before this export's seal.
    let mut rng = Rng(7);
    random_event(&store, "contoso", &mut rng).await;
    let later_from: Timestamp =
        Timestamp::from_datetime(chrono::Utc::now() - chrono::Duration::milliseconds(500));
    let later = export_bytes(
        &store,
        &key,
        "contoso",
        Format::Jsonl,
        Some(later_from),
        None,
    )
    .await;
    let later = lines(&later);
    let mut extended = original.clone();
    extended.insert(n - 1, later[1].clone());
    let bad = check_file(dir, &extended.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, n as u64, "{bad}");

    // Cut anywhere: the cut line, or the missing seal right after the last whole line.
    let mut rng = Rng(0xC07);
    for _ in 0..100 {
        let cut = 1 + rng.below(bytes.len() - 1);
        let bad = check_file(dir, &bytes[..cut], &keys, None).unwrap_err();
        assert_eq!(bad.line, line_of(&bytes, cut), "cut at byte {cut}: {bad}");
    }
    let bad = check_file(dir, b"", &keys, None).unwrap_err();
    assert_eq!(bad.line, 1);
}

#[tokio::test]
async fn a_checkpoint_or_seal_signed_with_another_key_is_refused_on_its_line() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db, 8).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let keys = keys(&key);
    let intruder = AuditKey::generate().unwrap();
    let original = lines(&bytes);
    let at = original
        .iter()
        .position(|l| l.starts_with(b"{\"chain\"") && l.windows(12).any(|w| w == b"\"checkpoint\""))
        .unwrap();
    let mut checkpoint: Value = serde_json::from_slice(&original[at]).unwrap();
    let hash = Hash::from_hex(checkpoint["hash"].as_str().unwrap()).unwrap();
    let time: Timestamp = checkpoint["time"].as_str().unwrap().parse().unwrap();
    let message = checkpoint_message(
        checkpoint["chain"].as_str().unwrap(),
        checkpoint["seq"].as_u64().unwrap(),
        &hash,
        &time,
    )
    .unwrap();
    let resigned = intruder.sign_bytes(&message);

    // Re-signed, key id left alone: the signature does not verify.
    checkpoint["signature"] = Value::String(resigned.clone());
    let mut l = original.clone();
    l[at] = [serde_jcs::to_vec(&checkpoint).unwrap(), b"\n".to_vec()].concat();
    let bad = check_file(db.dir.path(), &l.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, at as u64 + 1, "{bad}");
    assert!(bad.reason.contains("does not verify"), "{bad}");

    // Re-signed and naming the other key: that key is not one the customer trusts.
    checkpoint["key_id"] = Value::String(intruder.key_id().to_string());
    l[at] = [serde_jcs::to_vec(&checkpoint).unwrap(), b"\n".to_vec()].concat();
    let bad = check_file(db.dir.path(), &l.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, at as u64 + 1, "{bad}");
    assert!(bad.reason.contains(intruder.key_id().as_str()), "{bad}");

    // Verified against the wrong public key altogether: refused on the header.
    let bad = check_file(
        db.dir.path(),
        &bytes,
        &KeyRing::new([intruder.public_key()]),
        None,
    )
    .unwrap_err();
    assert_eq!(bad.line, 1, "{bad}");
}

#[tokio::test]
async fn an_export_of_one_customer_presented_as_another_is_refused_on_line_one() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db, 4).await;
    let keys = keys(&key);
    let fabrikam = export_bytes(&store, &key, "fabrikam", Format::Jsonl, None, None).await;
    let bad = check_file(db.dir.path(), &fabrikam, &keys, Some("contoso")).unwrap_err();
    assert_eq!(bad.line, 1);
    assert!(bad.reason.contains("fabrikam"), "{bad}");

    // Relabelled: the header now says contoso, but the seal signed the original header.
    let relabelled = String::from_utf8(fabrikam.clone())
        .unwrap()
        .replacen("\"chain\":\"fabrikam\"", "\"chain\":\"contoso\"", 1)
        .replacen(
            "\"customer\":\"fabrikam Ltd\"",
            "\"customer\":\"contoso Ltd\"",
            1,
        );
    let bad = check_file(db.dir.path(), relabelled.as_bytes(), &keys, Some("contoso")).unwrap_err();
    assert_eq!(bad.line, 1, "{bad}");
}

#[tokio::test]
async fn a_period_exports_a_contiguous_verifiable_slice_and_records_the_export() {
    let db = TestDb::new().await;
    let (store, key) = db.store(4).await;
    add_customer(&store, "contoso").await;
    let mut rng = Rng(99);
    for _ in 0..6 {
        random_event(&store, "contoso", &mut rng).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let from = Timestamp::now();
    for _ in 0..6 {
        random_event(&store, "contoso", &mut rng).await;
    }
    let to = Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    random_event(&store, "contoso", &mut rng).await;

    let all: Vec<_> = store.entries("contoso").try_collect().await.unwrap();
    let inside: Vec<_> = all
        .iter()
        .filter(|r| r.time >= from.to_string() && r.time < to.to_string())
        .collect();
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, Some(from), Some(to)).await;
    let verified = check_file(db.dir.path(), &bytes, &keys(&key), Some("contoso")).unwrap();
    assert_eq!(verified.first_seq, Some(inside[0].seq as u64));
    assert_eq!(verified.last_seq, Some(inside.last().unwrap().seq as u64));
    assert_eq!(verified.entries, inside.len() as u64);
    assert_eq!(
        verified.last_hash.as_deref(),
        Some(inside.last().unwrap().hash.as_str())
    );

    // The export itself is now the newest entry of the chain, saying who, which range, format.
    let newest = store
        .entries("contoso")
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let entry: Value = serde_json::from_str(&newest.last().unwrap().entry).unwrap();
    assert_eq!(entry["event"]["type"], "audit_exported");
    assert_eq!(entry["event"]["format"], "jsonl");
    assert_eq!(entry["event"]["from"], from.to_string());
    assert_eq!(entry["event"]["to"], to.to_string());
    assert_eq!(entry["event"]["entries"], inside.len() as u64);
    assert_eq!(entry["actor"]["type"], "operator");

    // An empty period is still a sealed, verifiable statement that nothing happened.
    let empty_from = Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::hours(1));
    let empty = export_bytes(
        &store,
        &key,
        "contoso",
        Format::Jsonl,
        Some(empty_from),
        None,
    )
    .await;
    let verified = check_file(db.dir.path(), &empty, &keys(&key), Some("contoso")).unwrap();
    assert_eq!((verified.entries, verified.first_seq), (0, None));
}

#[tokio::test]
async fn randomised_customers_never_leak_into_each_others_exports_in_any_format() {
    let db = TestDb::new().await;
    let (store, key) = db.store(7).await;
    let mut rng = Rng(0xD1CE_0042);
    let slugs: Vec<String> = (0..4)
        .map(|i| format!("tenant{i}x{}", rng.below(1000)))
        .collect();
    for slug in &slugs {
        add_customer(&store, slug).await;
    }
    for _ in 0..60 {
        let slug = &slugs[rng.below(slugs.len())];
        random_event(&store, slug, &mut rng).await;
    }
    for slug in &slugs {
        let expected = store.head(slug).await.unwrap().unwrap().seq as usize;
        for format in [Format::Jsonl, Format::Csv, Format::Ocsf, Format::Html] {
            let bytes = export_bytes(&store, &key, slug, format, None, None).await;
            let text = String::from_utf8(bytes).unwrap();
            for other in slugs.iter().filter(|s| *s != slug) {
                assert!(
                    !text.contains(other.as_str()),
                    "{format:?} export of {slug} mentions {other}"
                );
            }
            let rows = match format {
                Format::Jsonl => text.lines().filter(|l| l.starts_with("{\"entry\"")).count(),
                Format::Ocsf => text.lines().count(),
                Format::Csv => csv::Reader::from_reader(text.as_bytes()).records().count(),
                Format::Html => {
                    text.matches("<td class=\"n\">").count()
                        - text
                            .split("Signed checkpoints")
                            .nth(1)
                            .map_or(0, |t| t.matches("<td class=\"n\">").count())
                }
            };
            // Each export sees the entries before it; earlier exports of this loop added theirs.
            let exported_before = [Format::Jsonl, Format::Csv, Format::Ocsf, Format::Html]
                .iter()
                .position(|f| *f == format)
                .unwrap();
            assert_eq!(
                rows,
                expected + exported_before,
                "{format:?} export of {slug} is incomplete"
            );
        }
    }
}

#[tokio::test]
async fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
    let db = TestDb::new().await;
    let (store, key) = db.store(1000).await;
    add_customer(&store, "contoso").await;
    let chain = ChainId::Customer("contoso".parse().unwrap());
    let hostile = [
        "=HYPERLINK(\"http://evil.example\",\"open\")",
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\tleading tab",
        "\rleading return",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let event = AuditEvent::ActionRequested {
            action_id: Uuid::new_v4(),
            operation: Operation::Disable,
            account: format!("{text}@contoso.example"),
            reason: (*text).to_owned(),
            ticket: Some(format!("=T{i}")),
            revoke_sessions: false,
            mfa: None,
            request: None,
        };
        let actor = Actor::Analyst {
            id: Uuid::new_v4(),
            email: format!("@evil{i}.example"),
            auth: AuthMethod::Oidc,
            client_ip: None,
        };
        store.append(&chain, &actor, &event).await.unwrap();
    }
    let bytes = export_bytes(&store, &key, "contoso", Format::Csv, None, None).await;
    assert!(bytes.windows(2).any(|w| w == b"\r\n"), "RFC 4180 line ends");
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let headers = reader.headers().unwrap().clone();
    let reason_column = headers.iter().position(|h| h == "reason").unwrap();
    let mut reasons = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        assert_eq!(record.len(), headers.len());
        for cell in record.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "cell {cell:?} would run as a formula"
            );
        }
        reasons.push(record[reason_column].to_owned());
    }
    for text in hostile {
        assert!(
            reasons.contains(&format!("'{text}")),
            "{text:?} kept, behind a quote: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn ocsf_events_carry_the_documented_classes_and_the_html_report_escapes_everything() {
    let db = TestDb::new().await;
    let (store, key) = db.store(3).await;
    add_customer(&store, "contoso").await;
    let mut rng = Rng(3);
    for _ in 0..12 {
        random_event(&store, "contoso", &mut rng).await;
    }
    let chain = ChainId::Customer("contoso".parse().unwrap());
    let event = AuditEvent::ActionRequested {
        action_id: Uuid::new_v4(),
        operation: Operation::Disable,
        account: "eve@contoso.example".into(),
        reason: "<script>alert('x')</script>".into(),
        ticket: None,
        revoke_sessions: false,
        mfa: None,
        request: None,
    };
    store
        .append(&chain, &analyst("contoso"), &event)
        .await
        .unwrap();

    let ocsf = export_bytes(&store, &key, "contoso", Format::Ocsf, None, None).await;
    for line in String::from_utf8(ocsf).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let kind = event["unmapped"]["killswitch"]["event"]["type"]
            .as_str()
            .unwrap();
        let class = event["class_uid"].as_u64().unwrap();
        let activity = event["activity_id"].as_u64().unwrap();
        assert_eq!(event["type_uid"].as_u64().unwrap(), class * 100 + activity);
        assert_eq!(event["metadata"]["version"], "1.3.0");
        assert!(event["time"].as_i64().unwrap() > 1_700_000_000_000);
        match kind {
            "action_requested" | "action_outcome" => {
                assert_eq!(class, 3001, "{line}");
                assert!([2, 5].contains(&activity), "{line}");
                assert!(
                    event["user"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("@contoso.example")
                );
            }
            "customer_added" | "customer_policy_changed" | "detection_received" => {
                assert_eq!(class, 6003, "{line}");
                assert!(event["api"]["operation"].is_string());
            }
            other => panic!("unexpected event {other}"),
        }
    }

    let html =
        String::from_utf8(export_bytes(&store, &key, "contoso", Format::Html, None, None).await)
            .unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script>"), "event text is escaped");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    for section in [
        "Summary",
        "Actions",
        "Timeline",
        "Verification data",
        &key.public_key().to_base64(),
    ] {
        assert!(html.contains(section), "the report has {section}");
    }
    let summary = html.split("<h2>Actions</h2>").next().unwrap();
    assert!(summary.contains("Outcomes"), "{summary}");
}

#[tokio::test]
async fn refusals_read_as_plain_sentences() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db, 4).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let keys = keys(&key);
    let dir = db.dir.path();

    // Saved again by an editor that adds a byte-order mark: named as such, not as lost lines.
    let with_bom = [b"\xef\xbb\xbf".to_vec(), bytes.clone()].concat();
    let bad = check_file(dir, &with_bom, &keys, None).unwrap_err();
    assert_eq!(bad.line, 1);
    assert!(bad.reason.contains("byte-order mark"), "{bad}");

    // A changed header: its signature, said once.
    let original = lines(&bytes);
    let mut changed = original.clone();
    changed[0] = String::from_utf8(changed[0].clone())
        .unwrap()
        .replacen(
            "\"customer\":\"contoso Ltd\"",
            "\"customer\":\"contosx Ltd\"",
            1,
        )
        .into_bytes();
    let bad = check_file(dir, &changed.concat(), &keys, None).unwrap_err();
    assert_eq!(bad.line, 1);
    assert!(
        bad.reason
            .starts_with("the header's signature does not verify with key"),
        "{bad}"
    );

    // The last entry removed: the numbers are entry numbers, not Rust's `Some(…)`.
    let last = original
        .iter()
        .rposition(|l| l.starts_with(b"{\"entry\""))
        .unwrap();
    let mut cut = original.clone();
    cut.remove(last);
    let bad = check_file(dir, &cut.concat(), &keys, None).unwrap_err();
    assert!(bad.reason.contains("entries were removed"), "{bad}");
    assert!(bad.reason.contains("ending at entry"), "{bad}");
    assert!(!bad.reason.contains("Some("), "{bad}");
}

#[tokio::test]
async fn a_period_bound_the_export_format_cannot_state_is_refused_before_anything_is_written() {
    let app = common::TestApp::spawn().await;
    add_customer(&app.store, "contoso").await;
    let auditor = app
        .enroll(
            "auditor@provider.example",
            killswitch::auth::Role::Auditor,
            "all",
        )
        .await;
    let before = common::entries(&app.store, "contoso").await.len();
    for query in [
        "from=0000-01-01T00:00:00Z",
        "from=0000-01-01",
        "to=9999-12-31T23:59:60Z",
        "from=2026-06-30T23:59:60Z",
    ] {
        let answer = app
            .client
            .get(app.url(&format!("/api/v1/customers/contoso/audit/export?{query}")))
            .bearer_auth(&auditor.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 422, "{query}");
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("cannot bound an export"),
            "{query}: {problem}"
        );
    }
    assert_eq!(
        common::entries(&app.store, "contoso").await.len(),
        before,
        "a refused export is not recorded as exported"
    );
    for bound in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        assert!(
            killswitch::reports::export::parse_bound(bound).is_ok(),
            "{bound}"
        );
    }
}
