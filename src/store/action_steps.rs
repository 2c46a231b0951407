//! The statements an action's admission and outcome run, one method each, so the steps built
//! from them (`domain_sql::admit` and `finish`, `detections_sql::claim` and `decide`) are
//! written once for both kinds of connection they run on: sqlx's (PostgreSQL, and SQLite's
//! writer for other work) and the SQLite writer's plain connection (`sqlite_actions`). Each
//! statement's SQL text is here, shared by both.

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::action_rows::{ACTION_COLUMNS, ActionRow};
use super::domain_sql::ChainTx;
use crate::audit::append::{Appended, Sealer};
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};

/// What the admission and the outcome ask of the transaction they run in.
#[async_trait]
pub(crate) trait ActionStatements: Send {
    /// Holds the chain's head until the transaction ends (see [`ChainTx::lock_chain`]).
    async fn lock_chain(&mut self, chain: &ChainId) -> Result<()>;
    /// Appends an entry in the transaction.
    async fn append(
        &mut self,
        sealer: &Sealer,
        chain: &ChainId,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<Appended>;
    /// The action a customer's idempotency key names ([`action_by_key_sql`]).
    async fn action_by_key(&mut self, customer: &str, key: &str) -> Result<Option<ActionRow>>;
    /// How many actions of the customer, not denied, were requested after `since`.
    async fn recent_actions(&mut self, customer: &str, since: &str) -> Result<i64>;
    /// Inserts an action; [`Error::Conflict`] when its idempotency key is taken.
    async fn insert_action(&mut self, row: &ActionRow, owner_run: Option<String>) -> Result<()>;
    /// Writes an outcome unless one is recorded; the row as stored with it.
    async fn finish_action(&mut self, outcome: &OutcomeUpdate) -> Result<Option<ActionRow>>;
    /// Stores the account a pending detection was matched to ([`SET_TARGET`], no reason).
    async fn set_target(&mut self, detection: &str, target_id: &str, upn: &str) -> Result<()>;
    /// Moves a detection from pending to a decision; `false` when it was not pending.
    async fn decide_detection(&mut self, decision: &DecisionUpdate) -> Result<bool>;
    /// A detection's state as stored.
    async fn detection_state(&mut self, id: &str) -> Result<String>;
}

pub(crate) use super::detections_sql::SET_TARGET;

pub const RECENT_ACTIONS: &str =
    "SELECT COUNT(*) FROM actions WHERE customer = $1 AND created_at > $2 AND state <> 'denied'";
pub const DECIDE_DETECTION: &str = "UPDATE detections SET state = $2, action_id = COALESCE($3, action_id), \
     decided_by = $4, decided_at = $5, decision_reason = $6 \
     WHERE id = $1 AND customer = $7 AND state = 'pending' RETURNING id";
pub const DETECTION_STATE: &str = "SELECT state FROM detections WHERE id = $1";

pub fn action_by_key_sql() -> String {
    format!("SELECT {ACTION_COLUMNS} FROM actions WHERE customer = $1 AND idempotency_key = $2")
}

/// The action's columns and `owner_run`, `$1`…`$25` in order.
pub fn insert_action_sql() -> String {
    format!(
        "INSERT INTO actions ({ACTION_COLUMNS}, owner_run) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
    )
}

/// The condition on `finished_at` is what makes the outcome one: whoever updates the row first
/// keeps its entry; a late second finisher rolls back its own. The row comes back with the
/// update: the caller answers with it, no read after.
pub fn finish_action_sql() -> String {
    format!(
        "UPDATE actions SET state = $2, detail = $3, warnings = $4, graph = $5, before_state = $6, after_state = $7, \
         target_id = COALESCE($8, target_id), finished_at = $9, duration_ms = $10, outcome_seq = $11, \
         denial = $12 WHERE id = $1 AND finished_at IS NULL RETURNING {ACTION_COLUMNS}"
    )
}

/// An outcome's columns, as [`finish_action_sql`] binds them (`$1`…`$12`).
pub struct OutcomeUpdate {
    pub id: String,
    pub state: &'static str,
    pub detail: Option<String>,
    pub warnings: Option<String>,
    pub graph: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub target_id: Option<String>,
    pub finished_at: String,
    pub duration_ms: i64,
    pub outcome_seq: i64,
    pub denial: Option<&'static str>,
}

/// A decision's columns, as [`DECIDE_DETECTION`] binds them (`$1`…`$7`).
pub struct DecisionUpdate {
    pub id: String,
    pub state: &'static str,
    pub action_id: Option<String>,
    pub decided_by: String,
    pub decided_at: String,
    pub reason: Option<String>,
    pub customer: String,
}

/// A sqlx connection inside a write transaction.
pub(crate) struct OnSqlx<'c, DB: Database>(pub &'c mut DB::Connection);

#[async_trait]
impl<DB> ActionStatements for OnSqlx<'_, DB>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'r> ActionRow: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    async fn lock_chain(&mut self, chain: &ChainId) -> Result<()> {
        self.0.lock_chain(chain).await
    }

    async fn append(
        &mut self,
        sealer: &Sealer,
        chain: &ChainId,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<Appended> {
        self.0.append(sealer, chain, actor, event).await
    }

    async fn action_by_key(&mut self, customer: &str, key: &str) -> Result<Option<ActionRow>> {
        Ok(
            sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(action_by_key_sql()))
                .bind(customer)
                .bind(key)
                .fetch_optional(&mut *self.0)
                .await?,
        )
    }

    async fn recent_actions(&mut self, customer: &str, since: &str) -> Result<i64> {
        let (recent,) = sqlx::query_as::<DB, (i64,)>(RECENT_ACTIONS)
            .bind(customer)
            .bind(since)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(recent)
    }

    async fn insert_action(&mut self, r: &ActionRow, owner_run: Option<String>) -> Result<()> {
        let inserted = sqlx::query::<DB>(sqlx::AssertSqlSafe(insert_action_sql()))
            .bind(r.id.as_str())
            .bind(r.customer.as_str())
            .bind(r.operation.as_str())
            .bind(r.account.as_str())
            .bind(r.target_id.as_deref())
            .bind(r.state.as_str())
            .bind(r.reason.as_str())
            .bind(r.ticket.as_deref())
            .bind(r.revoke_sessions)
            .bind(r.idempotency_key.as_deref())
            .bind(r.request_hash.as_str())
            .bind(r.actor.as_str())
            .bind(r.detail.as_deref())
            .bind(r.warnings.as_deref())
            .bind(r.graph.as_deref())
            .bind(r.before_state.as_deref())
            .bind(r.after_state.as_deref())
            .bind(r.requested_seq)
            .bind(r.outcome_seq)
            .bind(r.created_at.as_str())
            .bind(r.lease_until.as_str())
            .bind(r.finished_at.as_deref())
            .bind(r.duration_ms)
            .bind(r.denial.as_deref())
            .bind(owner_run)
            .execute(&mut *self.0)
            .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(key_taken()),
            other => other.map(|_| ()).map_err(Error::from),
        }
    }

    async fn finish_action(&mut self, o: &OutcomeUpdate) -> Result<Option<ActionRow>> {
        Ok(
            sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(finish_action_sql()))
                .bind(o.id.as_str())
                .bind(o.state)
                .bind(o.detail.as_deref())
                .bind(o.warnings.as_deref())
                .bind(o.graph.as_deref())
                .bind(o.before.as_deref())
                .bind(o.after.as_deref())
                .bind(o.target_id.as_deref())
                .bind(o.finished_at.as_str())
                .bind(o.duration_ms)
                .bind(o.outcome_seq)
                .bind(o.denial)
                .fetch_optional(&mut *self.0)
                .await?,
        )
    }

    async fn set_target(&mut self, detection: &str, target_id: &str, upn: &str) -> Result<()> {
        sqlx::query::<DB>(SET_TARGET)
            .bind(detection)
            .bind(target_id)
            .bind(upn)
            .bind(None::<&str>)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn decide_detection(&mut self, d: &DecisionUpdate) -> Result<bool> {
        let updated = sqlx::query_as::<DB, (String,)>(DECIDE_DETECTION)
            .bind(d.id.as_str())
            .bind(d.state)
            .bind(d.action_id.as_deref())
            .bind(d.decided_by.as_str())
            .bind(d.decided_at.as_str())
            .bind(d.reason.as_deref())
            .bind(d.customer.as_str())
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(updated.is_some())
    }

    async fn detection_state(&mut self, id: &str) -> Result<String> {
        let (state,) = sqlx::query_as::<DB, (String,)>(DETECTION_STATE)
            .bind(id)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(state)
    }
}

/// An idempotency key another request is recording right now.
pub fn key_taken() -> Error {
    Error::Conflict("an action with this idempotency key is being recorded".to_owned())
}
