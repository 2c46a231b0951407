//! The PostgreSQL backend, for several killswitch instances sharing one database. Concurrent
//! appends to one chain serialise on its head row (`SELECT … FOR UPDATE`), so chains never fork.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::analysts_sql::{self, AnalystChange};
use super::audit_sql as sql;
use super::detections_sql;
use super::domain_sql::{self, ChainTx};
use super::onboarding_sql::{self, NewWebhookSecret, WebhookSecretRecord};
use super::reads::{AnalystKey, Reads};
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

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const LOCK_HEAD: &str = "SELECT chain, seq, hash FROM audit_heads WHERE chain = $1 FOR UPDATE";

pub struct PgStore {
    pool: PgPool,
    reads: Reads<Postgres>,
    options: StoreOptions,
}

impl PgStore {
    pub async fn open(url: &str, options: StoreOptions) -> Result<PgStore> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::Config(vec![format!("database.url: {e}")]))?;
        // One direct connection first: the pool would only report a timeout, hiding the cause
        // (refused, unknown host, bad password) that the operator needs to see.
        let unreachable = |e: String| {
            Error::DatabaseUnavailable(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                super::redact_url(url)
            ))
        };
        let probe = tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", options.acquire_timeout)))?
        .map_err(|e| unreachable(super::describe(&e)))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| unreachable(super::describe(&e)))?;
        super::migrate_or_check(&MIGRATOR, &pool, options.migrate).await?;
        Ok(PgStore {
            reads: Reads::new(pool.clone()),
            pool,
            options,
        })
    }

    fn sealer(&self) -> Result<Arc<Sealer>> {
        super::sealer(&self.options)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Locks the head row of `chain` for the rest of the transaction, creating it on first use.
async fn lock_head(conn: &mut PgConnection, chain: &ChainId) -> Result<Option<HeadRecord>> {
    let head = sqlx::query_as(LOCK_HEAD)
        .bind(chain.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if head.is_some() {
        return Ok(head);
    }
    // First entry of this chain: create the row (racing creators both end up on the same one).
    sqlx::query(sql::ENSURE_HEAD)
        .bind(chain.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_as(LOCK_HEAD)
        .bind(chain.as_str())
        .fetch_optional(&mut *conn)
        .await?)
}

/// Appends inside a transaction the caller owns (so domain rows and their audit entry commit
/// together).
pub(crate) async fn append_in(
    conn: &mut PgConnection,
    sealer: &Sealer,
    chain: &ChainId,
    actor: &Actor,
    event: &AuditEvent,
) -> Result<Appended> {
    let head = lock_head(conn, chain).await?;
    let plan = sealer.plan(chain, head.as_ref(), actor, event)?;
    sql::write_plan::<Postgres>(conn, &plan).await?;
    Ok(plan.appended)
}

impl ChainTx for PgConnection {
    fn lock_chain<'a>(
        &'a mut self,
        chain: &'a ChainId,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move { lock_head(self, chain).await.map(|_| ()) })
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
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        self.reads.ping().await
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append(&self, chain: &ChainId, actor: &Actor, event: &AuditEvent) -> Result<Appended> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let appended = append_in(&mut tx, &sealer, chain, actor, event).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn checkpoint(&self, chain: &ChainId) -> Result<Option<CheckpointRecord>> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let head = lock_head(&mut tx, chain).await?;
        let last: Option<i64> = sqlx::query_scalar(sql::LAST_CHECKPOINT_SEQ)
            .bind(chain.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let checkpoint = sealer.checkpoint_head(chain, head.as_ref(), last)?;
        if let Some(cp) = &checkpoint {
            sql::write_checkpoint::<Postgres>(&mut tx, cp).await?;
        }
        tx.commit().await?;
        Ok(checkpoint)
    }

    async fn register_signing_key(&self, key: &PublicKey) -> Result<bool> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sql::INSERT_SIGNING_KEY)
            .bind(key.key_id.as_str())
            .bind(key.to_base64())
            .bind(Timestamp::now().to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if inserted {
            let event = AuditEvent::SigningKeyRegistered {
                key_id: key.key_id.to_string(),
                public_key: key.to_base64(),
            };
            append_in(&mut tx, &sealer, &ChainId::System, &Actor::Service, &event).await?;
        }
        tx.commit().await?;
        Ok(inserted)
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
impl CustomerStore for PgStore {
    async fn add_customer(&self, customer: &Customer, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let value = domain_sql::add_customer::<Postgres>(&mut tx, &sealer, customer, actor).await?;
        tx.commit().await?;
        Ok(value)
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
        let mut tx = self.pool.begin().await?;
        let value =
            domain_sql::update_policy::<Postgres>(&mut tx, &sealer, customer, policy, actor)
                .await?;
        tx.commit().await?;
        Ok(value)
    }
}

#[async_trait]
impl ActionStore for PgStore {
    async fn admit_action(&self, action: &NewAction, guard: Guard) -> Result<Admission> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let value = domain_sql::admit::<Postgres>(&mut tx, &sealer, action, guard).await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn finish_action(&self, finish: &Finish) -> Result<bool> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        // Dropping the transaction on Superseded rolls back the appended entry.
        let done = domain_sql::finish::<Postgres>(&mut tx, &sealer, finish).await;
        if done.is_ok() {
            tx.commit().await?;
        }
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
        let done = sqlx::query(domain_sql::CLAIM_ACTION)
            .bind(action.id.to_string())
            .bind(action.lease_until.to_string())
            .bind(lease_until.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl AnalystStore for PgStore {
    async fn add_analyst(&self, record: &AnalystRecord, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        analysts_sql::add::<Postgres>(&mut tx, &sealer, record, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_analyst(
        &self,
        id: uuid::Uuid,
        change: &AnalystChange,
        actor: &Actor,
    ) -> Result<()> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        analysts_sql::update::<Postgres>(&mut tx, &sealer, id, change, actor).await?;
        tx.commit().await?;
        Ok(())
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
        sqlx::query(super::INSERT_SESSION)
            .bind(session.id_hash.as_str())
            .bind(session.analyst_id.as_str())
            .bind(session.csrf_token.as_str())
            .bind(session.created_at.as_str())
            .bind(session.expires_at.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>> {
        self.reads.session(id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query(super::DELETE_SESSION)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn consume_otp_step(&self, id: uuid::Uuid, step: u64, now: Timestamp) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        analysts_sql::consume_step::<Postgres>(&mut conn, id, step, now).await
    }

    async fn record_otp_failure(
        &self,
        failure: &analysts_sql::OtpFailureRecord,
    ) -> Result<analysts_sql::OtpFailureCount> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let counted = analysts_sql::otp_failed::<Postgres>(&mut tx, &sealer, failure).await?;
        tx.commit().await?;
        Ok(counted)
    }
}

#[async_trait]
impl OnboardingStore for PgStore {
    async fn create_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        expires: Timestamp,
    ) -> Result<()> {
        sqlx::query(onboarding_sql::INSERT_CONSENT_STATE)
            .bind(nonce)
            .bind(customer.as_str())
            .bind(Timestamp::now().to_string())
            .bind(expires.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn use_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<bool> {
        let used: Option<(String,)> = sqlx::query_as(onboarding_sql::USE_CONSENT_STATE)
            .bind(nonce)
            .bind(customer.as_str())
            .bind(now.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(used.is_some())
    }

    async fn record_connection_check(
        &self,
        customer: &CustomerSlug,
        ready: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(onboarding_sql::RECORD_CONNECTION)
            .bind(customer.as_str())
            .bind(ready)
            .bind(detail)
            .bind(now.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_webhook_secret(&self, new: &NewWebhookSecret) -> Result<bool> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let rotated = onboarding_sql::add_webhook_secret::<Postgres>(&mut tx, &sealer, new).await?;
        tx.commit().await?;
        Ok(rotated)
    }

    async fn reseal(&self, reseal: &onboarding_sql::Reseal) -> Result<(u64, u64)> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let counts = onboarding_sql::reseal::<Postgres>(&mut tx, &sealer, reseal).await?;
        tx.commit().await?;
        Ok(counts)
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
impl DetectionStore for PgStore {
    async fn record_detection(
        &self,
        detection: &DetectionRecord,
        actor: &Actor,
    ) -> Result<(DetectionRecord, bool)> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let recorded =
            detections_sql::record::<Postgres>(&mut tx, &sealer, detection, actor).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn set_detection_target(
        &self,
        id: uuid::Uuid,
        target_id: Option<&str>,
        target_upn: Option<&str>,
        pending_reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(detections_sql::SET_TARGET)
            .bind(id.to_string())
            .bind(target_id)
            .bind(target_upn)
            .bind(pending_reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn decide_detection(&self, decision: &detections_sql::Decision) -> Result<bool> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await?;
        let decided = detections_sql::decide::<Postgres>(&mut tx, &sealer, decision).await?;
        tx.commit().await?;
        Ok(decided)
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
