//! Cost as work grows: the disable path and the Falcon webhook path with 1 k, 100 k and 1 M
//! audit entries, actions and detections already in the database. The figures must stay flat:
//! the hot path reads and writes through indexes, never a scan of a table that grows.
//!
//! Per size:
//! - own time per disable at zero Graph latency: the median of a whole action (through the
//!   `Remediator`, as `benches/remediation.rs` (a)) minus the median of the same three Graph
//!   calls made directly;
//! - verified webhooks per second, 50 in flight, no account look-up, over HTTP on loopback (as
//!   `benches/falcon.rs` (a)): the median of three bursts.
//!
//! The rows are seeded straight into the database in the store's format, in large
//! transactions, while the service is stopped, and the service started again on the same
//! database for each size (1 k, then 99 k more, then 900 k more): finished actions (succeeded,
//! created more than two hours ago, so outside the hourly limit's window) spread over the bench
//! customer and 20 others; finished detections likewise; and audit entries, half of them sealed
//! on top of the bench customer's chain (its actions' requested and outcome entries), half in a
//! separate chain. The chains stay valid: `audit check` verifies both at the end. The
//! engine's clock moves two hours on for each size, so the hourly limit's count (of the
//! customer's actions in the last hour) sees only that size's own few hundred actions, the
//! same at every size, not every earlier size's as well.
//!
//! Each size prints the rows then in the database (the setup, warm-ups and earlier sizes add a
//! few thousand to the seeded ones), the seed's time, and the one-minute load average (about 2
//! from the bench itself): the figures compare only on a machine doing nothing else.
//!
//! Run: `cargo bench --bench growth` (SQLite, durable commits, as the service runs); add
//! `BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test` for PostgreSQL (a fresh
//! database `ks_bench_growth_<uuid>` per run, dropped at the end; after each seed it gets the
//! `VACUUM ANALYZE` autovacuum would otherwise run in the middle of a measurement, and a
//! `CHECKPOINT`, as SQLite's WAL is checkpointed).
//! Knobs: `BENCH_GROWTH_SIZES` (default `1000,100000,1000000`, ascending),
//! `BENCH_GROWTH_ACTIONS` (disables per size, default 300), `BENCH_GROWTH_WEBHOOKS` (per
//! burst, three bursts per size, default 1000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_entra::{AppCredential, FakeEntra, Tenant, User};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use futures::StreamExt;
use killswitch::app::{Application, Services};
use killswitch::audit::AuditKey;
use killswitch::audit::append::{AppendPlan, Sealer};
use killswitch::audit::event::{Actor, AuditEvent, AuthMethod, Operation, Outcome};
use killswitch::audit::records::HeadRecord;
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::customers::onboarding::{Onboarding, SecretIssue};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::action::{ActionRecord, ActionState};
use killswitch::domain::detection::{DetectionFilter, DetectionRecord, DetectionState};
use killswitch::domain::{ChainId, TenantId};
use killswitch::graph::{ClientCredential, GraphClient, GraphSettings};
use killswitch::remediation::{ActionRequest, RemediationSettings, Remediator};
use killswitch::reports::check;
use killswitch::store::Store;
use killswitch::store::audit_sql::{ENSURE_HEAD, SELECT_HEAD, write_plans};
use killswitch::time::{ManualClock, Timestamp};
use secrecy::ExposeSecret;
use sqlx::{Connection, Database, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

const CLIENT_ID: &str = "5d1f2c6e-8a47-4b36-9a0e-6c1f0b2d7e41";
const SECRET: &str = "bench-secret";
const TENANT: Uuid = Uuid::from_u128(0xBE);
const BENCH_CUSTOMER: &str = "contoso";
const DOMAIN: &str = "contoso.onmicrosoft.com";
const USERS: u64 = 50;
const OTHER_CUSTOMERS: u64 = 20;
/// The chain that holds the half of the seeded entries not in the bench customer's chain.
const HISTORY_CHAIN: &str = "seed-history";
/// Seeded rows per transaction.
const ROWS_PER_TX: u64 = 10_000;
/// Parameters per multi-row INSERT: binding costs sqlx's SQLite driver time quadratic in the
/// statement's parameters (each bind looks its name up in a list), so keep statements small.
const PARAMS_PER_INSERT: usize = 250;
const IN_FLIGHT: usize = 50;

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Vec<u64> {
    let text = std::env::var("BENCH_GROWTH_SIZES").unwrap_or_else(|_| "1000,100000,1000000".into());
    let sizes: Vec<u64> = text.split(',').map(|s| s.trim().parse().unwrap()).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] < w[1]),
        "BENCH_GROWTH_SIZES must ascend"
    );
    sizes
}

fn other_customer(n: u64) -> String {
    format!("other-{:02}", n % OTHER_CUSTOMERS)
}

/// Where the run's data lives: a SQLite file, or a fresh PostgreSQL database dropped at the end.
struct Db {
    url: String,
    postgres: Option<(String, String)>,
}

impl Db {
    async fn fresh(dir: &std::path::Path) -> Db {
        let Some(server) = std::env::var("BENCH_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
        else {
            return Db {
                url: format!("sqlite://{}/killswitch.db", dir.display()),
                postgres: None,
            };
        };
        let name = format!("ks_bench_growth_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        Db {
            url: url.to_string(),
            postgres: Some((server, name)),
        }
    }

    fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    async fn drop_database(&self) {
        if let Some((server, name)) = &self.postgres {
            let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        }
    }
}

async fn fake() -> FakeEntra {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT_ID, AppCredential::Secret(SECRET.to_owned()));
    fake.add_tenant(Tenant {
        id: TENANT,
        domain: DOMAIN.into(),
        consented: true,
        granted_roles: fake_entra::DEFAULT_ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
    });
    for u in 0..USERS {
        fake.add_user(
            TENANT,
            User {
                id: user_id(u),
                user_principal_name: format!("user{u}@{DOMAIN}"),
                display_name: format!("User {u}"),
                account_enabled: true,
                on_premises_sync_enabled: None,
                on_premises_security_identifier: None,
                privileged: false,
            },
        );
    }
    fake
}

fn user_id(n: u64) -> Uuid {
    Uuid::from_u128(0x5E00_0000 + u128::from(n))
}

/// The service's settings on `db`; Entra is not configured, so webhooks are not looked up (the
/// bench drives disables through its own `Remediator` on the service's store).
fn settings(dir: &std::path::Path, db: &Db) -> Settings {
    let figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Serialized::default("data_dir", dir.display().to_string()))
        .merge(Serialized::default("database.url", db.url.clone()))
        .merge(Serialized::default("server.listen", "127.0.0.1:0"))
        .merge(Serialized::default("log.level", "warn"));
    Settings::from_figment(&figment).unwrap()
}

/// The service, running, and the handles the bench drives it with.
struct Running {
    base: String,
    store: Arc<dyn Store>,
    key: Arc<AuditKey>,
    onboarding: Arc<Onboarding>,
    remediator: Arc<Remediator>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<killswitch::Result<()>>,
}

impl Running {
    async fn start(settings: Settings, fake: &FakeEntra, clock: &ManualClock) -> Running {
        let services = Services::open(&settings).await.unwrap();
        let (store, key) = (services.store.clone(), services.audit_key.clone());
        let onboarding = services.onboarding.clone();
        let remediator = Arc::new(
            Remediator::new(
                store.clone(),
                Arc::new(graph(fake)),
                RemediationSettings::default(),
            )
            .with_clock(Arc::new(clock.clone())),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        remediator
            .graph()
            .token(TenantId::new(TENANT), deadline)
            .await
            .unwrap();
        let application = Application::with_services(settings, services)
            .await
            .unwrap();
        let base = format!("http://{}", application.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        Running {
            base,
            store,
            key,
            onboarding,
            remediator,
            stop,
            task,
        }
    }

    /// Stops the service the way SIGTERM does; every handle on its store goes with it.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn graph(fake: &FakeEntra) -> GraphClient {
    let base = url::Url::parse(&fake.base_url()).unwrap();
    GraphClient::new(GraphSettings {
        authority_url: base.clone(),
        graph_url: base,
        client_id: CLIENT_ID.to_owned(),
        credential: ClientCredential::Secret(SECRET.to_owned().into()),
        request_timeout: Duration::from_secs(10),
        max_in_flight_per_tenant: 8,
        max_in_flight: 512,
    })
    .unwrap()
}

/// The bench customer (with its webhook secret, returned) and the others seeded actions go to.
async fn add_customers(running: &Running) -> String {
    let customer = |slug: String, n: u128| Customer {
        domain: format!("{slug}.onmicrosoft.com"),
        name: slug.clone(),
        slug: slug.parse().unwrap(),
        tenant_id: TenantId::new(Uuid::from_u128(TENANT.as_u128() + n)),
        policy: Policy {
            max_actions_per_hour: 1_000_000,
            ..Policy::default()
        },
        created_at: Timestamp::now(),
        connection: None,
    };
    let mut others: Vec<Customer> = (0..OTHER_CUSTOMERS)
        .map(|n| customer(other_customer(n), u128::from(n) + 1))
        .collect();
    let bench = customer(BENCH_CUSTOMER.to_owned(), 0);
    others.push(bench.clone());
    for c in &others {
        running
            .store
            .add_customer(c, &Actor::Service)
            .await
            .unwrap();
    }
    let secret = running
        .onboarding
        .issue_webhook_secret(&bench, SecretIssue::First, &Actor::Service)
        .await
        .unwrap();
    secret.secret.expose_secret().to_owned()
}

fn request(user: u64, operation: Operation) -> ActionRequest {
    ActionRequest {
        customer: BENCH_CUSTOMER.parse().unwrap(),
        operation,
        account: format!("user{user}@{DOMAIN}").parse().unwrap(),
        reason: "benchmark".parse().unwrap(),
        ticket: None,
        revoke_sessions: None,
        idempotency_key: None,
        actor: Actor::Analyst {
            id: Uuid::nil(),
            email: "bench@provider.example".into(),
            auth: AuthMethod::ApiToken,
            client_ip: None,
        },
        mfa: None,
        context: None,
    }
}

/// Disables and enables against the fake, each followed by the same three Graph calls sent
/// directly; `round` carries on across sizes so every action changes the account.
struct Disables {
    http: reqwest::Client,
    base: String,
    bearer: String,
    round: u64,
}

impl Disables {
    async fn new(fake: &FakeEntra) -> Disables {
        let http = reqwest::Client::new();
        let base = fake.base_url();
        let bearer = token(&http, &base).await;
        Disables {
            http,
            base,
            bearer,
            round: 0,
        }
    }

    /// Runs `rounds` actions; returns the medians of the whole action and of the bare calls,
    /// and the last action's record.
    async fn run(
        &mut self,
        fake: &FakeEntra,
        remediator: &Remediator,
        rounds: u64,
    ) -> (Duration, Duration, ActionRecord) {
        let (mut whole, mut bare, mut last) = (Vec::new(), Vec::new(), None);
        for _ in 0..rounds {
            let user = self.round % USERS;
            let enable = !(self.round / USERS).is_multiple_of(2);
            let operation = if enable {
                Operation::Enable
            } else {
                Operation::Disable
            };
            self.round += 1;
            let started = Instant::now();
            let done = remediator.execute(request(user, operation)).await.unwrap();
            whole.push(started.elapsed());
            assert_eq!(done.record().state, ActionState::Succeeded);
            let started = Instant::now();
            bare_graph_action(&self.http, &self.base, &self.bearer, user_id(user), enable).await;
            bare.push(started.elapsed());
            fake.set_account_enabled(TENANT, &user_id(user).to_string(), enable);
            last = Some(done.record().clone());
        }
        (median(whole), median(bare), last.unwrap())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The same three Graph calls an action makes (read, PATCH, read), with one client and a token.
async fn bare_graph_action(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    user: Uuid,
    enabled: bool,
) {
    let url = format!("{base}/v1.0/users/{user}");
    let read = format!("{url}?$select={}", killswitch::graph::USER_SELECT);
    let patch = http
        .patch(&url)
        .json(&serde_json::json!({ "accountEnabled": enabled }));
    for call in [http.get(&read), patch, http.get(&read)] {
        call.bearer_auth(token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
}

async fn token(http: &reqwest::Client, base: &str) -> String {
    let response: serde_json::Value = http
        .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().unwrap().to_owned()
}

async fn deliver(http: &reqwest::Client, base: &str, secret: &str, n: u64) -> reqwest::StatusCode {
    let body = serde_json::to_vec(&serde_json::json!({
        "composite_id": format!("bench:{n}:{}", Uuid::new_v4()),
        "severity": "medium",
        "source_account_upn": format!("user{}@{DOMAIN}", n % USERS),
    }))
    .unwrap();
    let url = format!("{base}/api/v1/webhooks/falcon/{BENCH_CUSTOMER}");
    common::signed_webhook(http, &url, secret, body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Delivers `total` signed webhooks, `IN_FLIGHT` at a time; returns webhooks/s. One client for
/// the whole run, so connections are reused and the server's limit of connections per client
/// never counts closing ones.
async fn webhooks(http: &reqwest::Client, base: &str, secret: &str, total: u64) -> f64 {
    let started = Instant::now();
    let accepted = futures::stream::iter(0..total)
        .map(|n| {
            let http = http.clone();
            async move { deliver(&http, base, secret, n).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|status| std::future::ready(*status == reqwest::StatusCode::ACCEPTED))
        .count()
        .await;
    assert_eq!(accepted as u64, total);
    total as f64 / started.elapsed().as_secs_f64()
}

/// Real rows the seeded ones are copied from, so they are in the store's own format.
struct Templates {
    action: ActionRecord,
    detection: DetectionRecord,
    key: Arc<AuditKey>,
    checkpoint_every: u64,
    /// Seeded rows are dated back from here, 30 s apart.
    newest: chrono::DateTime<chrono::Utc>,
}

impl Templates {
    fn when(&self, n: u64) -> Timestamp {
        let age = chrono::Duration::seconds(i64::try_from(n).unwrap() * 30);
        Timestamp::from_datetime(self.newest - age)
    }

    /// Seeded action `n`: finished, succeeded, on the bench customer for every fourth.
    fn action(&self, n: u64) -> ActionRecord {
        let customer = if n.is_multiple_of(4) {
            BENCH_CUSTOMER.to_owned()
        } else {
            other_customer(n)
        };
        let t = &self.action;
        let created = self.when(n);
        let lease = t.lease_until.as_datetime() - t.created_at.as_datetime();
        let finished = t.finished_at.unwrap().as_datetime() - t.created_at.as_datetime();
        let account = format!("hist{n}@{customer}.onmicrosoft.com");
        let target = Uuid::new_v4().to_string();
        let state = |s: &killswitch::audit::event::AccountState, enabled| {
            let mut s = s.clone();
            s.id.clone_from(&target);
            s.user_principal_name.clone_from(&account);
            s.account_enabled = Some(enabled);
            s
        };
        ActionRecord {
            id: Uuid::new_v4(),
            customer: customer.parse().unwrap(),
            operation: Operation::Disable,
            before: t.before.as_ref().map(|s| state(s, true)),
            after: t.after.as_ref().map(|s| state(s, false)),
            target_id: Some(target.clone()),
            account,
            // Half carry an idempotency key, as API clients that retry send one.
            idempotency_key: n.is_multiple_of(2).then(|| format!("seed-{n}")),
            // Replaced by the seqs of its sealed entries for the half whose entries are seeded;
            // the other customers' own chains are not.
            requested_seq: 2 * n + 1,
            outcome_seq: Some(2 * n + 2),
            lease_until: Timestamp::from_datetime(created.as_datetime() + lease),
            finished_at: Some(Timestamp::from_datetime(created.as_datetime() + finished)),
            created_at: created,
            ..t.clone()
        }
    }

    /// The detection behind seeded action `a`: approved with it, or (every other one) dismissed.
    fn detection(&self, n: u64, a: &ActionRecord) -> DetectionRecord {
        let received = self.when(n);
        let approved = n.is_multiple_of(2);
        DetectionRecord {
            id: Uuid::new_v4(),
            customer: a.customer.clone(),
            composite_id: format!("seed:{n}:{}", Uuid::new_v4()),
            account_upn: Some(a.account.clone()),
            target_upn: Some(a.account.clone()),
            target_id: a.target_id.clone(),
            state: if approved {
                DetectionState::Approved
            } else {
                DetectionState::Dismissed
            },
            pending_reason: None,
            action_id: approved.then_some(a.id),
            decided_by: Some(serde_json::to_string(&a.actor).unwrap()),
            decided_at: Some(Timestamp::from_datetime(
                received.as_datetime() + chrono::Duration::minutes(5),
            )),
            decision_reason: (!approved).then(|| "benign: known admin tooling".to_owned()),
            received_at: received,
            ..self.detection.clone()
        }
    }
}

/// The action's two audit events, as the engine writes them.
fn action_events(a: &ActionRecord) -> [AuditEvent; 2] {
    [
        AuditEvent::ActionRequested {
            action_id: a.id,
            operation: a.operation,
            account: a.account.clone(),
            reason: a.reason.clone(),
            ticket: a.ticket.clone(),
            revoke_sessions: a.revoke_sessions,
            mfa: None,
            request: None,
        },
        AuditEvent::ActionOutcome {
            action_id: a.id,
            outcome: Outcome::Succeeded,
            detail: a.detail.clone(),
            warnings: a.warnings.clone(),
            before: a.before.clone(),
            after: a.after.clone(),
            graph: a.graph.clone(),
            duration_ms: a.duration_ms.unwrap_or_default(),
        },
    ]
}

/// One column value of a seeded row.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(Some(s.into()))
}

fn json_text<T: serde::Serialize>(v: Option<&T>) -> Value {
    Value::Text(v.map(|v| serde_json::to_string(v).unwrap()))
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap()
}

const ACTION_COLUMNS: &str = "id, customer, operation, account, target_id, state, reason, ticket, revoke_sessions, \
     idempotency_key, request_hash, actor, detail, warnings, graph, before_state, after_state, requested_seq, \
     outcome_seq, created_at, lease_until, finished_at, duration_ms, denial, owner_run";

/// An action as the store writes it (see `store::action_rows`), by a run long gone.
fn action_row(a: &ActionRecord, owner_run: Uuid) -> Vec<Value> {
    vec![
        text(a.id.to_string()),
        text(a.customer.to_string()),
        text(a.operation.as_str()),
        text(a.account.clone()),
        Value::Text(a.target_id.clone()),
        text(a.state.as_str()),
        text(a.reason.clone()),
        Value::Text(a.ticket.clone()),
        Value::Bool(a.revoke_sessions),
        Value::Text(a.idempotency_key.clone()),
        text(a.request_hash.clone()),
        json_text(Some(&a.actor)),
        Value::Text(a.detail.clone()),
        json_text((!a.warnings.is_empty()).then_some(&a.warnings)),
        json_text(a.graph.as_ref()),
        json_text(a.before.as_ref()),
        json_text(a.after.as_ref()),
        Value::Int(Some(int(a.requested_seq))),
        Value::Int(a.outcome_seq.map(int)),
        text(a.created_at.to_string()),
        text(a.lease_until.to_string()),
        Value::Text(a.finished_at.map(|t| t.to_string())),
        Value::Int(a.duration_ms.map(int)),
        Value::Text(None),
        text(owner_run.to_string()),
    ]
}

/// A detection as the store writes it (see `store::detection_rows`).
fn detection_row(d: &DetectionRecord) -> Vec<Value> {
    vec![
        text(d.id.to_string()),
        text(d.customer.to_string()),
        text(d.composite_id.clone()),
        Value::Text(d.detection_id.clone()),
        text(d.severity.as_str()),
        Value::Text(d.tactic.clone()),
        Value::Text(d.technique.clone()),
        Value::Text(d.account_upn.clone()),
        Value::Text(d.account_sid.clone()),
        Value::Text(d.account_domain.clone()),
        Value::Text(d.falcon_host_link.clone()),
        Value::Text(d.cid.clone()),
        Value::Text(d.falcon_time.clone()),
        text(d.assurance.as_str()),
        text(d.state.as_str()),
        Value::Text(d.target_id.clone()),
        Value::Text(d.target_upn.clone()),
        Value::Text(d.pending_reason.clone()),
        Value::Text(d.action_id.map(|id| id.to_string())),
        Value::Text(d.decided_by.clone()),
        Value::Text(d.decided_at.map(|t| t.to_string())),
        Value::Text(d.decision_reason.clone()),
        text(d.received_at.to_string()),
        Value::Text(d.received_run.map(|r| r.to_string())),
    ]
}

/// `INSERT INTO table (columns) VALUES (…), (…)`, a few rows a statement.
async fn insert_rows<DB>(conn: &mut DB::Connection, table: &str, columns: &str, rows: &[Vec<Value>])
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
{
    let width = rows.first().map_or(1, Vec::len);
    for chunk in rows.chunks(PARAMS_PER_INSERT / width) {
        let groups: Vec<String> = (0..chunk.len())
            .map(|r| {
                let params: Vec<String> =
                    (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES {}",
            groups.join(", ")
        );
        let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
        for value in chunk.iter().flatten() {
            query = match value {
                Value::Text(v) => query.bind(v.as_deref()),
                Value::Int(v) => query.bind(*v),
                Value::Bool(v) => query.bind(*v),
            };
        }
        query.execute(&mut *conn).await.unwrap();
    }
}

/// The heads the seeded entries are sealed on, carried from one transaction to the next.
struct Heads {
    bench: Option<HeadRecord>,
    history: Option<HeadRecord>,
}

/// Seals `events` on `chain` after `head`, advancing it; the notices of seeded entries are left
/// out (their messages would have gone out long ago).
fn seal(
    templates: &Templates,
    chain: &ChainId,
    head: &mut Option<HeadRecord>,
    actor: &Actor,
    events: &[AuditEvent],
    plans: &mut Vec<AppendPlan>,
) -> (u64, u64) {
    let sealer = Sealer::new(templates.key.clone(), templates.checkpoint_every);
    let mut seqs = Vec::new();
    for event in events {
        let mut plan = sealer.plan(chain, head.as_ref(), actor, event).unwrap();
        plan.notice = None;
        seqs.push(u64::try_from(plan.entry.seq).unwrap());
        *head = Some(plan.head.clone());
        plans.push(plan);
    }
    (seqs[0], seqs[seqs.len() - 1])
}

/// Seeds rows `from..to` in transactions of `ROWS_PER_TX`: per row an action, a detection, and
/// on average one audit entry (every fourth action's two entries in the bench customer's
/// chain, another fourth's in the history chain).
async fn seed_rows<DB>(conn: &mut DB::Connection, templates: &Templates, from: u64, to: u64)
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'r> HeadRecord: FromRow<'r, DB::Row>,
{
    let (bench, history): (ChainId, ChainId) = (
        BENCH_CUSTOMER.parse().unwrap(),
        HISTORY_CHAIN.parse().unwrap(),
    );
    let mut heads = Heads {
        bench: read_head::<DB>(conn, &bench).await,
        history: read_head::<DB>(conn, &history).await,
    };
    let owner_run = Uuid::new_v4();
    let mut start = from;
    while start < to {
        let end = (start + ROWS_PER_TX).min(to);
        let (mut plans, mut actions, mut detections) = (Vec::new(), Vec::new(), Vec::new());
        for n in start..end {
            let mut a = templates.action(n);
            let chain = match n % 4 {
                0 => Some((&bench, &mut heads.bench)),
                2 => Some((&history, &mut heads.history)),
                _ => None,
            };
            if let Some((chain, head)) = chain {
                let events = action_events(&a);
                let (requested, outcome) =
                    seal(templates, chain, head, &a.actor, &events, &mut plans);
                (a.requested_seq, a.outcome_seq) = (requested, Some(outcome));
            }
            detections.push(detection_row(&templates.detection(n, &a)));
            actions.push(action_row(&a, owner_run));
        }
        let mut tx = conn.begin().await.unwrap();
        write_plans::<DB>(&mut *tx, &plans).await.unwrap();
        insert_rows::<DB>(&mut *tx, "actions", ACTION_COLUMNS, &actions).await;
        let columns = killswitch::store::DETECTION_COLUMNS;
        insert_rows::<DB>(&mut *tx, "detections", columns, &detections).await;
        tx.commit().await.unwrap();
        start = end;
    }
}

async fn read_head<DB>(conn: &mut DB::Connection, chain: &ChainId) -> Option<HeadRecord>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> HeadRecord: FromRow<'r, DB::Row>,
{
    sqlx::query::<DB>(ENSURE_HEAD)
        .bind(chain.as_str())
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_as::<DB, HeadRecord>(SELECT_HEAD)
        .bind(chain.as_str())
        .fetch_optional(&mut *conn)
        .await
        .unwrap()
}

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM actions), (SELECT COUNT(*) FROM audit_entries), \
     (SELECT COUNT(*) FROM detections)";

/// Rows in the database after a seed: actions, audit entries, detections; and its size in MB.
struct Contents {
    rows: (i64, i64, i64),
    megabytes: f64,
}

/// Seeds rows `from..to` behind the stopped service's back, then leaves the database as a
/// running service would find it after a quiet while (SQLite: WAL checkpointed; PostgreSQL:
/// vacuumed, analysed and checkpointed).
async fn seed(db: &Db, templates: &Templates, from: u64, to: u64) -> Contents {
    if db.postgres.is_some() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        seed_rows::<sqlx::Postgres>(&mut conn, templates, from, to).await;
        // Autovacuum would run these in the middle of a measurement, and the checkpointer would
        // be writing the seed out beside it; SQLite's WAL is checkpointed below alike.
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql("CHECKPOINT")
            .execute(&mut conn)
            .await
            .unwrap();
        let rows = sqlx::query_as(COUNTS).fetch_one(&mut conn).await.unwrap();
        let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        Contents {
            rows,
            megabytes: bytes as f64 / 1e6,
        }
    } else {
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            // A seed touches index pages all over a large file; the default 2 MB cache thrashes.
            .pragma("cache_size", "-262144");
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        seed_rows::<sqlx::Sqlite>(&mut conn, templates, from, to).await;
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        let rows = sqlx::query_as(COUNTS).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let file = options.get_filename().to_owned();
        Contents {
            rows,
            megabytes: std::fs::metadata(file).unwrap().len() as f64 / 1e6,
        }
    }
}

/// What one size measured.
struct Figures {
    size: u64,
    contents: Contents,
    seeding: Duration,
    action: Duration,
    bare: Duration,
    webhooks: f64,
    /// The machine's one-minute load average after measuring: other work on it shows here.
    load: String,
}

impl Figures {
    fn own_ms(&self) -> f64 {
        self.action.saturating_sub(self.bare).as_secs_f64() * 1e3
    }
}

/// Warms the restarted service, then measures disables and three bursts of webhooks.
async fn measure(
    running: &Running,
    fake: &FakeEntra,
    disables: &mut Disables,
    (http, secret): (&reqwest::Client, &str),
    (rounds, burst): (u64, u64),
) -> (Duration, Duration, f64) {
    disables.run(fake, &running.remediator, 50).await;
    webhooks(http, &running.base, secret, 200).await;
    let (action, bare, _) = disables.run(fake, &running.remediator, rounds).await;
    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(webhooks(http, &running.base, secret, burst).await);
    }
    rates.sort_by(f64::total_cmp);
    (action, bare, rates[1])
}

fn print_table(figures: &[Figures]) {
    println!(
        "  {:>9} | {:>9} {:>9} {:>10} {:>8} | {:>8} | {:>9} {:>7} {:>7} | {:>10} | {:>5}",
        "seeded",
        "actions",
        "entries",
        "detections",
        "db MB",
        "seed s",
        "action ms",
        "bare ms",
        "own ms",
        "webhooks/s",
        "load"
    );
    for f in figures {
        let (actions, entries, detections) = f.contents.rows;
        println!(
            "  {:>9} | {actions:>9} {entries:>9} {detections:>10} {:>8.0} | {:>8.1} | {:>9.2} {:>7.2} {:>7.2} | {:>10.0} | {:>5}",
            f.size,
            f.contents.megabytes,
            f.seeding.as_secs_f64(),
            f.action.as_secs_f64() * 1e3,
            f.bare.as_secs_f64() * 1e3,
            f.own_ms(),
            f.webhooks,
            f.load
        );
    }
    if let (Some(first), Some(last)) = (figures.first(), figures.last()) {
        println!(
            "  {} vs {}: action median ×{:.2}, own time ×{:.2}, webhooks/s ×{:.2} (flat is ×1.0)",
            last.size,
            first.size,
            last.action.as_secs_f64() / first.action.as_secs_f64(),
            last.own_ms() / first.own_ms(),
            last.webhooks / first.webhooks
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// `audit check` over the two chains the seed extended.
async fn check_chains(running: &Running) {
    let keys = check::keyring(running.store.as_ref(), []).await.unwrap();
    for chain in [BENCH_CUSTOMER, HISTORY_CHAIN] {
        let started = Instant::now();
        let summary = check::check_chain(running.store.as_ref(), &keys, chain)
            .await
            .unwrap()
            .unwrap_or_else(|broken| panic!("chain {chain} is broken: {broken:?}"));
        println!(
            "  audit check {chain}: valid, {} entries, {} checkpoints ({:.1} s)",
            summary.entries,
            summary.checkpoints,
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() {
    let sizes = sizes();
    let knobs = (
        env_parse("BENCH_GROWTH_ACTIONS", 300u64),
        env_parse("BENCH_GROWTH_WEBHOOKS", 1000u64),
    );
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(dir.path()).await;
    println!(
        "cost as work grows, {}, durable commits: own time per disable at zero Graph latency \
         (action median − bare Graph median, {} actions), verified webhooks/s ({IN_FLIGHT} in flight, \
         no look-up, median of 3 × {})",
        db.backend(),
        knobs.0,
        knobs.1
    );
    let fake = fake().await;
    let config = || settings(dir.path(), &db);
    let mut disables = Disables::new(&fake).await;
    let http = reqwest::Client::new();

    let clock = ManualClock::starting_now();
    let running = Running::start(config(), &fake, &clock).await;
    let secret = add_customers(&running).await;
    let (_, _, action) = disables.run(&fake, &running.remediator, 2).await;
    webhooks(&http, &running.base, &secret, 1).await;
    let filter = DetectionFilter {
        limit: 1,
        ..DetectionFilter::default()
    };
    let detection = running.store.detections(&filter).await.unwrap().remove(0);
    let templates = Templates {
        action,
        detection,
        key: running.key.clone(),
        checkpoint_every: config().audit.checkpoint_every,
        newest: chrono::Utc::now() - chrono::Duration::hours(2),
    };
    running.stop().await;

    let (mut seeded, mut figures) = (0, Vec::new());
    for &size in &sizes {
        let started = Instant::now();
        let contents = seed(&db, &templates, seeded, size).await;
        let seeding = started.elapsed();
        seeded = size;
        // The hourly limit counts the customer's actions of the last hour; moving the engine's
        // clock past it keeps earlier sizes' actions out of that count.
        clock.advance(Duration::from_secs(2 * 3600));
        let running = Running::start(config(), &fake, &clock).await;
        let (action, bare, webhooks) =
            measure(&running, &fake, &mut disables, (&http, &secret), knobs).await;
        let figure = Figures {
            size,
            contents,
            seeding,
            action,
            bare,
            webhooks,
            load: load_average(),
        };
        println!(
            "  seeded {size} in {:.1} s: own time {:.2} ms, {webhooks:.0} webhooks/s",
            seeding.as_secs_f64(),
            figure.own_ms()
        );
        figures.push(figure);
        if size == *sizes.last().unwrap() {
            check_chains(&running).await;
        }
        running.stop().await;
    }
    print_table(&figures);
    db.drop_database().await;
}
