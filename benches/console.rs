//! The console's pages with a full database: 100,000 actions and 10,000 detections (1,000 of
//! them pending) across 50 customers.
//!
//! Measured: the time of a GET, from sending the request to having the whole page, with one
//! keep-alive client on loopback against the real service (the application router, a console
//! session cookie of a lead scoped to all customers), 200 requests per page after 20 of
//! warm-up, median and p95. The pages: the home page; an account page, whose live read of the
//! account goes to an in-process fake Entra (that read alone, made through the service's own
//! Graph client, is timed too, to show its share); the actions list's first page, a page
//! 90,000 rows deep (by its position), one customer's first page and one outcome's first page.
//! `GET /healthz` shows what loopback HTTP alone costs.
//!
//! The rows are written straight into the tables in a few large transactions, without their
//! audit entries: what is measured is reading them, not the audit chain. On PostgreSQL the
//! tables are analysed after the load, as autovacuum would soon do; SQLite is left without
//! statistics, as killswitch runs it.
//!
//! Run: `cargo bench --bench console` (SQLite); add `BENCH_DATABASE_URL=postgres://…` for
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_entra::{AppCredential, FakeEntra, Tenant, User};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use killswitch::app::{Application, Services};
use killswitch::audit::event::{Actor, AuthMethod};
use killswitch::auth::{Role, Scope, tokens};
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::cursor::ListCursor;
use killswitch::domain::{AccountRef, TenantId};
use killswitch::store::{SessionRecord, Store};
use killswitch::time::Timestamp;
use sqlx::Connection;
use uuid::Uuid;

const CLIENT_ID: &str = "5d1f2c6e-8a47-4b36-9a0e-6c1f0b2d7e41";
const SECRET: &str = "bench-secret";
const CUSTOMERS: u128 = 50;
const ACCOUNTS_PER_CUSTOMER: u128 = 200;
const ACTIONS: u128 = 100_000;
const DETECTIONS: u128 = 10_000;
/// Rows per INSERT statement, and statements per transaction.
const ROWS_PER_INSERT: u128 = 500;
const INSERTS_PER_TRANSACTION: u128 = 40;
const WARM_UP: usize = 20;
const SAMPLES: usize = 200;

fn tenant_id(c: u128) -> Uuid {
    Uuid::from_u128(0xBE00_0000 + c)
}

/// Object ids are unique across tenants, as Entra's are.
fn user_id(c: u128, u: u128) -> Uuid {
    Uuid::from_u128(0x5E00_0000 + c * 1000 + u)
}

fn slug(c: u128) -> String {
    format!("customer-{c}")
}

fn upn(c: u128, u: u128) -> String {
    format!("user{u}@customer-{c}.onmicrosoft.com")
}

/// Actions are numbered newest first, two to a time (so pages meet equal times), one every
/// 86 s on average: 100 days of a busy provider.
fn action_time(start: Timestamp, n: u128) -> Timestamp {
    let back = chrono::Duration::seconds(i64::try_from(n / 2 * 173).unwrap());
    Timestamp::from_datetime(start.as_datetime() - back)
}

fn action_id(n: u128) -> Uuid {
    Uuid::from_u128(0xAC7_0000_0000 + n)
}

fn action_row(start: Timestamp, n: u128) -> String {
    let (c, u) = (n % CUSTOMERS, (n / CUSTOMERS) % ACCOUNTS_PER_CUSTOMER);
    // Outcomes and operations vary within every customer and account.
    let state = match (n / 7) % 20 {
        _ if n < 3 => "requested",
        0 => "failed",
        1 => "denied",
        2 => "noop",
        _ => "succeeded",
    };
    let operation = if (n / 3) % 10 == 9 {
        "enable"
    } else {
        "disable"
    };
    let time = action_time(start, n);
    format!(
        "('{}', '{}', '{operation}', '{}', '{}', '{state}', 'phished', FALSE, 'h', \
         '{{\"type\":\"service\"}}', 1, 2, '{time}', '{time}', '{time}', 120)",
        action_id(n),
        slug(c),
        upn(c, u),
        user_id(c, u),
    )
}

fn detection_row(start: Timestamp, n: u128) -> String {
    let (c, u) = (n % CUSTOMERS, (n / CUSTOMERS) % ACCOUNTS_PER_CUSTOMER);
    // A tenth of every customer's detections wait.
    let state = match (n / CUSTOMERS) % 10 {
        0 => "pending",
        1..=3 => "approved",
        _ => "dismissed",
    };
    let back = chrono::Duration::seconds(i64::try_from(n * 800).unwrap());
    let time = Timestamp::from_datetime(start.as_datetime() - back);
    format!(
        "('{}', '{}', 'det-{n}', 'high', 'signed', '{state}', '{}', '{}', 'waiting for an analyst', '{time}')",
        Uuid::from_u128(0xDE7_0000_0000 + n),
        slug(c),
        upn(c, u),
        upn(c, u),
    )
}

/// Writes `count` rows of `row` into `table` (`columns`), in large statements and few
/// transactions.
async fn bulk_insert(
    raw: &mut sqlx::AnyConnection,
    table: &str,
    columns: &str,
    count: u128,
    row: impl Fn(u128) -> String,
) {
    let per_transaction = ROWS_PER_INSERT * INSERTS_PER_TRANSACTION;
    for first in (0..count).step_by(usize::try_from(per_transaction).unwrap()) {
        let mut tx = raw.begin().await.unwrap();
        let last = (first + per_transaction).min(count);
        for chunk in (first..last).step_by(usize::try_from(ROWS_PER_INSERT).unwrap()) {
            let rows: Vec<String> = (chunk..(chunk + ROWS_PER_INSERT).min(last))
                .map(&row)
                .collect();
            let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", rows.join(", "));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

async fn seed(url: &str, store: &Arc<dyn Store>, start: Timestamp) {
    for c in 0..CUSTOMERS {
        let customer = Customer {
            slug: slug(c).parse().unwrap(),
            name: format!("Customer {c}"),
            domain: format!("customer-{c}.onmicrosoft.com"),
            tenant_id: TenantId::new(tenant_id(c)),
            policy: Policy::default(),
            created_at: Timestamp::now(),
            connection: None,
        };
        store
            .add_customer(&customer, &Actor::Service)
            .await
            .unwrap();
    }
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(url).await.unwrap();
    let loading = Instant::now();
    bulk_insert(
        &mut raw,
        "actions",
        "id, customer, operation, account, target_id, state, reason, revoke_sessions, request_hash, \
         actor, requested_seq, outcome_seq, created_at, lease_until, finished_at, duration_ms",
        ACTIONS,
        |n| action_row(start, n),
    )
    .await;
    bulk_insert(
        &mut raw,
        "detections",
        "id, customer, composite_id, severity, assurance, state, account_upn, target_upn, \
         pending_reason, received_at",
        DETECTIONS,
        |n| detection_row(start, n),
    )
    .await;
    if url.starts_with("postgres") {
        sqlx::query("ANALYZE").execute(&mut raw).await.unwrap();
    }
    println!(
        "  loaded {ACTIONS} actions and {DETECTIONS} detections in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
}

async fn fake_entra() -> FakeEntra {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT_ID, AppCredential::Secret(SECRET.to_owned()));
    for c in 0..CUSTOMERS {
        fake.add_tenant(Tenant {
            id: tenant_id(c),
            domain: format!("customer-{c}.onmicrosoft.com"),
            consented: true,
            granted_roles: fake_entra::DEFAULT_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
        });
        for u in 0..5 {
            fake.add_user(
                tenant_id(c),
                User {
                    id: user_id(c, u),
                    user_principal_name: upn(c, u),
                    display_name: format!("User {u}"),
                    account_enabled: true,
                    on_premises_sync_enabled: None,
                    on_premises_security_identifier: None,
                    privileged: false,
                },
            );
        }
    }
    fake
}

fn settings(dir: &std::path::Path, url: &str, fake: &FakeEntra) -> Settings {
    let base = fake.base_url();
    let figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Serialized::default("data_dir", dir.display().to_string()))
        .merge(Serialized::default("database.url", url))
        .merge(Serialized::default("server.listen", "127.0.0.1:0"))
        .merge(Serialized::default("entra.authority_url", base.as_str()))
        .merge(Serialized::default("entra.graph_url", base.as_str()))
        .merge(Serialized::default("entra.client_id", CLIENT_ID))
        .merge(Serialized::default("entra.client_secret", SECRET));
    Settings::from_figment(&figment).unwrap()
}

/// A console session for a lead over every customer, as a sign-in writes it; the cookie.
async fn session_cookie(services: &Services) -> String {
    let enrolled = services
        .auth
        .enroll(
            "bench@provider.example",
            None,
            Role::Lead,
            Scope::All,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let id = Uuid::new_v4().simple().to_string();
    let now = Timestamp::now();
    let session = SessionRecord {
        id_hash: tokens::hash(&id),
        analyst_id: enrolled.analyst.id.to_string(),
        csrf_token: Uuid::new_v4().simple().to_string(),
        created_at: now.to_string(),
        expires_at: now.after(Duration::from_secs(3600)).to_string(),
        auth_method: SessionRecord::method_text(AuthMethod::ApiToken).to_owned(),
    };
    services.store.create_session(&session).await.unwrap();
    format!("ks_session={id}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and p95 of `SAMPLES` runs of `once`, after `WARM_UP` unmeasured ones.
async fn measure<F, Fut>(once: F) -> (Duration, Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..WARM_UP {
        once().await;
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        once().await;
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    (samples[SAMPLES / 2], samples[SAMPLES * 95 / 100])
}

async fn page(client: &reqwest::Client, base: &str, cookie: &str, path: &str) -> String {
    let answer = client
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK, "{path}");
    answer.text().await.unwrap()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, url) = match std::env::var("BENCH_DATABASE_URL") {
        Ok(server) if !server.is_empty() => {
            let db = format!("ks_bench_console_{}", Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut admin)
                .await
                .unwrap();
            let mut url = url::Url::parse(&server).unwrap();
            url.set_path(&db);
            ("postgres", url.to_string())
        }
        _ => (
            "sqlite",
            format!("sqlite://{}/console.db", dir.path().display()),
        ),
    };
    println!(
        "console pages, {backend}, {ACTIONS} actions and {DETECTIONS} detections, {CUSTOMERS} customers"
    );
    let fake = fake_entra().await;
    let settings = settings(dir.path(), &url, &fake);
    let services = Services::open(&settings).await.unwrap();
    let start = Timestamp::now();
    seed(&url, &services.store, start).await;
    let cookie = session_cookie(&services).await;
    let remediator = services.remediator.clone().unwrap();
    let app = Application::with_services(settings, services)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let deep = ListCursor::new(action_time(start, 90_000), action_id(90_000));
    let account = upn(7, 3);
    let pages = [
        ("home /", "/".to_owned()),
        (
            "account page",
            format!("/customers/{}/accounts/{account}", slug(7)),
        ),
        ("actions, first page", "/actions".to_owned()),
        (
            "actions, 90,000 rows deep",
            format!("/actions?before={deep}"),
        ),
        (
            "actions, one customer",
            format!("/actions?customer={}", slug(7)),
        ),
        ("actions, failed only", "/actions?state=failed".to_owned()),
    ];
    let html = page(&client, &base, &cookie, &pages[0].1).await;
    assert!(
        html.contains("20 pending detections"),
        "every card counts 20"
    );
    let reference: AccountRef = account.parse().unwrap();
    let graph_read = measure(|| async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        remediator
            .graph()
            .get_user(TenantId::new(tenant_id(7)), &reference, deadline)
            .await
            .unwrap();
    })
    .await;
    for (name, path) in &pages {
        let (median, p95) = measure(|| async {
            page(&client, &base, &cookie, path).await;
        })
        .await;
        println!(
            "  {name:<30} median {:6.2} ms  p95 {:6.2} ms  (aim: median ≤ 10 ms)",
            ms(median),
            ms(p95)
        );
        if path.contains("/accounts/") {
            println!(
                "    of which its Graph read    median {:6.2} ms  p95 {:6.2} ms  (the same read alone)",
                ms(graph_read.0),
                ms(graph_read.1)
            );
        }
    }
    let (median, p95) = measure(|| async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    })
    .await;
    println!(
        "  GET /healthz (loopback HTTP)   median {:6.2} ms  p95 {:6.2} ms",
        ms(median),
        ms(p95)
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
