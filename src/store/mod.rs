//! Storage: one `Store` trait, a SQLite backend (the embedded default) and a PostgreSQL backend
//! (several instances behind a load balancer). The backend is chosen once, from the URL scheme.

mod action_rows;
pub mod analysts_sql;
pub mod audit_sql;
mod detection_rows;
pub mod detections_sql;
pub mod domain_sql;
pub mod onboarding_sql;
pub mod postgres;
mod reads;
pub mod sqlite;
mod sqlite_writer;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::audit::append::{Appended, Sealer};
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::PublicKey;
use crate::audit::{Actor, AuditEvent};
use crate::auth::analysts::AnalystRecord;
use crate::customers::{Customer, Policy};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::falcon::records::{DetectionFilter, DetectionRecord};
use crate::remediation::action::{ActionRecord, ActionState, Admission, Finish, Guard, NewAction};
use crate::time::Timestamp;
use analysts_sql::AnalystChange;
pub use detection_rows::DETECTION_COLUMNS;

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
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Appends one event to a chain; returns once the entry is durably committed.
    async fn append(&self, chain: &ChainId, actor: &Actor, event: &AuditEvent) -> Result<Appended>;

    /// Signs the chain's current head unless it is empty or already covered by a checkpoint.
    async fn checkpoint(&self, chain: &ChainId) -> Result<Option<CheckpointRecord>>;

    /// Records a checkpoint signing key (once) with a `signing_key_registered` entry in the
    /// system chain; returns whether it was new.
    async fn register_signing_key(&self, key: &PublicKey) -> Result<bool>;

    async fn signing_keys(&self) -> Result<Vec<PublicKey>>;

    /// Every chain name that occurs in heads, entries or checkpoints, sorted.
    async fn chain_names(&self) -> Result<Vec<String>>;

    async fn head(&self, chain: &str) -> Result<Option<HeadRecord>>;

    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>>;

    /// Entries of a chain in `seq` order, streamed.
    fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>>;
    /// Entries `first..=last` of a chain in `seq` order, streamed.
    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>>;
    /// The first and last seq of the chain's entries written in `[from, to)`, if any.
    async fn seq_window(
        &self,
        chain: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<(i64, i64)>>;

    // Customers.

    /// Adds a customer, recorded as `customer_added` in its chain; a taken slug is a conflict.
    async fn add_customer(&self, customer: &Customer, actor: &Actor) -> Result<()>;
    async fn customer(&self, slug: &CustomerSlug) -> Result<Option<Customer>>;
    async fn customers(&self) -> Result<Vec<Customer>>;
    /// Replaces the policy, recorded as `customer_policy_changed` with before and after.
    async fn update_policy(
        &self,
        customer: &Customer,
        policy: &Policy,
        actor: &Actor,
    ) -> Result<()>;

    // Actions.

    /// Records a request and applies the guard rails, in one transaction with its audit entry.
    async fn admit_action(&self, action: &NewAction, guard: Guard) -> Result<Admission>;
    /// Records the one outcome of an action; `false` when it already had one.
    async fn finish_action(&self, finish: &Finish) -> Result<bool>;
    async fn action(&self, id: uuid::Uuid) -> Result<Option<ActionRecord>>;
    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>>;
    /// The action an idempotency key names for a customer.
    async fn action_by_key(
        &self,
        customer: &CustomerSlug,
        key: &str,
    ) -> Result<Option<ActionRecord>>;
    /// Actions without an outcome whose owner's lease ran out before `now`.
    async fn stale_actions(&self, now: Timestamp) -> Result<Vec<ActionRecord>>;
    /// Takes over a stale action until `lease_until`; `false` when another process took it first.
    async fn claim_action(&self, action: &ActionRecord, lease_until: Timestamp) -> Result<bool>;

    // Analysts.

    /// Adds an analyst, recorded as `analyst_added` in the system chain; a taken e-mail conflicts.
    async fn add_analyst(&self, record: &AnalystRecord, actor: &Actor) -> Result<()>;
    async fn update_analyst(
        &self,
        id: uuid::Uuid,
        change: &AnalystChange,
        actor: &Actor,
    ) -> Result<()>;
    async fn analyst(&self, id: uuid::Uuid) -> Result<Option<AnalystRecord>>;
    async fn analyst_by_email(&self, email: &str) -> Result<Option<AnalystRecord>>;
    async fn analyst_by_token(&self, token_hash: &str) -> Result<Option<AnalystRecord>>;
    async fn analysts(&self) -> Result<Vec<AnalystRecord>>;
    // Onboarding.

    async fn create_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        expires: Timestamp,
    ) -> Result<()>;
    /// Spends a consent state on its first use; `false` when it is unknown, for another customer,
    /// or used already. Expiry is the caller's to check (it is signed into the state).
    async fn use_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<bool>;
    async fn record_connection_check(
        &self,
        customer: &CustomerSlug,
        ready: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Issues a webhook secret (sealed); see `onboarding_sql::add_webhook_secret`.
    async fn add_webhook_secret(&self, new: &onboarding_sql::NewWebhookSecret) -> Result<bool>;
    /// Stores secrets sealed again under the current key (see `onboarding_sql::reseal`).
    async fn reseal(&self, reseal: &onboarding_sql::Reseal) -> Result<(u64, u64)>;
    /// A customer and its webhook secrets valid at `now` (newest first), in one read.
    async fn customer_with_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Option<(Customer, Vec<onboarding_sql::WebhookSecretRecord>)>>;
    /// The customer's webhook secrets valid at `now`, newest first.
    async fn webhook_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Vec<onboarding_sql::WebhookSecretRecord>>;

    // Falcon detections.

    /// Stores a detection unless its composite id is known (then returns the stored one, `false`).
    async fn record_detection(
        &self,
        detection: &DetectionRecord,
        actor: &Actor,
    ) -> Result<(DetectionRecord, bool)>;
    /// The Entra account a detection was matched to, or why it waits.
    async fn set_detection_target(
        &self,
        id: uuid::Uuid,
        target_id: Option<&str>,
        target_upn: Option<&str>,
        pending_reason: Option<&str>,
    ) -> Result<()>;
    /// Decides a pending detection (audited); `false` when it was decided already.
    async fn decide_detection(&self, decision: &detections_sql::Decision) -> Result<bool>;
    async fn detection(&self, id: uuid::Uuid) -> Result<Option<DetectionRecord>>;
    async fn detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>>;
    /// How many detections wait for a decision (a metric).
    async fn pending_detections(&self) -> Result<i64>;

    // Console sessions (after single sign-on). Only a hash of the cookie value is stored.

    async fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// The session with this id hash, if it has not expired at `now`.
    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;

    /// Accepts TOTP `step` for the analyst at most once (see `analysts_sql::consume_step`).
    async fn consume_otp_step(&self, id: uuid::Uuid, step: u64, now: Timestamp) -> Result<bool>;
    /// Counts a wrong code (audited in the system chain and the target customer's), locking at
    /// `max_failures` (see `analysts_sql::otp_failed`).
    async fn record_otp_failure(
        &self,
        failure: &analysts_sql::OtpFailureRecord,
    ) -> Result<analysts_sql::OtpFailureCount>;
}

/// A console session: whose it is, its CSRF token, and when it ends.
#[derive(Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id_hash: String,
    pub analyst_id: String,
    pub csrf_token: String,
    pub created_at: String,
    pub expires_at: String,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("analyst_id", &self.analyst_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (id_hash, analyst_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_SESSION: &str = "SELECT id_hash, analyst_id, csrf_token, created_at, expires_at FROM sessions \
     WHERE id_hash = $1 AND expires_at > $2";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";

/// Which actions to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Only these customers (an analyst's scope, or the one asked for); `None`: all.
    pub customers: Option<Vec<CustomerSlug>>,
    pub state: Option<ActionState>,
    pub limit: u32,
}

impl ActionFilter {
    /// `SELECT … FROM actions` with this filter's conditions; values are bound in the order
    /// customers, state, limit (see [`ActionFilter::binds`]).
    fn sql(&self) -> String {
        let mut sql = format!("SELECT {} FROM actions", domain_sql::ACTION_COLUMNS);
        let mut n = 0;
        let mut clauses = Vec::new();
        if let Some(customers) = &self.customers {
            let placeholders: Vec<String> = customers
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            // An empty scope matches nothing rather than everything.
            clauses.push(if placeholders.is_empty() {
                "1 = 0".to_owned()
            } else {
                format!("customer IN ({})", placeholders.join(", "))
            });
        }
        if self.state.is_some() {
            n += 1;
            clauses.push(format!("state = ${n}"));
        }
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT ${}", n + 1));
        sql
    }

    /// The text values to bind before the limit, in placeholder order.
    fn binds(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .customers
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        values.extend(self.state.map(|s| s.as_str().to_owned()));
        values
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

/// Maps "someone else recorded the outcome" to `Ok(false)`.
fn superseded_is_false(done: Result<()>) -> Result<bool> {
    match done {
        Ok(()) => Ok(true),
        Err(Error::Superseded) => Ok(false),
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
            all.sql()
                .ends_with("FROM actions ORDER BY created_at DESC, id LIMIT $1")
        );
        let both = ActionFilter {
            customers: Some(vec![
                "contoso".parse().unwrap(),
                "fabrikam".parse().unwrap(),
            ]),
            state: Some(ActionState::Failed),
            limit: 10,
        };
        assert!(both.sql().ends_with(
            "WHERE customer IN ($1, $2) AND state = $3 ORDER BY created_at DESC, id LIMIT $4"
        ));
        assert_eq!(both.binds(), ["contoso", "fabrikam", "failed"]);
        let none = ActionFilter {
            customers: Some(vec![]),
            limit: 1,
            ..ActionFilter::default()
        };
        assert!(none.sql().contains("WHERE 1 = 0"));
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
