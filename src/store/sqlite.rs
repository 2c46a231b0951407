//! The SQLite backend: one file, WAL, `synchronous=FULL`; all writes go through the group-commit
//! writer, reads through a separate pool (WAL lets them run beside the writer).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection};

use super::analysts_sql::{self, AnalystChange};
use super::audit_sql as sql;
use super::detections_sql;
use super::domain_sql::{self, ChainTx};
use super::onboarding_sql::{self, NewWebhookSecret, WebhookSecretRecord};
use super::reads::{AnalystKey, Reads};
use super::sqlite_writer::{AppendRequest, Then, Writer};
use super::{
    ActionFilter, ActionStore, AnalystStore, AuditStore, CustomerStore, DetectionStore,
    OnboardingStore, SessionRecord,
};
use super::{Backend, Store, StoreOptions};
use crate::audit::append::{Appended, Sealer};
use crate::audit::event::{Actor, AuditEvent};
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::PublicKey;
use crate::auth::analysts::AnalystRecord;
use crate::customers::{Customer, Policy};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::falcon::records::{DetectionFilter, DetectionRecord};
use crate::remediation::action::{ActionRecord, Admission, Finish, Guard, NewAction};
use crate::time::Timestamp;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    reads: Reads<Sqlite>,
    writer: Writer,
    options: StoreOptions,
}

impl SqliteStore {
    pub async fn open(url: &str, options: StoreOptions) -> Result<SqliteStore> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(vec![format!("database.url: {e}")]))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Streams (exports, audit check) read a million rows; a deeper row channel lets the
            // worker thread run ahead instead of handing rows over fifty at a time.
            .row_buffer_size(1024)
            .create_if_missing(options.create_if_missing);
        if options.create_if_missing {
            create_parent_dir(connect.get_filename())?;
            if !is_memory(connect.get_filename()) {
                crate::files::precreate_private_file(connect.get_filename())?;
            }
        }
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer trusts cached chain heads while `PRAGMA data_version` of this one
            // connection is unchanged; it is replaced only after a failed batch, which clears
            // them.
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| open_error(connect.get_filename(), e))?;
        super::migrate_or_check(&MIGRATOR, &write_pool, options.migrate).await?;
        secure_database_files(connect.get_filename())?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.create_if_missing(false))
            .await?;
        Ok(SqliteStore {
            reads: Reads::new(reader),
            writer: Writer::spawn(write_pool, options.sealer.clone()),
            options,
        })
    }

    fn sealer(&self) -> Result<Arc<Sealer>> {
        super::sealer(&self.options)
    }

    /// Runs `work` in the next group-committed write transaction.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        self.writer.run(work).await
    }
}

fn is_memory(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.to_string_lossy().starts_with(":memory:")
}

/// The database and its WAL and shared-memory files hold the audit log and sealed secrets:
/// private to the service's account (SQLite gives new WAL files the database file's mode).
fn secure_database_files(file: &Path) -> Result<()> {
    if is_memory(file) {
        return Ok(());
    }
    crate::files::secure_file(file, "database")?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        crate::files::secure_file(Path::new(&companion), "database")?;
    }
    Ok(())
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            crate::files::create_private_dir(dir).map_err(|e| {
                Error::io(
                    format!("cannot create the database folder {}", dir.display()),
                    e,
                )
            })
        }
        _ => Ok(()),
    }
}

fn open_error(file: &Path, e: sqlx::Error) -> Error {
    Error::DatabaseUnavailable(format!(
        "cannot open SQLite database {}: {}",
        file.display(),
        super::describe(&e)
    ))
}

/// Appends inside the writer's transaction; the transaction already holds SQLite's write lock.
pub(crate) async fn append_in(
    conn: &mut SqliteConnection,
    sealer: &Sealer,
    chain: &ChainId,
    actor: &Actor,
    event: &AuditEvent,
) -> Result<Appended> {
    let head: Option<HeadRecord> = sqlx::query_as(sql::SELECT_HEAD)
        .bind(chain.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let plan = sealer.plan(chain, head.as_ref(), actor, event)?;
    sql::write_plan::<Sqlite>(conn, &plan).await?;
    Ok(plan.appended)
}

impl ChainTx for SqliteConnection {
    fn lock_chain<'a>(
        &'a mut self,
        _chain: &'a ChainId,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        // The writer's BEGIN IMMEDIATE already holds SQLite's one write lock.
        Box::pin(async { Ok(()) })
    }

    fn append<'a>(
        &'a mut self,
        sealer: &'a Sealer,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> futures::future::BoxFuture<'a, Result<Appended>> {
        Box::pin(append_in(self, sealer, chain, actor, event))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        self.reads.ping().await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, chain: &ChainId, actor: &Actor, event: &AuditEvent) -> Result<Appended> {
        self.writer
            .append(chain.clone(), actor.clone(), event.clone())
            .await
    }

    async fn checkpoint(&self, chain: &ChainId) -> Result<Option<CheckpointRecord>> {
        let sealer = self.sealer()?;
        let chain = chain.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let head: Option<HeadRecord> = sqlx::query_as(sql::SELECT_HEAD)
                    .bind(chain.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                let last: Option<i64> = sqlx::query_scalar(sql::LAST_CHECKPOINT_SEQ)
                    .bind(chain.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                let checkpoint = sealer.checkpoint_head(&chain, head.as_ref(), last)?;
                if let Some(cp) = &checkpoint {
                    sql::write_checkpoint::<Sqlite>(conn, cp).await?;
                }
                Ok(checkpoint)
            })
        })
        .await
    }

    async fn register_signing_key(&self, key: &PublicKey) -> Result<bool> {
        let sealer = self.sealer()?;
        let key = key.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let inserted = sqlx::query(sql::INSERT_SIGNING_KEY)
                    .bind(key.key_id.as_str())
                    .bind(key.to_base64())
                    .bind(Timestamp::now().to_string())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                    == 1;
                if inserted {
                    let event = AuditEvent::SigningKeyRegistered {
                        key_id: key.key_id.to_string(),
                        public_key: key.to_base64(),
                    };
                    append_in(conn, &sealer, &ChainId::System, &Actor::Service, &event).await?;
                }
                Ok(inserted)
            })
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<PublicKey>> {
        self.reads.signing_keys().await
    }

    async fn chain_names(&self) -> Result<Vec<String>> {
        self.reads.chain_names().await
    }

    async fn head(&self, chain: &str) -> Result<Option<HeadRecord>> {
        self.reads.head(chain).await
    }

    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>> {
        self.reads.checkpoints(chain).await
    }

    fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>> {
        self.reads.entries(chain)
    }

    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>> {
        self.reads.entry_range(chain, first, last)
    }

    async fn seq_window(
        &self,
        chain: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<(i64, i64)>> {
        self.reads
            .seq_window(chain, &from.to_string(), &to.to_string())
            .await
    }
}

#[async_trait]
impl CustomerStore for SqliteStore {
    async fn add_customer(&self, customer: &Customer, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let (customer, actor) = (customer.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move {
                domain_sql::add_customer::<Sqlite>(conn, &sealer, &customer, &actor).await
            })
        })
        .await
    }

    async fn customer(&self, slug: &CustomerSlug) -> Result<Option<Customer>> {
        self.reads.customer(slug).await
    }

    async fn customers(&self) -> Result<Vec<Customer>> {
        self.reads.customers().await
    }

    async fn update_policy(
        &self,
        customer: &Customer,
        policy: &Policy,
        actor: &Actor,
    ) -> Result<()> {
        let sealer = self.sealer()?;
        let (customer, policy, actor) = (customer.clone(), policy.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move {
                domain_sql::update_policy::<Sqlite>(conn, &sealer, &customer, &policy, &actor).await
            })
        })
        .await
    }
}

#[async_trait]
impl ActionStore for SqliteStore {
    async fn admit_action(&self, action: &NewAction, guard: Guard) -> Result<Admission> {
        let sealer = self.sealer()?;
        let action = action.clone();
        self.write(move |conn| {
            Box::pin(
                async move { domain_sql::admit::<Sqlite>(conn, &sealer, &action, guard).await },
            )
        })
        .await
    }

    async fn finish_action(&self, finish: &Finish) -> Result<bool> {
        let sealer = self.sealer()?;
        let finish = finish.clone();
        // A failed job is rolled back to its savepoint, taking the appended entry with it.
        let done = self
            .write(move |conn| {
                Box::pin(async move { domain_sql::finish::<Sqlite>(conn, &sealer, &finish).await })
            })
            .await;
        super::superseded_is_false(done)
    }

    async fn action(&self, id: uuid::Uuid) -> Result<Option<ActionRecord>> {
        self.reads.action(id).await
    }

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>> {
        self.reads.actions(filter).await
    }

    async fn action_by_key(
        &self,
        customer: &CustomerSlug,
        key: &str,
    ) -> Result<Option<ActionRecord>> {
        self.reads.action_by_key(customer, key).await
    }

    async fn stale_actions(&self, now: Timestamp) -> Result<Vec<ActionRecord>> {
        self.reads.stale_actions(now).await
    }

    async fn claim_action(&self, action: &ActionRecord, lease_until: Timestamp) -> Result<bool> {
        let (id, old) = (action.id.to_string(), action.lease_until.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(domain_sql::CLAIM_ACTION)
                    .bind(id)
                    .bind(old)
                    .bind(lease_until.to_string())
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }
}

#[async_trait]
impl AnalystStore for SqliteStore {
    async fn add_analyst(&self, record: &AnalystRecord, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let (record, actor) = (record.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(
                async move { analysts_sql::add::<Sqlite>(conn, &sealer, &record, &actor).await },
            )
        })
        .await
    }

    async fn update_analyst(
        &self,
        id: uuid::Uuid,
        change: &AnalystChange,
        actor: &Actor,
    ) -> Result<()> {
        let sealer = self.sealer()?;
        let (change, actor) = (change.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move {
                analysts_sql::update::<Sqlite>(conn, &sealer, id, &change, &actor).await
            })
        })
        .await
    }

    async fn analyst(&self, id: uuid::Uuid) -> Result<Option<AnalystRecord>> {
        self.reads
            .analyst_where(AnalystKey::Id, &id.to_string())
            .await
    }

    async fn analyst_by_email(&self, email: &str) -> Result<Option<AnalystRecord>> {
        self.reads.analyst_where(AnalystKey::Email, email).await
    }

    async fn analyst_by_token(&self, token_hash: &str) -> Result<Option<AnalystRecord>> {
        self.reads
            .analyst_where(AnalystKey::TokenHash, token_hash)
            .await
    }

    async fn analysts(&self) -> Result<Vec<AnalystRecord>> {
        self.reads.analysts().await
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let session = session.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(super::INSERT_SESSION)
                    .bind(session.id_hash)
                    .bind(session.analyst_id)
                    .bind(session.csrf_token)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>> {
        self.reads.session(id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(super::DELETE_SESSION)
                    .bind(id_hash)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn consume_otp_step(&self, id: uuid::Uuid, step: u64, now: Timestamp) -> Result<bool> {
        self.write(move |conn| {
            Box::pin(async move { analysts_sql::consume_step::<Sqlite>(conn, id, step, now).await })
        })
        .await
    }

    async fn record_otp_failure(
        &self,
        failure: &analysts_sql::OtpFailureRecord,
    ) -> Result<analysts_sql::OtpFailureCount> {
        let sealer = self.sealer()?;
        let failure = failure.clone();
        self.write(move |conn| {
            Box::pin(
                async move { analysts_sql::otp_failed::<Sqlite>(conn, &sealer, &failure).await },
            )
        })
        .await
    }
}

#[async_trait]
impl OnboardingStore for SqliteStore {
    async fn create_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        expires: Timestamp,
    ) -> Result<()> {
        let (nonce, customer) = (nonce.to_owned(), customer.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(onboarding_sql::INSERT_CONSENT_STATE)
                    .bind(nonce)
                    .bind(customer)
                    .bind(Timestamp::now().to_string())
                    .bind(expires.to_string())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn use_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<bool> {
        let (nonce, customer) = (nonce.to_owned(), customer.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let used: Option<(String,)> = sqlx::query_as(onboarding_sql::USE_CONSENT_STATE)
                    .bind(nonce)
                    .bind(customer)
                    .bind(now.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(used.is_some())
            })
        })
        .await
    }

    async fn record_connection_check(
        &self,
        customer: &CustomerSlug,
        ready: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let (customer, detail) = (customer.to_string(), detail.to_owned());
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(onboarding_sql::RECORD_CONNECTION)
                    .bind(customer)
                    .bind(ready)
                    .bind(detail)
                    .bind(now.to_string())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn add_webhook_secret(&self, new: &NewWebhookSecret) -> Result<bool> {
        let sealer = self.sealer()?;
        let new = new.clone();
        self.write(move |conn| {
            Box::pin(async move {
                onboarding_sql::add_webhook_secret::<Sqlite>(conn, &sealer, &new).await
            })
        })
        .await
    }

    async fn reseal(&self, reseal: &onboarding_sql::Reseal) -> Result<(u64, u64)> {
        let sealer = self.sealer()?;
        let reseal = reseal.clone();
        self.write(move |conn| {
            Box::pin(async move { onboarding_sql::reseal::<Sqlite>(conn, &sealer, &reseal).await })
        })
        .await
    }

    async fn customer_with_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Option<(Customer, Vec<WebhookSecretRecord>)>> {
        self.reads.customer_with_secrets(customer, now).await
    }

    async fn webhook_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecretRecord>> {
        self.reads.webhook_secrets(customer, now).await
    }
}

#[async_trait]
impl DetectionStore for SqliteStore {
    async fn record_detection(
        &self,
        detection: &DetectionRecord,
        actor: &Actor,
    ) -> Result<(DetectionRecord, bool)> {
        self.sealer()?;
        let (chain, event) = detections_sql::received(detection);
        let (detection, actor) = (detection.clone(), actor.clone());
        // One statement and an entry sealed with the batch's other appends: a burst of
        // detections costs a statement each, not a savepoint and five statements each.
        self.writer
            .single(move |conn| {
                Box::pin(async move {
                    if detections_sql::insert_new::<Sqlite>(conn, &detection).await? {
                        Ok(Then::Append {
                            audit: Box::new(AppendRequest {
                                chain,
                                actor,
                                event,
                            }),
                            value: (detection, true),
                        })
                    } else {
                        let existing = detections_sql::existing::<Sqlite>(conn, &detection).await?;
                        Ok(Then::Done((existing, false)))
                    }
                })
            })
            .await
    }

    async fn set_detection_target(
        &self,
        id: uuid::Uuid,
        target_id: Option<&str>,
        target_upn: Option<&str>,
        pending_reason: Option<&str>,
    ) -> Result<()> {
        let values = (
            id.to_string(),
            target_id.map(str::to_owned),
            target_upn.map(str::to_owned),
            pending_reason.map(str::to_owned),
        );
        self.writer
            .single(move |conn| {
                Box::pin(async move {
                    sqlx::query(detections_sql::SET_TARGET)
                        .bind(values.0)
                        .bind(values.1)
                        .bind(values.2)
                        .bind(values.3)
                        .execute(&mut *conn)
                        .await?;
                    Ok(Then::Done(()))
                })
            })
            .await
    }

    async fn decide_detection(&self, decision: &detections_sql::Decision) -> Result<bool> {
        let sealer = self.sealer()?;
        let decision = decision.clone();
        self.write(move |conn| {
            Box::pin(
                async move { detections_sql::decide::<Sqlite>(conn, &sealer, &decision).await },
            )
        })
        .await
    }

    async fn detection(&self, id: uuid::Uuid) -> Result<Option<DetectionRecord>> {
        self.reads.detection(id).await
    }

    async fn detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>> {
        self.reads.detections(filter).await
    }

    async fn pending_detections(&self) -> Result<i64> {
        self.reads.pending_detections().await
    }
}
