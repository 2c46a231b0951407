//! Notifications delivered by the running service (its own worker, started by
//! `Application::run_until`) to a real SMTP server and a webhook receiver on loopback.
//!
//! (1) Throughput. Before the service starts, 2,000 failed connection tests are appended to ten
//!     customer chains through `store.append`; each owes one SOC e-mail and one SOC webhook
//!     (standard, signed). Measured: the time from starting the service to the SMTP server
//!     having accepted the 2,000th e-mail and the receiver the 2,000th webhook; printed as
//!     e-mails/s, webhooks/s and messages/s overall.
//! (2) Latency at load. Disables through the HTTP API (`POST …/accounts/{a}/disable`, a Bearer
//!     token and a fresh `X-Killswitch-OTP`; one analyst per action, since a code is good once
//!     per 30-second step) at 50 per second for 10 seconds, across ten customers each with a
//!     contact address, against the in-process fake Entra at zero latency. Measured, for each
//!     action: from its outcome (the `finished_at` the API answered with, the service's clock)
//!     to the moment the bench read the SMTP server's line for the customer's e-mail (matched by
//!     the action id in the message), median, p95 and max; the same from the moment the 200
//!     arrived is printed beside it. Each action also owes a SOC e-mail and a SOC webhook, which
//!     are sent at the same time.
//!
//! Both parts run once with the default `notify.poll_interval_ms` (200) and once with 50, each
//! on a fresh database. The SMTP server is the test suite's `tests/notify/smtp-sink.mjs` (npm
//! `smtp-server`, AUTH, no TLS), one Node.js process; the receiver is an axum server in this
//! process answering 200. Everything shares the machine's cores.
//!
//! Run: `cargo bench --bench notify` (SQLite, durable commits); add
//! `BENCH_DATABASE_URL=postgres://…` for PostgreSQL (a fresh database is created there for each
//! run). Needs Node.js and `npm ci --prefix tests/notify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fake_entra::{AppCredential, FakeEntra, Tenant, User};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use futures::StreamExt;
use killswitch::app::{Application, Services};
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::{Role, Scope};
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{ChainId, TenantId};
use secrecy::ExposeSecret;
use sqlx::Connection;
use uuid::Uuid;

const CLIENT_ID: &str = "5d1f2c6e-8a47-4b36-9a0e-6c1f0b2d7e41";
const SECRET: &str = "bench-secret";
const SMTP_USER: &str = "killswitch";
const SMTP_PASSWORD: &str = "bench-smtp-password";
const FROM: &str = "killswitch <soc@provider.example>";
const SOC_MAILBOX: &str = "soc@provider.example";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CUSTOMERS: u128 = 10;
const USERS_PER_CUSTOMER: u128 = 60;
/// Failed connection tests in the backlog; each owes one SOC e-mail and one SOC webhook.
const BACKLOG: usize = 2_000;
const RATE_PER_SEC: u64 = 50;
const LOAD_SECS: u64 = 10;
const ACTIONS: usize = (RATE_PER_SEC * LOAD_SECS) as usize;
/// Actions before the measured ones: every customer's Graph token, every connection warm.
const WARM_UP: usize = CUSTOMERS as usize;
const WAIT_AT_MOST: Duration = Duration::from_secs(60);

fn tenant_id(c: u128) -> Uuid {
    Uuid::from_u128(0xBE00_0000 + c)
}

fn user_id(c: u128, u: u128) -> Uuid {
    Uuid::from_u128(0x5E00_0000 + c * 1000 + u)
}

fn slug(c: u128) -> String {
    format!("customer-{c}")
}

fn upn(c: u128, u: u128) -> String {
    format!("user{u}@customer-{c}.onmicrosoft.com")
}

fn contact(c: u128) -> String {
    format!("security@customer-{c}.example")
}

/// An e-mail the SMTP server accepted, as the bench read its line.
struct Mail {
    at: Instant,
    utc: DateTime<Utc>,
    to: Vec<String>,
    /// Every UUID in the message (the action id among them, in a customer's notice).
    ids: Vec<Uuid>,
}

/// The node process running `smtp-server`; killed when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    mail: Arc<Mutex<Vec<Mail>>>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuids(data: &str) -> Vec<Uuid> {
    // Undo quoted-printable soft line breaks; hex digits and hyphens are never encoded.
    let data = data.replace("=\r\n", "").replace("=\n", "");
    data.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter(|t| t.len() == 36)
        .filter_map(|t| t.parse().ok())
        .collect()
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify");
        assert!(
            dir.join("node_modules/smtp-server").is_dir(),
            "tests/notify/node_modules is missing: run `npm ci --prefix tests/notify` first \
             (the bench's SMTP server is the npm package smtp-server)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("smtp-sink.mjs"))
            .args([
                "--port",
                "0",
                "--user",
                SMTP_USER,
                "--password",
                SMTP_PASSWORD,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (is Node.js installed?): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log = mail.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                let (at, utc) = (Instant::now(), Utc::now());
                let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let to = message["to"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let ids = uuids(message["data"].as_str().unwrap_or_default());
                log.lock().unwrap().push(Mail { at, utc, to, ids });
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let port = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {first:?}"));
        SmtpSink {
            child,
            port: u16::try_from(port).unwrap(),
            mail,
        }
    }

    fn url(&self) -> String {
        format!(
            "smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}?tls=none",
            self.port
        )
    }

    fn count(&self) -> usize {
        self.mail.lock().unwrap().len()
    }
}

/// A webhook receiver on loopback answering every request with 200; keeps each arrival time.
struct Receiver {
    url: String,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let log = arrivals.clone();
        let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(Instant::now());
                axum::http::StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/soc", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, arrivals }
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
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
        for u in 0..USERS_PER_CUSTOMER {
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

fn settings(
    dir: &Path,
    url: &str,
    fake: &FakeEntra,
    smtp: &SmtpSink,
    hook: &Receiver,
    poll_ms: u64,
) -> Settings {
    let base = fake.base_url();
    let figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Serialized::default("data_dir", dir.display().to_string()))
        .merge(Serialized::default("database.url", url))
        .merge(Serialized::default("server.listen", "127.0.0.1:0"))
        .merge(Serialized::default("entra.authority_url", base.as_str()))
        .merge(Serialized::default("entra.graph_url", base.as_str()))
        .merge(Serialized::default("entra.client_id", CLIENT_ID))
        .merge(Serialized::default("entra.client_secret", SECRET))
        .merge(Serialized::default("notify.smtp_url", smtp.url()))
        .merge(Serialized::default("notify.from", FROM))
        .merge(Serialized::default("notify.soc_email", vec![SOC_MAILBOX]))
        .merge(Serialized::default(
            "notify.soc_webhook_url",
            hook.url.as_str(),
        ))
        .merge(Serialized::default("notify.soc_webhook_kind", "standard"))
        .merge(Serialized::default(
            "notify.soc_webhook_secret",
            WEBHOOK_SECRET,
        ))
        .merge(Serialized::default("notify.poll_interval_ms", poll_ms));
    Settings::from_figment(&figment).unwrap()
}

/// A fresh database: a new one on the PostgreSQL server of `BENCH_DATABASE_URL`, else a SQLite
/// file in `dir`.
async fn fresh_database(dir: &Path, name: &str) -> String {
    match std::env::var("BENCH_DATABASE_URL") {
        Ok(server) if !server.is_empty() => {
            let db = format!("ks_bench_{name}_{}", Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut admin)
                .await
                .unwrap();
            let mut url = url::Url::parse(&server).unwrap();
            url.set_path(&db);
            url.to_string()
        }
        _ => format!("sqlite://{}/{name}.db", dir.display()),
    }
}

/// An analyst who may disable in every customer: the API token and the TOTP secret.
struct Analyst {
    token: String,
    totp: Vec<u8>,
}

async fn enroll(services: &Services, n: usize) -> Analyst {
    let enrolled = services
        .auth
        .enroll(
            &format!("analyst{n}@provider.example"),
            None,
            Role::Analyst,
            Scope::All,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let record = services
        .store
        .analyst(enrolled.analyst.id)
        .await
        .unwrap()
        .unwrap();
    Analyst {
        token: enrolled.token.expose_secret().to_owned(),
        totp: services
            .auth
            .totp_secret(&record)
            .unwrap()
            .expose_secret()
            .to_vec(),
    }
}

/// What one disable came to, as the client saw it.
struct Done {
    action: Uuid,
    customer: u128,
    finished_at: DateTime<Utc>,
    answered_at: DateTime<Utc>,
}

async fn disable(
    client: &reqwest::Client,
    base: &str,
    analyst: &Analyst,
    c: u128,
    u: u128,
) -> Done {
    let code =
        killswitch::auth::mfa::code_at(&analyst.totp, Utc::now().timestamp() as u64).unwrap();
    let response = client
        .post(format!(
            "{base}/api/v1/customers/{}/accounts/{}/disable",
            slug(c),
            upn(c, u)
        ))
        .bearer_auth(&analyst.token)
        .header("X-Killswitch-OTP", code)
        .json(&serde_json::json!({"reason": "Falcon ITP: credential theft", "ticket": "SOC-7"}))
        .send()
        .await
        .unwrap();
    let answered_at = Utc::now();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["state"], "succeeded", "{body}");
    Done {
        action: body["id"].as_str().unwrap().parse().unwrap(),
        customer: c,
        finished_at: body["finished_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        answered_at,
    }
}

/// Waits (in real time, up to [`WAIT_AT_MOST`]) until `ready` holds; panics with `what` if not.
async fn wait_until(what: impl Fn() -> String, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < WAIT_AT_MOST,
            "waited too long: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

/// Median, p95 and max, in milliseconds.
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (
        samples[n / 2],
        samples[(n * 95).div_ceil(100) - 1],
        samples[n - 1],
    )
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap() as f64 / 1e3
}

async fn run(dir: &Path, poll_ms: u64) {
    let smtp = SmtpSink::start();
    let hook = Receiver::start().await;
    let fake = fake_entra().await;
    let url = fresh_database(dir, &format!("notify_{poll_ms}")).await;
    let settings = settings(dir, &url, &fake, &smtp, &hook, poll_ms);
    println!(
        "  notify.poll_interval_ms = {poll_ms}, send_timeout_secs = {}, database.max_connections = {}",
        settings.notify.send_timeout.as_secs(),
        settings.database.max_connections
    );
    let services = Services::open(&settings).await.unwrap();
    let store = services.store.clone();
    for c in 0..CUSTOMERS {
        let customer = Customer {
            slug: slug(c).parse().unwrap(),
            name: format!("Customer {c}"),
            domain: format!("customer-{c}.onmicrosoft.com"),
            tenant_id: TenantId::new(tenant_id(c)),
            policy: Policy {
                contact: Some(contact(c)),
                max_actions_per_hour: 1_000_000,
                ..Policy::default()
            },
            created_at: killswitch::time::Timestamp::now(),
            connection: None,
        };
        store
            .add_customer(&customer, &Actor::Service)
            .await
            .unwrap();
    }

    // (1) The backlog, written before the service (and so its worker) starts.
    let appending = Instant::now();
    futures::stream::iter(0..BACKLOG)
        .map(|n| {
            let store = store.clone();
            async move {
                let chain = ChainId::Customer(slug(n as u128 % CUSTOMERS).parse().unwrap());
                let event = AuditEvent::ConnectionTested {
                    ready: false,
                    detail: format!("token request refused (AADSTS7000229), test {n}"),
                };
                store.append(&chain, &Actor::Service, &event).await.unwrap();
            }
        })
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    let appended = appending.elapsed();
    let analysts: Vec<Analyst> = futures::stream::iter(0..WARM_UP + ACTIONS)
        .map(|n| enroll(&services, n))
        .buffered(16)
        .collect()
        .await;

    let app = Application::with_services(settings, services)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    wait_until(
        || {
            format!(
                "{} of {BACKLOG} e-mails and {} of {BACKLOG} webhooks arrived",
                smtp.count(),
                hook.count()
            )
        },
        || smtp.count() >= BACKLOG && hook.count() >= BACKLOG,
    )
    .await;
    let last_mail = smtp.mail.lock().unwrap()[BACKLOG - 1].at;
    let last_hook = hook.arrivals.lock().unwrap()[BACKLOG - 1];
    let (mail_secs, hook_secs) = (secs(started, last_mail), secs(started, last_hook));
    let all_secs = mail_secs.max(hook_secs);
    println!(
        "  (1) backlog of {BACKLOG} failed connection tests (appended in {:.2} s): \
         {BACKLOG} SOC e-mails in {mail_secs:.2} s ({:.0}/s), {BACKLOG} webhooks in {hook_secs:.2} s ({:.0}/s), \
         {} messages in {all_secs:.2} s ({:.0}/s)",
        appended.as_secs_f64(),
        BACKLOG as f64 / mail_secs,
        BACKLOG as f64 / hook_secs,
        2 * BACKLOG,
        (2 * BACKLOG) as f64 / all_secs
    );

    // (2) Warm up (a Graph token per tenant), let its messages go, then the load.
    let client = reqwest::Client::new();
    for (c, analyst) in analysts[..WARM_UP].iter().enumerate() {
        disable(&client, &base, analyst, c as u128, USERS_PER_CUSTOMER - 1).await;
    }
    let before = BACKLOG + 2 * WARM_UP;
    wait_until(
        || format!("{} of {before} e-mails arrived", smtp.count()),
        || smtp.count() >= before && hook.count() >= BACKLOG + WARM_UP,
    )
    .await;
    let client = Arc::new(client);
    let base = Arc::new(base);
    let analysts: Vec<Arc<Analyst>> = analysts.into_iter().skip(WARM_UP).map(Arc::new).collect();
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_SEC));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let load = Instant::now();
    let mut tasks = Vec::with_capacity(ACTIONS);
    for (n, analyst) in analysts.iter().enumerate() {
        ticker.tick().await;
        let (client, base, analyst) = (client.clone(), base.clone(), analyst.clone());
        let (c, u) = (n as u128 % CUSTOMERS, n as u128 / CUSTOMERS);
        tasks.push(tokio::spawn(async move {
            disable(&client, &base, &analyst, c, u).await
        }));
    }
    let mut done = Vec::with_capacity(ACTIONS);
    for task in tasks {
        done.push(task.await.unwrap());
    }
    let load_secs = load.elapsed().as_secs_f64();
    let expected = before + 2 * ACTIONS;
    wait_until(
        || format!("{} of {expected} e-mails arrived", smtp.count()),
        || smtp.count() >= expected,
    )
    .await;
    let (from_outcome, from_answer) = {
        let mail = smtp.mail.lock().unwrap();
        let mut from_outcome = Vec::with_capacity(ACTIONS);
        let mut from_answer = Vec::with_capacity(ACTIONS);
        for d in &done {
            let address = contact(d.customer);
            let got = mail
                .iter()
                .find(|m| m.to.contains(&address) && m.ids.contains(&d.action))
                .unwrap_or_else(|| panic!("no customer e-mail for action {}", d.action));
            from_outcome.push(ms_between(d.finished_at, got.utc));
            from_answer.push(ms_between(d.answered_at, got.utc));
        }
        (spread(from_outcome), spread(from_answer))
    };
    println!(
        "  (2) {ACTIONS} disables over HTTP in {load_secs:.1} s ({:.0}/s), {CUSTOMERS} customers; \
         customer e-mail at the SMTP server:",
        ACTIONS as f64 / load_secs
    );
    println!(
        "      after the action's finished_at: median {:.0} ms, p95 {:.0} ms, max {:.0} ms (aim: median ≤ 1 s)",
        from_outcome.0, from_outcome.1, from_outcome.2
    );
    println!(
        "      after its 200 arrived:          median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        from_answer.0, from_answer.1, from_answer.2
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let backend = if std::env::var("BENCH_DATABASE_URL").is_ok_and(|s| !s.is_empty()) {
        "postgres"
    } else {
        "sqlite (durable commits)"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "notifications, {backend}, {cores} cores; SMTP: smtp-server (Node.js) on loopback with AUTH, \
         no TLS; SOC webhook: standard (signed), to an axum receiver in this process answering 200"
    );
    for poll_ms in [200, 50] {
        run(dir.path(), poll_ms).await;
    }
}
