//! Audit log throughput: appends per second (SQLite, and PostgreSQL when `BENCH_DATABASE_URL` or
//! `TEST_DATABASE_URL` names a server), for one customer and for many, with durable commits;
//! and chain verification in entries per second, in memory and through `audit check`.
//!
//! Run: `cargo bench --bench audit` (sizes: `BENCH_APPENDS`, `BENCH_VERIFY_ENTRIES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use killswitch::audit::append::Sealer;
use killswitch::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use killswitch::audit::verify::ChainVerifier;
use killswitch::audit::{Actor, AuditEvent, AuditKey, KeyRing};
use killswitch::domain::ChainId;
use killswitch::reports::check;
use killswitch::store::audit_sql::{ENSURE_HEAD, write_plan};
use killswitch::store::{self, Store, StoreOptions};
use sqlx::Connection;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::ActionRequested {
        action_id: uuid::Uuid::new_v4(),
        operation: killswitch::audit::event::Operation::Disable,
        account: format!("user{n}@contoso.onmicrosoft.com"),
        reason: "Falcon ITP: credential stuffing followed by impossible travel".to_owned(),
        ticket: Some(format!("SOC-{n}")),
        revoke_sessions: true,
        mfa: None,
        request: None,
    }
}

async fn open(url: &str, key: &Arc<AuditKey>) -> Arc<dyn Store> {
    store::open(
        url,
        StoreOptions {
            max_connections: 32,
            create_if_missing: true,
            migrate: true,
            sealer: Some(Arc::new(Sealer::new(key.clone(), 1000))),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

/// `writers` tasks append `total` entries spread over `customers` chains; returns appends/s.
async fn appends(store: Arc<dyn Store>, customers: usize, writers: usize, total: usize) -> f64 {
    let chains: Arc<Vec<ChainId>> = Arc::new(
        (0..customers)
            .map(|c| format!("customer-{c}").parse().unwrap())
            .collect(),
    );
    let per_writer = total / writers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, chains) = (store.clone(), chains.clone());
            tokio::spawn(async move {
                for n in 0..per_writer {
                    let chain = &chains[(w + n * writers) % chains.len()];
                    store
                        .append(chain, &Actor::Service, &event(n))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_writer * writers) as f64 / started.elapsed().as_secs_f64()
}

/// The disk's durable-write limit: one 4 KiB write and `fdatasync` per commit, as a commit of
/// one page would cost at least; per second.
fn fsyncs_per_sec(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync.probe")).unwrap();
    let page = [0u8; 4096];
    let rounds = 500;
    let started = Instant::now();
    for _ in 0..rounds {
        file.write_all(&page).unwrap();
        file.sync_data().unwrap();
    }
    rounds as f64 / started.elapsed().as_secs_f64()
}

/// PostgreSQL's own durable-commit rate on this machine: one-row transactions, one connection.
async fn postgres_commits_per_sec(url: &str) -> f64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS commit_probe (n int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let rounds = 1000;
    let started = Instant::now();
    for n in 0..rounds {
        sqlx::query("INSERT INTO commit_probe VALUES ($1)")
            .bind(n)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    rounds as f64 / started.elapsed().as_secs_f64()
}

async fn fresh_postgres(server: &str) -> String {
    let name = format!("ks_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// Seals `n` entries of one chain in memory, as a store would hold them.
fn sealed_chain(
    key: &Arc<AuditKey>,
    n: usize,
) -> (
    Vec<EntryRecord>,
    Vec<CheckpointRecord>,
    HeadRecord,
    Vec<killswitch::audit::append::AppendPlan>,
) {
    let sealer = Sealer::new(key.clone(), 1000);
    let chain: ChainId = "contoso".parse().unwrap();
    let mut head: Option<HeadRecord> = None;
    let mut plans = Vec::with_capacity(n);
    for i in 0..n {
        let plan = sealer
            .plan(&chain, head.as_ref(), &Actor::Service, &event(i))
            .unwrap();
        head = Some(plan.head.clone());
        plans.push(plan);
    }
    let entries = plans.iter().map(|p| p.entry.clone()).collect();
    let checkpoints = plans.iter().filter_map(|p| p.checkpoint.clone()).collect();
    (entries, checkpoints, head.unwrap(), plans)
}

#[tokio::main]
async fn main() {
    let total = env_usize("BENCH_APPENDS", 20_000);
    let verify_n = env_usize("BENCH_VERIFY_ENTRIES", 1_000_000);
    let key = Arc::new(AuditKey::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();

    println!("audit appends, durable commits, {total} appends per run");
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}/bench.db", dir.path().display()),
    )];
    match std::env::var("BENCH_DATABASE_URL").or_else(|_| std::env::var("TEST_DATABASE_URL")) {
        Ok(server) if !server.is_empty() => {
            backends.push(("postgres", fresh_postgres(&server).await))
        }
        _ => println!("  (set BENCH_DATABASE_URL=postgres://… to include PostgreSQL)"),
    }
    let fsyncs = fsyncs_per_sec(dir.path());
    println!("  the limit: this disk does {fsyncs:.0} fdatasync/s (one 4 KiB write each)");
    for (name, url) in &backends {
        let commits = match *name {
            "postgres" => {
                let rate = postgres_commits_per_sec(url).await;
                println!(
                    "  the limit: PostgreSQL commits {rate:.0} one-row transactions/s on one connection"
                );
                rate
            }
            _ => fsyncs,
        };
        let store = open(url, &key).await;
        for (customers, writers) in [(1, 1), (1, 16), (100, 16), (100, 64)] {
            let rate = appends(store.clone(), customers, writers, total).await;
            let aim = if (*name, customers, writers) == ("postgres", 1, 16) {
                " (aim ≥ 5000)"
            } else {
                ""
            };
            println!(
                "  {name:8} {customers:>3} customer(s), {writers:>2} writers: {rate:>9.0} appends/s, {:>5.1} per durable commit time{aim}",
                rate / commits
            );
        }
    }

    println!("chain verification, {verify_n} entries");
    let (entries, checkpoints, head, plans) = sealed_chain(&key, verify_n);
    let ring = KeyRing::new([key.public_key()]);
    let started = Instant::now();
    let mut verifier = ChainVerifier::new("contoso", &ring, checkpoints.clone());
    for row in &entries {
        verifier.push(row).unwrap();
    }
    let summary = verifier.finish(Some(&head)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  in memory:          {:>9.0} entries/s ({} entries, {} checkpoints, {secs:.2} s)",
        verify_n as f64 / secs,
        summary.entries,
        summary.checkpoints
    );

    // The same chain stored in SQLite, checked the way `killswitch audit check` does.
    let url = format!("sqlite://{}/verify.db", dir.path().display());
    let store = open(&url, &key).await;
    store.register_signing_key(&key.public_key()).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(ENSURE_HEAD)
        .bind("contoso")
        .execute(&mut *tx)
        .await
        .unwrap();
    for plan in &plans {
        write_plan::<sqlx::Sqlite>(&mut tx, plan).await.unwrap();
    }
    tx.commit().await.unwrap();
    drop((entries, plans));
    let keys = check::keyring(store.as_ref(), []).await.unwrap();
    let started = Instant::now();
    let summary = check::check_chain(store.as_ref(), &keys, "contoso")
        .await
        .unwrap()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  sqlite audit check: {:>9.0} entries/s ({} entries, {secs:.2} s) (aim ≥ 1000000; in memory above is the verifier's own limit)",
        verify_n as f64 / secs,
        summary.entries
    );
}
