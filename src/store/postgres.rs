//! The PostgreSQL backend, for several killswitch instances sharing one database. Concurrent
//! appends to one chain serialise on its head row (`SELECT … FOR UPDATE`), so chains never fork;
//! plain appends waiting for the same chain share one transaction (`postgres_appends`).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::action_steps::OnSqlx;
use super::audit_sql as sql;
use super::detection_rows::DetectionRow;
use super::detections_sql::{self, TargetUpdate};
use super::domain_sql::{self, ChainTx, CustomerRecord};
use super::onboarding_sql::{self, CustomerSecretRow};
use super::postgres_appends::GroupCommit;
use super::{Backend, Store, StoreOptions};
use crate::audit::append::{Appended, Sealer};
use crate::audit::records::{EntryRecord, HeadRecord};
use crate::domain::ChainId;
use crate::domain::action::{ActionRecord, Admission, Finish, Guard, NewAction};
use crate::domain::detection::DetectionRecord;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};
use crate::time::Timestamp;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const LOCK_HEAD: &str = "SELECT chain, seq, hash FROM audit_heads WHERE chain = $1 FOR UPDATE";

pub struct PgStore {
    pool: PgPool,
    options: StoreOptions,
    appends: GroupCommit,
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
            pool,
            options,
            appends: GroupCommit::default(),
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
pub(super) async fn lock_head(
    conn: &mut PgConnection,
    chain: &ChainId,
) -> Result<Option<HeadRecord>> {
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

impl super::Engine for PgStore {
    type Db = Postgres;

    fn pool(&self) -> &sqlx::Pool<Postgres> {
        &self.pool
    }

    fn sealer(&self) -> Result<Arc<Sealer>> {
        super::sealer(&self.options)
    }

    fn write<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let value = work(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        })
    }

    fn write_statement<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            work(&mut conn).await
        })
    }

    fn append<'a>(
        &'a self,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> BoxFuture<'a, Result<Appended>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            self.appends
                .append(&self.pool, sealer, chain, actor, event)
                .await
        })
    }

    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>> {
        sqlx::query_as::<Postgres, EntryRecord>(sql::SELECT_ENTRY_RANGE)
            .bind(chain)
            .bind(first)
            .bind(last)
            .fetch(&self.pool)
            .map_err(Error::from)
            .boxed()
    }

    fn admit(&self, action: NewAction, guard: Guard) -> BoxFuture<'_, Result<Admission>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            self.write(move |conn| {
                Box::pin(async move {
                    domain_sql::admit(&mut OnSqlx::<Postgres>(conn), &sealer, &action, guard).await
                })
            })
            .await
        })
    }

    fn finish(&self, finish: Finish) -> BoxFuture<'_, Result<ActionRecord>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            self.write(move |conn| {
                Box::pin(async move {
                    domain_sql::finish(&mut OnSqlx::<Postgres>(conn), &sealer, &finish).await
                })
            })
            .await
        })
    }

    fn consume_step(
        &self,
        analyst: uuid::Uuid,
        step: u64,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool>> {
        self.write_statement(move |conn| {
            Box::pin(async move {
                super::analysts_sql::consume_step::<Postgres>(conn, analyst, step, now).await
            })
        })
    }

    fn customer_row<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Option<CustomerRecord>>> {
        Box::pin(async move {
            Ok(
                sqlx::query_as::<Postgres, CustomerRecord>(domain_sql::SELECT_CUSTOMER)
                    .bind(slug)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn customer_secret_rows<'a>(
        &'a self,
        slug: &'a str,
        now: String,
    ) -> BoxFuture<'a, Result<Vec<CustomerSecretRow>>> {
        Box::pin(async move {
            Ok(
                sqlx::query_as::<Postgres, CustomerSecretRow>(
                    onboarding_sql::CUSTOMER_WITH_SECRETS,
                )
                .bind(slug)
                .bind(now)
                .fetch_all(&self.pool)
                .await?,
            )
        })
    }

    fn store_target(&self, update: TargetUpdate) -> BoxFuture<'_, Result<Option<DetectionRow>>> {
        self.write_statement(move |conn| {
            Box::pin(async move { detections_sql::set_target::<Postgres>(conn, update).await })
        })
    }

    fn record_detection<'a>(
        &'a self,
        detection: &'a DetectionRecord,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<(DetectionRecord, bool)>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            let mut tx = self.pool.begin().await?;
            let recorded =
                detections_sql::record::<Postgres>(&mut tx, &sealer, detection, actor).await?;
            tx.commit().await?;
            Ok(recorded)
        })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        super::ping(&self.pool).await
    }
}
