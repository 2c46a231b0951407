//! Shared test helpers: an isolated database per test (SQLite file, or a fresh PostgreSQL
//! database when `TEST_DATABASE_URL` names a server), stores opened on it, and a running app.
#![allow(dead_code)]

pub mod entra;
pub mod export;
pub mod notify;
pub mod oidc;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use futures::TryStreamExt;
use killswitch::app::{Application, Services};
use killswitch::audit::append::Sealer;
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::audit::verify::ChainSummary;
use killswitch::audit::{AuditKey, Entry};
use killswitch::auth::{Role, Scope, mfa};
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::store::{self, Backend, Store, StoreOptions};
use killswitch::time::ManualClock;
use secrecy::ExposeSecret;
use sqlx::Connection;
use uuid::Uuid;

/// Set to a PostgreSQL server URL (for example postgres://postgres@127.0.0.1:5432/test) to run
/// the suite against PostgreSQL; each test then creates its own database there.
pub const DATABASE_ENV: &str = "TEST_DATABASE_URL";

pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::on(std::env::var(DATABASE_ENV).ok().as_deref()).await
    }

    /// A fresh database on the PostgreSQL server `server`, or SQLite when `None` or empty.
    pub async fn on(server: Option<&str>) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = match server {
            Some(server) if !server.is_empty() => fresh_postgres_database(server).await,
            _ => format!("sqlite://{}/killswitch.db", dir.path().display()),
        };
        TestDb { url, dir }
    }

    pub fn backend(&self) -> Backend {
        Backend::from_url(&self.url).unwrap()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// Opens (and migrates) a store with a fresh signing key.
    pub async fn store(&self, checkpoint_every: u64) -> (Arc<dyn Store>, Arc<AuditKey>) {
        let key = Arc::new(AuditKey::generate().unwrap());
        let store = self.store_with_key(key.clone(), checkpoint_every).await;
        (store, key)
    }

    pub async fn store_with_key(
        &self,
        key: Arc<AuditKey>,
        checkpoint_every: u64,
    ) -> Arc<dyn Store> {
        let store = store::open(
            &self.url,
            StoreOptions {
                max_connections: 20,
                create_if_missing: true,
                migrate: true,
                sealer: Some(Arc::new(Sealer::new(key.clone(), checkpoint_every))),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        store.register_signing_key(&key.public_key()).await.unwrap();
        store
    }

    /// A raw connection for tests that go behind the application's back.
    pub async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.url).await.unwrap()
    }

    /// Settings for an app on this database, listening on a free loopback port.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let data_dir = self.dir.path().display().to_string();
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Serialized::default("data_dir", data_dir))
            .merge(Serialized::default("database.url", self.url.clone()))
            .merge(Serialized::default("server.listen", "127.0.0.1:0"));
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        Settings::from_figment(&figment).unwrap()
    }
}

async fn fresh_postgres_database(server: &str) -> String {
    let name = format!("kst_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| {
            panic!("{DATABASE_ENV} is set but PostgreSQL is unreachable: {e}");
        });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

pub struct TestApp {
    pub address: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub auth: Arc<killswitch::auth::gate::Authenticator>,
    pub onboarding: Arc<killswitch::customers::onboarding::Onboarding>,
    pub db: TestDb,
    /// The services' clock: tests move it instead of sleeping.
    pub clock: ManualClock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<killswitch::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        TestApp::try_spawn_with(overrides).await.unwrap()
    }

    /// [`spawn_with`](Self::spawn_with), for a caller that may retry (a chosen port was taken).
    pub async fn try_spawn_with(overrides: &[(&str, &str)]) -> killswitch::Result<TestApp> {
        let db = TestDb::new().await;
        let settings = db.settings(overrides);
        let clock = ManualClock::starting_now();
        let services = Services::open_with_clock(&settings, Arc::new(clock.clone())).await?;
        let auth = services.auth.clone();
        let onboarding = services.onboarding.clone();
        let app = Application::with_services(settings, services).await?;
        let address = app.local_addr()?;
        let store = app.store();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Ok(TestApp {
            address,
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            store,
            auth,
            onboarding,
            db,
            clock,
            shutdown: Some(tx),
            server: Some(server),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Enrols `email` with `role` over `scope` (such as "all" or "contoso"), as an operator.
    pub async fn enroll(&self, email: &str, role: Role, scope: &str) -> Analyst {
        enroll(&self.auth, &self.store, email, role, scope.parse().unwrap()).await
    }

    /// Stops the server the way SIGTERM does and waits for it; the database stays for reading.
    pub async fn stop(&mut self) -> killswitch::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }
}

/// Enrolls an analyst as `killswitch analyst enroll` does (also beside a server process).
pub async fn enroll(
    auth: &killswitch::auth::gate::Authenticator,
    store: &Arc<dyn Store>,
    email: &str,
    role: Role,
    scope: Scope,
) -> Analyst {
    let enrolled = auth
        .enroll(email, None, role, scope, &Actor::operator())
        .await
        .unwrap();
    let record = store.analyst(enrolled.analyst.id).await.unwrap().unwrap();
    Analyst {
        id: enrolled.analyst.id,
        email: email.to_owned(),
        token: enrolled.token.expose_secret().to_owned(),
        totp: auth.totp_secret(&record).unwrap().expose_secret().to_vec(),
        otpauth_uri: enrolled.otpauth_uri.expose_secret().to_owned(),
    }
}

/// A Falcon webhook to `url` carrying `body`, signed with `secret` the CrowdStrike way (the
/// customers' default) and stamped now.
pub fn signed_webhook(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    use killswitch::falcon::signature::{SignedString, sign_crowdstrike};
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = sign_crowdstrike(
        secret.as_bytes(),
        &ts,
        &body,
        SignedString::BodyTimestampBase64,
    );
    client
        .post(url)
        .header("X-CS-Primary-Signature", signature)
        .header("X-CS-Delivery-Timestamp", ts)
        .body(body)
}

/// Waits (up to 120 s) until at least `at_least` actions are stored, every action has its
/// outcome and no detection is left undecided; returns them all (up to `limit` of each).
pub async fn settled(
    store: &Arc<dyn Store>,
    limit: u32,
    at_least: usize,
) -> (
    Vec<killswitch::remediation::action::ActionRecord>,
    Vec<killswitch::falcon::records::DetectionRecord>,
) {
    use killswitch::falcon::records::{DetectionFilter, DetectionState};
    let start = std::time::Instant::now();
    loop {
        let actions = store
            .actions(&store::ActionFilter {
                limit,
                ..Default::default()
            })
            .await
            .unwrap();
        let detections = store
            .detections(&DetectionFilter {
                limit,
                ..Default::default()
            })
            .await
            .unwrap();
        let open = actions.iter().filter(|a| a.finished_at.is_none()).count();
        let undecided = detections
            .iter()
            .filter(|d| d.state == DetectionState::Pending && d.pending_reason.is_none())
            .count();
        if actions.len() >= at_least && open == 0 && undecided == 0 {
            return (actions, detections);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "{} actions ({open} open) and {undecided} undecided detections after 120 s",
            actions.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An enrolled analyst: their API token and TOTP secret, as the enrolment handed them out.
pub struct Analyst {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub totp: Vec<u8>,
    /// The enrolment link, carrying the secret in base32.
    pub otpauth_uri: String,
}

impl Analyst {
    /// The current one-time code.
    pub fn code(&self) -> String {
        mfa::code_at(&self.totp, chrono::Utc::now().timestamp() as u64).unwrap()
    }

    /// The code of the next time step: accepted now too (the window takes the step after),
    /// and not yet used when the current step's code was.
    pub fn next_code(&self) -> String {
        mfa::code_at(
            &self.totp,
            chrono::Utc::now().timestamp() as u64 + mfa::STEP_SECS,
        )
        .unwrap()
    }

    /// A code that is not the current one.
    pub fn wrong_code(&self) -> String {
        let right: u32 = self.code().parse().unwrap();
        format!("{:06}", (right + 1) % 1_000_000)
    }
}

/// Every entry of `chain`, in order.
pub async fn entries(store: &Arc<dyn Store>, chain: &str) -> Vec<Entry> {
    store
        .entries(chain)
        .map_ok(|row| serde_json::from_str::<Entry>(&row.entry).unwrap())
        .try_collect()
        .await
        .unwrap()
}

/// The event of every entry of `chain`, in order.
pub async fn events(store: &Arc<dyn Store>, chain: &str) -> Vec<AuditEvent> {
    entries(store, chain)
        .await
        .into_iter()
        .map(|entry| entry.event)
        .collect()
}

/// Verifies `chain` with the store's registered signing keys; panics with the break if broken.
pub async fn verify_chain(store: &Arc<dyn Store>, chain: &str) -> ChainSummary {
    let keys = killswitch::reports::check::keyring(store.as_ref(), [])
        .await
        .unwrap();
    killswitch::reports::check::check_chain(store.as_ref(), &keys, chain)
        .await
        .unwrap()
        .unwrap_or_else(|broken| panic!("chain {chain} is broken: {broken:?}"))
}

/// A pending detection of bob@contoso.onmicrosoft.com for contoso, as intake would store it.
pub fn stored_detection(
    id: Uuid,
    composite_id: &str,
) -> killswitch::falcon::records::DetectionRecord {
    killswitch::falcon::records::DetectionRecord {
        id,
        customer: "contoso".parse().unwrap(),
        composite_id: composite_id.into(),
        detection_id: None,
        severity: killswitch::falcon::payload::Severity::High,
        tactic: None,
        technique: None,
        account_upn: Some("bob@contoso.onmicrosoft.com".into()),
        account_sid: None,
        account_domain: None,
        falcon_host_link: None,
        cid: None,
        falcon_time: None,
        assurance: killswitch::falcon::signature::Assurance::Signed,
        state: killswitch::domain::detection::DetectionState::Pending,
        target_id: None,
        target_upn: None,
        pending_reason: None,
        action_id: None,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        received_at: killswitch::time::Timestamp::now(),
        received_run: None,
    }
}
