//! Exporting and verifying a customer log of 1,000,000 entries: wall time and peak memory of
//! `killswitch audit export` (every format) and `killswitch audit verify`, run as the commands
//! an operator and a customer run, on SQLite and, when `BENCH_DATABASE_URL` names a server, on
//! PostgreSQL.
//!
//! Run: `cargo bench --bench export` (size: `BENCH_EXPORT_ENTRIES`). The SQLite dataset is kept
//! under target/tmp between runs because writing it takes longer than the measurements.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::audit::append::Sealer;
use killswitch::audit::event::{
    AccountState, AuthMethod, GraphEvidence, MfaEvidence, Operation, Outcome, RequestContext,
};
use killswitch::audit::records::HeadRecord;
use killswitch::audit::{Actor, AuditEvent, AuditKey};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{ChainId, TenantId};
use killswitch::store::{self, Store, StoreOptions};
use killswitch::time::Timestamp;
use sqlx::Connection;
use uuid::Uuid;

const CHAIN: &str = "contoso";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Entry `i` of a realistic night: a request with its MFA evidence, then its outcome.
fn event(i: usize, action: Uuid) -> AuditEvent {
    let account = format!("user{}@contoso.onmicrosoft.com", i % 5000);
    if i.is_multiple_of(2) {
        AuditEvent::ActionRequested {
            action_id: action,
            operation: Operation::Disable,
            account,
            reason: "Falcon ITP: credential stuffing followed by impossible travel".to_owned(),
            ticket: Some(format!("SOC-{i}")),
            revoke_sessions: true,
            mfa: Some(MfaEvidence {
                method: "totp".to_owned(),
                time_step: 59_000_000 + i as u64,
                verified_at: Timestamp::now(),
            }),
            request: Some(RequestContext {
                request_id: Some(Uuid::new_v4().to_string()),
                client_ip: Some("203.0.113.17".to_owned()),
                user_agent: Some("curl/8.5.0".to_owned()),
            }),
        }
    } else {
        let state = |enabled| AccountState {
            id: "0d1f3d5e-5b6e-4d7a-9d51-0f8d2f0a1b2c".to_owned(),
            user_principal_name: account.clone(),
            account_enabled: Some(enabled),
            on_premises_sync_enabled: Some(false),
        };
        AuditEvent::ActionOutcome {
            action_id: action,
            outcome: Outcome::Succeeded,
            detail: None,
            warnings: vec![],
            before: Some(state(true)),
            after: Some(state(false)),
            graph: Some(GraphEvidence {
                status: Some(204),
                error_code: None,
                request_id: Some(Uuid::new_v4().to_string()),
                client_request_id: Some(Uuid::new_v4().to_string()),
                date: Some("Fri, 27 Nov 2026 03:12:09 GMT".to_owned()),
            }),
            duration_ms: 143,
        }
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn open(url: &str, key: &Arc<AuditKey>) -> Arc<dyn Store> {
    store::open(
        url,
        StoreOptions {
            max_connections: 4,
            create_if_missing: true,
            migrate: true,
            sealer: Some(Arc::new(Sealer::new(key.clone(), 1000))),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Writes `n` sealed entries into the customer's chain with multi-row inserts (the append path
/// commits each entry durably, which would make building the dataset take minutes).
async fn populate(url: &str, key: &Arc<AuditKey>, n: usize) {
    let store = open(url, key).await;
    store.register_signing_key(&key.public_key()).await.unwrap();
    let customer = Customer {
        slug: CHAIN.parse().unwrap(),
        name: "Contoso Ltd".to_owned(),
        domain: "contoso.onmicrosoft.com".to_owned(),
        tenant_id: TenantId::new(Uuid::from_u128(0xC0)),
        policy: Policy::default(),
        created_at: Timestamp::now(),
        connection: None,
    };
    store
        .add_customer(&customer, &Actor::operator())
        .await
        .unwrap();
    let mut head: HeadRecord = store.head(CHAIN).await.unwrap().unwrap();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let sealer = Sealer::new(key.clone(), 1000);
    let chain: ChainId = CHAIN.parse().unwrap();
    let actor = Actor::Analyst {
        id: Uuid::from_u128(7),
        email: "night.shift@provider.example".to_owned(),
        auth: AuthMethod::ApiToken,
        client_ip: None,
    };
    let started = Instant::now();
    let mut action = Uuid::new_v4();
    let mut written = 0;
    while written < n {
        let batch = (n - written).min(2000);
        let mut entries = Vec::with_capacity(batch);
        let mut checkpoints = Vec::new();
        for i in written..written + batch {
            if i.is_multiple_of(2) {
                action = Uuid::new_v4();
            }
            let plan = sealer
                .plan(&chain, Some(&head), &actor, &event(i, action))
                .unwrap();
            let e = &plan.entry;
            entries.push(format!(
                "({},{},{},{},{},{})",
                quote(&e.chain),
                e.seq,
                quote(&e.time),
                quote(&e.event),
                quote(&e.entry),
                quote(&e.hash)
            ));
            if let Some(c) = &plan.checkpoint {
                checkpoints.push(format!(
                    "({},{},{},{},{},{})",
                    quote(&c.chain),
                    c.seq,
                    quote(&c.hash),
                    quote(&c.time),
                    quote(&c.key_id),
                    quote(&c.signature)
                ));
            }
            head = plan.head;
        }
        let mut sql = format!(
            "INSERT INTO audit_entries (chain, seq, time, event, entry, hash) VALUES {};",
            entries.join(",")
        );
        if !checkpoints.is_empty() {
            sql.push_str(&format!(
                "INSERT INTO audit_checkpoints (chain, seq, hash, time, key_id, signature) VALUES {};",
                checkpoints.join(",")
            ));
        }
        sql.push_str(&format!(
            "UPDATE audit_heads SET seq = {}, hash = {} WHERE chain = {};",
            head.seq,
            quote(&head.hash),
            quote(CHAIN)
        ));
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        written += batch;
    }
    println!(
        "  wrote {n} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Runs `killswitch args…`, sampling the child's peak resident memory (VmHWM) until it exits.
fn measure(data_dir: &Path, url: &str, args: &[&str]) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_killswitch"))
        .args(args)
        .env("KILLSWITCH_DATA_DIR", data_dir)
        .env("KILLSWITCH_DATABASE__URL", url)
        .env("KILLSWITCH_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
        {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(status.success(), "killswitch {args:?} failed: {status}");
    (started.elapsed(), peak_kb / 1024)
}

/// What the export and its verification are held against on this machine: the database
/// reading the entries by itself (one statement, no rows handed over), writing as many bytes
/// to a file in the same folder (without fsync, as the export), and reading the export with
/// one SHA-256 over all of its bytes on one core (every entry is hashed once).
async fn limits(data_dir: &Path, url: &str, export: &Path) {
    let size = std::fs::metadata(export).unwrap().len();
    let scan = format!(
        "SELECT CAST(sum(length(entry)) AS BIGINT) FROM audit_entries WHERE chain = '{CHAIN}'"
    );
    let started = Instant::now();
    let total: Option<i64> = if url.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(scan))
            .fetch_one(&mut db)
            .await
            .unwrap()
    } else {
        let mut db = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(scan))
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let read = started.elapsed();
    assert!(total.unwrap_or(0) > 0);

    let path = data_dir.join("limit.bin");
    let chunk = vec![b'x'; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..size.div_ceil(chunk.len() as u64) {
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    let written = started.elapsed();
    std::fs::remove_file(&path).unwrap();

    let started = Instant::now();
    let mut file = std::fs::File::open(export).unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer).unwrap();
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buffer[..n]);
    }
    let _ = sha2::Digest::finalize(hasher);
    let hashed = started.elapsed();
    println!(
        "  limits on this machine: the database reading the entries {:.2} s; writing {} MB to a file {:.2} s; reading the file with SHA-256 over it, one core {:.2} s",
        read.as_secs_f64(),
        size / 1_000_000,
        written.as_secs_f64(),
        hashed.as_secs_f64()
    );
}

async fn fresh_postgres(server: &str) -> String {
    let name = format!("ksb_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

async fn run(label: &str, data_dir: &Path, url: &str, n: usize) {
    let out = data_dir.join("contoso.jsonl");
    let out_arg = out.display().to_string();
    println!("{label}: {n} entries");
    let (time, peak) = measure(
        data_dir,
        url,
        &["audit", "export", "--customer", CHAIN, "--out", &out_arg],
    );
    let size = std::fs::metadata(&out).unwrap().len();
    println!(
        "  export jsonl: {:>6.2} s, peak {:>3} MB, {:.0} entries/s, file {} MB   (aim: <= 2 s, < 100 MB)",
        time.as_secs_f64(),
        peak,
        n as f64 / time.as_secs_f64(),
        size / 1_000_000
    );
    let key = data_dir.join("public.pem");
    let (time, peak) = measure(
        data_dir,
        url,
        &[
            "audit",
            "verify",
            &out_arg,
            "--public-key",
            &key.display().to_string(),
            "--customer",
            CHAIN,
        ],
    );
    println!(
        "  verify jsonl: {:>6.2} s, peak {:>3} MB, {:.0} entries/s                 (aim: <= 1 s, < 100 MB)",
        time.as_secs_f64(),
        peak,
        n as f64 / time.as_secs_f64()
    );
    limits(data_dir, url, &out).await;
    for format in ["csv", "ocsf", "html"] {
        let path = data_dir.join(format!("contoso.{format}"));
        let (time, peak) = measure(
            data_dir,
            url,
            &[
                "audit",
                "export",
                "--customer",
                CHAIN,
                "--format",
                format,
                "--out",
                &path.display().to_string(),
            ],
        );
        println!(
            "  export {format:5} {:>6.2} s, peak {:>3} MB, file {} MB",
            time.as_secs_f64(),
            peak,
            std::fs::metadata(&path).unwrap().len() / 1_000_000
        );
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_file(&out).unwrap();
}

#[tokio::main]
async fn main() {
    let n = env_usize("BENCH_EXPORT_ENTRIES", 1_000_000);
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("export-bench-{n}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let (key, _) = AuditKey::load_or_generate(&data_dir.join("audit-signing.key")).unwrap();
    let key = Arc::new(key);
    std::fs::write(
        data_dir.join("public.pem"),
        key.public_key().to_pem().unwrap(),
    )
    .unwrap();

    let sqlite = format!("sqlite://{}/killswitch.db", data_dir.display());
    let ready = {
        let store = open(&sqlite, &key).await;
        let head = store.head(CHAIN).await.unwrap();
        head.is_some_and(|h| h.seq as usize > n)
    };
    if !ready {
        for file in ["killswitch.db", "killswitch.db-wal", "killswitch.db-shm"] {
            let _ = std::fs::remove_file(data_dir.join(file));
        }
        println!("building the SQLite dataset (kept for later runs)");
        populate(&sqlite, &key, n).await;
    }
    run("sqlite", &data_dir, &sqlite, n).await;

    match std::env::var("BENCH_DATABASE_URL") {
        Ok(server) if !server.is_empty() => {
            let url = fresh_postgres(&server).await;
            println!("building the PostgreSQL dataset");
            populate(&url, &key, n).await;
            run("postgres", &data_dir, &url, n).await;
        }
        _ => println!("(set BENCH_DATABASE_URL=postgres://… to include PostgreSQL)"),
    }
}
