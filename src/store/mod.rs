//! Storage: one narrow trait per concern beside its SQL, each implemented once for every
//! [`Engine`]; `Store` is their union. Two engines: SQLite (the embedded default) and PostgreSQL
//! (several instances behind a load balancer), chosen once from the URL scheme.

mod action_rows;
mod action_steps;
mod analyst_rows;
pub mod analysts_sql;
pub mod audit_sql;
mod detection_rows;
pub mod detections_sql;
pub mod domain_sql;
mod engine;
pub mod instances_sql;
mod listing;
mod notification_rows;
pub mod notifications_sql;
pub mod onboarding_sql;
pub mod postgres;
mod postgres_appends;
pub mod sqlite;
mod sqlite_actions;
mod sqlite_detections;
mod sqlite_direct;
mod sqlite_entries;
mod sqlite_reads;
mod sqlite_writer;

use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::append::Sealer;
use crate::audit::event::AuthMethod;
use crate::audit::signing::PublicKey;
use crate::domain::CustomerSlug;
use crate::domain::action::ActionState;
use crate::domain::cursor::ListCursor;
use crate::domain::event::Operation;
use crate::error::{Error, Result};
pub use analyst_rows::{ANALYST_COLUMNS, AnalystRecord};
pub use analysts_sql::{
    AnalystChange, AnalystStore, OtpFailureCount, OtpFailureRecord, refusal_chains,
};
pub use audit_sql::AuditStore;
pub use detection_rows::DETECTION_COLUMNS;
pub use detections_sql::{Decision, DetectionStore};
pub use domain_sql::{ActionStore, CustomerStore};
pub use engine::Engine;
pub use instances_sql::InstanceStore;
pub use notifications_sql::NotificationStore;
pub use onboarding_sql::{
    NewWebhookSecret, OnboardingStore, Reseal, Resealed, WebhookSecretRecord,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL scheme; anything else is a configuration error.
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Config(vec![format!(
                "database.url: `{}` is neither a sqlite:// nor a postgres:// URL",
                redact_url(url)
            )]))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long to wait for a connection (also when the database is unreachable at start).
    pub acquire_timeout: std::time::Duration,
    /// Create the SQLite file (and its folder) when missing; `serve` and `migrate` do.
    pub create_if_missing: bool,
    /// Apply pending migrations; otherwise a schema that is behind is an error.
    pub migrate: bool,
    /// Needed for any write to the audit log; read-only commands open without it.
    pub sealer: Option<Arc<Sealer>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(5),
            create_if_missing: false,
            migrate: false,
            sealer: None,
        }
    }
}

/// Everything killswitch keeps. Every write that records a decision or a change someone made
/// (customers, policies, actions, analysts, detections, webhook secrets) appends its audit entry
/// in the same transaction, so none is done that is not recorded. Operational bookkeeping is not
/// audited: console sessions, used one-time-code steps, a detection's matched account, a consent
/// link's nonce, the last connection check (its outcome is, separately).
#[async_trait]
pub trait Store:
    AuditStore
    + CustomerStore
    + ActionStore
    + AnalystStore
    + OnboardingStore
    + DetectionStore
    + NotificationStore
    + InstanceStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
}

/// A console session: whose it is, its CSRF token, and when it ends.
#[derive(Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id_hash: String,
    pub analyst_id: String,
    pub csrf_token: String,
    pub created_at: String,
    pub expires_at: String,
    /// `oidc` or `api_token` (see [`SessionRecord::method`]).
    pub auth_method: String,
}

impl SessionRecord {
    /// How the analyst signed in (the column's CHECK allows these two only).
    pub fn method(&self) -> AuthMethod {
        match self.auth_method.as_str() {
            "api_token" => AuthMethod::ApiToken,
            _ => AuthMethod::Oidc,
        }
    }

    pub fn method_text(method: AuthMethod) -> &'static str {
        match method {
            AuthMethod::ApiToken => "api_token",
            AuthMethod::Oidc => "oidc",
        }
    }
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("analyst_id", &self.analyst_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (id_hash, analyst_id, csrf_token, created_at, expires_at, auth_method) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const SELECT_SESSION: &str = "SELECT id_hash, analyst_id, csrf_token, created_at, expires_at, auth_method FROM sessions \
     WHERE id_hash = $1 AND expires_at > $2";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";

/// Which actions to list, newest first (`created_at`, then `id`, both descending).
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Only these customers (an analyst's scope, or the one asked for); `None`: all.
    pub customers: Option<Vec<CustomerSlug>>,
    pub state: Option<ActionState>,
    pub operation: Option<Operation>,
    /// An account's history: actions whose account is one of these names in any case, or
    /// whose Entra object id is one of them. `None`: every account; empty: none.
    pub accounts: Option<Vec<String>>,
    /// Only actions older than this position (the last row of the page before).
    pub before: Option<ListCursor>,
    pub limit: u32,
}

impl ActionFilter {
    const TIME_COLUMN: &'static str = "created_at";

    fn listing(&self) -> listing::Listing {
        listing::Listing::new(format!(
            "SELECT {} FROM actions",
            domain_sql::ACTION_COLUMNS
        ))
        .customers(self.customers.as_deref())
        .equal("state", self.state.map(ActionState::as_str))
        .equal("operation", self.operation.map(Operation::as_str))
        .naming(self.accounts.as_deref())
        .before(Self::TIME_COLUMN, self.before.as_ref())
    }
}

/// Opens the backend named by `url`.
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>> {
    Ok(match Backend::from_url(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(url, options).await?),
        Backend::Postgres => Arc::new(postgres::PgStore::open(url, options).await?),
    })
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Applies pending migrations (when `migrate`), or refuses a schema that is behind. Nothing is
/// run when nothing is pending, so a role without DDL rights can start on a migrated database.
async fn migrate_or_check<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
    migrate: bool,
) -> Result<()>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    // No migrations table yet reads as "everything pending".
    let applied: Vec<i64> =
        sqlx::query_scalar::<DB, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let pending = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count();
    match (pending, migrate) {
        (0, _) => Ok(()),
        (_, true) => Ok(migrator.run(pool).await?),
        (pending, false) => Err(Error::SchemaBehind { pending }),
    }
}

/// Maps "someone else recorded the outcome" to `Ok(None)`.
fn superseded_is_none<T>(done: Result<T>) -> Result<Option<T>> {
    match done {
        Ok(value) => Ok(Some(value)),
        Err(Error::Superseded) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The database's own message when there is one (without driver decoration), else the error.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// A cheap round trip, for `/readyz`. A plain execute: PostgreSQL's `1` is an INT4, which a
/// typed fetch would have to match.
async fn ping<DB>(pool: &sqlx::Pool<DB>) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query::<DB>("SELECT 1").execute(pool).await?;
    Ok(())
}

fn sealer(options: &StoreOptions) -> Result<Arc<Sealer>> {
    options
        .sealer
        .clone()
        .ok_or_else(|| Error::AuditUnavailable("the store was opened read-only".to_owned()))
}

/// Parses stored `(key_id, base64 public key)` rows; a row whose id does not match its key was
/// edited and is refused rather than trusted.
fn parse_signing_keys(rows: Vec<(String, String)>) -> Result<Vec<PublicKey>> {
    rows.into_iter()
        .map(|(key_id, public_key)| {
            let key = PublicKey::from_base64(&public_key)?;
            if key.key_id.as_str() != key_id {
                return Err(Error::AuditUnavailable(format!(
                    "stored signing key {key_id} does not match its public key"
                )));
            }
            Ok(key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filters_number_their_placeholders_in_bind_order() {
        let all = ActionFilter {
            limit: 10,
            ..ActionFilter::default()
        };
        assert!(
            all.listing()
                .newest_first(ActionFilter::TIME_COLUMN, 10)
                .ends_with("FROM actions ORDER BY created_at DESC, id DESC LIMIT 10")
        );
        let both = ActionFilter {
            customers: Some(vec![
                "contoso".parse().unwrap(),
                "fabrikam".parse().unwrap(),
            ]),
            state: Some(ActionState::Failed),
            operation: Some(Operation::Enable),
            limit: 10,
            ..ActionFilter::default()
        };
        let sql = both.listing().newest_first("created_at", 10);
        assert!(
            sql.contains(
                "WHERE customer = $2 AND state = $3 AND operation = $4 \
                 ORDER BY created_at DESC, id DESC LIMIT 10) AS customer_1"
            ),
            "{sql}"
        );
        assert_eq!(
            both.listing().binds(),
            ["contoso", "fabrikam", "failed", "enable"]
        );
        let none = ActionFilter {
            customers: Some(vec![]),
            limit: 1,
            ..ActionFilter::default()
        };
        assert!(
            none.listing()
                .newest_first("created_at", 1)
                .contains("WHERE 1 = 0")
        );
    }

    #[test]
    fn redacts_passwords_but_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/ks"),
            "postgres://app:***@db:5432/ks"
        );
        assert_eq!(
            redact_url("sqlite://data/killswitch.db"),
            "sqlite://data/killswitch.db"
        );
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("mysql://h/db").is_err());
    }
}
