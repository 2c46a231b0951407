//! Shared test helpers: an isolated database per test (SQLite file, or a fresh PostgreSQL
//! database when `TEST_DATABASE_URL` names a server), stores opened on it, and a running app.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod entra;

use std::net::SocketAddr;
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use killswitch::app::{Application, Services};
use killswitch::audit::AuditKey;
use killswitch::audit::append::Sealer;
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::store::{self, Backend, Store, StoreOptions};
use sqlx::Connection;

/// Set to a PostgreSQL server URL (for example postgres://postgres@127.0.0.1:5432/test) to run
/// the suite against PostgreSQL; each test then creates its own database there.
pub const DATABASE_ENV: &str = "TEST_DATABASE_URL";

pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = match std::env::var(DATABASE_ENV) {
            Ok(server) if !server.is_empty() => fresh_postgres_database(&server).await,
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
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<killswitch::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let db = TestDb::new().await;
        let settings = db.settings(overrides);
        let services = Services::open(&settings).await.unwrap();
        let auth = services.auth.clone();
        let onboarding = services.onboarding.clone();
        let app = Application::with_services(settings, services)
            .await
            .unwrap();
        let address = app.local_addr().unwrap();
        let store = app.store();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            address,
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            store,
            auth,
            onboarding,
            db,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
