//! The PostgreSQL backend, for several killswitch instances sharing one database. Concurrent
//! appends to one chain serialise on its head row (`SELECT … FOR UPDATE`), so chains never fork.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::audit_sql as sql;
use super::{Backend, Store, StoreOptions};
use crate::audit::append::{Appended, Sealer};
use crate::audit::event::{Actor, AuditEvent};
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::PublicKey;
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::time::Timestamp;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const LOCK_HEAD: &str = "SELECT chain, seq, hash FROM audit_heads WHERE chain = $1 FOR UPDATE";

pub struct PgStore {
    pool: PgPool,
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
        Ok(PgStore { pool, options })
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

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

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
        let rows: Vec<(String, String)> = sqlx::query_as(sql::SELECT_SIGNING_KEYS)
            .fetch_all(&self.pool)
            .await?;
        super::parse_signing_keys(rows)
    }

    async fn chain_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql::CHAIN_NAMES)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn head(&self, chain: &str) -> Result<Option<HeadRecord>> {
        Ok(sqlx::query_as(sql::SELECT_HEAD)
            .bind(chain)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>> {
        Ok(sqlx::query_as(sql::SELECT_CHECKPOINTS)
            .bind(chain)
            .fetch_all(&self.pool)
            .await?)
    }

    fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>> {
        sqlx::query_as(sql::SELECT_ENTRIES)
            .bind(chain)
            .fetch(&self.pool)
            .map_err(Error::from)
            .boxed()
    }
}
