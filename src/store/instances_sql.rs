//! The instance registry, once for both backends: runs register, beat and stop. Bookkeeping,
//! not history: nothing here is audited (the actions a run takes over are).

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::engine::{Conn, Engine, Row};
use crate::domain::instance::{InstanceRun, Takeover};
use crate::error::Result;
use crate::time::Timestamp;

#[async_trait]
pub trait InstanceStore: Send + Sync {
    /// Registers `run` as its instance's current run; an earlier run under the same name is
    /// gone from now on.
    async fn register_run(&self, run: &InstanceRun) -> Result<()>;

    /// Records that `run` is alive at `now`; `false` when its instance registered a newer run
    /// (two processes configured with one `instance.id`) or the run was marked stopped.
    async fn heartbeat(&self, run: uuid::Uuid, now: Timestamp) -> Result<bool>;

    /// Marks `run` stopped: its unfinished work (none, after a graceful stop) is free at once.
    async fn stop_run(&self, run: uuid::Uuid, now: Timestamp) -> Result<()>;

    /// Forgets instances silent since before `before` (names that will not come back, such as
    /// replaced pods). Work a forgotten run left counts as a gone run's.
    async fn forget_instances(&self, before: Timestamp) -> Result<()>;
}

const REGISTER: &str = "INSERT INTO instances (id, run_id, started_at, heartbeat_at, stopped_at) \
     VALUES ($1, $2, $3, $3, NULL) ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, \
     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL";
const HEARTBEAT: &str = "UPDATE instances SET heartbeat_at = $2 \
     WHERE run_id = $1 AND stopped_at IS NULL RETURNING id";
const STOP: &str = "UPDATE instances SET stopped_at = $2 WHERE run_id = $1";
const FORGET: &str = "DELETE FROM instances WHERE heartbeat_at < $1";

/// The values of a takeover query's `$1` (the lease's end), `$2` (the oldest heartbeat that
/// still counts) and `$3` (the asking run, '' for none), as [`run_gone`] and the queries using
/// it expect them.
pub fn takeover_binds(takeover: &Takeover) -> (String, String, String) {
    (
        takeover.lease_ended_before.to_string(),
        takeover.alive_since.to_string(),
        takeover.mine.map(|m| m.to_string()).unwrap_or_default(),
    )
}

/// The condition, on a column holding a run id (`owner`), that the run is gone: `$alive` is
/// the oldest heartbeat that still counts, `$mine` the asking run (never gone to itself).
pub fn run_gone(owner: &str, alive: &str, mine: &str) -> String {
    format!(
        "({owner} IS NOT NULL AND {owner} <> {mine} AND NOT EXISTS (SELECT 1 FROM instances i \
         WHERE i.run_id = {owner} AND i.stopped_at IS NULL AND i.heartbeat_at >= {alive}))"
    )
}

#[async_trait]
impl<E> InstanceStore for E
where
    E: Engine,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (String,): FromRow<'r, Row<E>>,
{
    async fn register_run(&self, run: &InstanceRun) -> Result<()> {
        let values = (
            run.instance.clone(),
            run.run.to_string(),
            run.started_at.to_string(),
        );
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(REGISTER)
                    .bind(values.0)
                    .bind(values.1)
                    .bind(values.2)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn heartbeat(&self, run: uuid::Uuid, now: Timestamp) -> Result<bool> {
        let (run, now) = (run.to_string(), now.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                let beat = sqlx::query_as::<E::Db, (String,)>(HEARTBEAT)
                    .bind(run)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(beat.is_some())
            })
        })
        .await
    }

    async fn forget_instances(&self, before: Timestamp) -> Result<()> {
        let before = before.to_string();
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(FORGET)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn stop_run(&self, run: uuid::Uuid, now: Timestamp) -> Result<()> {
        let (run, now) = (run.to_string(), now.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(STOP)
                    .bind(run)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
