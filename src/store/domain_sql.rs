//! Customer and action writes, written once for both backends.
//!
//! Each function runs inside a transaction the backend opened (SQLite: the group-commit
//! writer's `BEGIN IMMEDIATE`; PostgreSQL: a pool transaction) and appends its audit entry in
//! that same transaction through [`ChainTx`], so a row and the entry that records it commit
//! together or not at all.

use super::ActionFilter;
use crate::domain::CustomerSlug;
use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::engine::{Conn, Engine, Row};

use crate::audit::append::{Appended, Sealer};
use crate::domain::ChainId;
use crate::domain::action::{
    ActionRecord, ActionState, Admission, Denial, Finish, Guard, NewAction,
};
use crate::domain::customer::{Connection, Customer, Policy};
use crate::domain::event::{Actor, AuditEvent, Outcome};
use crate::domain::instance::Takeover;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// What a backend's transaction offers the shared code: serialising writers of one chain, and
/// appending to it.
pub trait ChainTx: Send {
    /// Holds the chain's head until the transaction ends, so checks made now (rate limits,
    /// idempotency keys) still hold when the entry is written.
    fn lock_chain<'a>(&'a mut self, chain: &'a ChainId) -> BoxFuture<'a, Result<()>>;
    fn append<'a>(
        &'a mut self,
        sealer: &'a Sealer,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> BoxFuture<'a, Result<Appended>>;
}

pub use super::action_rows::ACTION_COLUMNS;
use super::action_rows::ActionRow;
use super::action_steps::{ActionStatements, OutcomeUpdate};

/// Remediation actions: admission with its guard rails, the one outcome, and reconciliation.
#[async_trait]
pub trait ActionStore: Send + Sync {
    /// Records a request and applies the guard rails, in one transaction with its audit entry.
    async fn admit_action(&self, action: &NewAction, guard: Guard) -> Result<Admission>;

    /// Records the one outcome of an action and returns the action as stored with it; `None`
    /// when it already had one.
    async fn finish_action_stored(&self, finish: &Finish) -> Result<Option<ActionRecord>>;

    /// Records the one outcome of an action; `false` when it already had one.
    async fn finish_action(&self, finish: &Finish) -> Result<bool> {
        Ok(self.finish_action_stored(finish).await?.is_some())
    }

    async fn action(&self, id: uuid::Uuid) -> Result<Option<ActionRecord>>;

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>>;

    /// The action an idempotency key names for a customer.
    async fn action_by_key(
        &self,
        customer: &CustomerSlug,
        key: &str,
    ) -> Result<Option<ActionRecord>>;

    /// Actions without an outcome that `takeover` allows to be taken over: their lease ran out,
    /// or the run executing them is gone. Earliest lease (so, roughly, oldest) first.
    async fn stale_actions(&self, takeover: &Takeover) -> Result<Vec<ActionRecord>>;

    /// Takes over a stale action for `owner` until `lease_until`; `false` when another process
    /// took it first.
    async fn claim_action(
        &self,
        action: &ActionRecord,
        lease_until: Timestamp,
        owner: Option<uuid::Uuid>,
    ) -> Result<bool>;
}

/// Customers and their guard-rail policies.
#[async_trait]
pub trait CustomerStore: Send + Sync {
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
}

#[async_trait]
impl<E> CustomerStore for E
where
    E: Engine,
    Conn<E>: ChainTx,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    for<'c> &'c Pool<E::Db>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> &'t str: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> CustomerRecord: FromRow<'r, Row<E>>,
{
    async fn add_customer(&self, customer: &Customer, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let (customer, actor) = (customer.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move { add_customer::<E::Db>(conn, &sealer, &customer, &actor).await })
        })
        .await
    }

    async fn customer(&self, slug: &CustomerSlug) -> Result<Option<Customer>> {
        let row = self.customer_row(slug.as_str()).await?;
        row.map(CustomerRecord::parse).transpose()
    }

    async fn customers(&self) -> Result<Vec<Customer>> {
        let rows = sqlx::query_as::<E::Db, CustomerRecord>(SELECT_CUSTOMERS)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(CustomerRecord::parse).collect()
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
                update_policy::<E::Db>(conn, &sealer, &customer, &policy, &actor).await
            })
        })
        .await
    }
}

#[async_trait]
impl<E> ActionStore for E
where
    E: Engine,
    Conn<E>: ChainTx,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    for<'c> &'c Pool<E::Db>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> &'t str: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<&'t str>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<String>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> i64: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<i64>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> bool: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (i64,): FromRow<'r, Row<E>>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> ActionRow: FromRow<'r, Row<E>>,
{
    async fn admit_action(&self, action: &NewAction, guard: Guard) -> Result<Admission> {
        Engine::admit(self, action.clone(), guard).await
    }

    async fn finish_action_stored(&self, finish: &Finish) -> Result<Option<ActionRecord>> {
        // A superseded finish fails its transaction, taking the appended entry with it.
        super::superseded_is_none(Engine::finish(self, finish.clone()).await)
    }

    async fn action(&self, id: uuid::Uuid) -> Result<Option<ActionRecord>> {
        sqlx::query_as::<E::Db, ActionRow>(sqlx::AssertSqlSafe(select_action_sql()))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .map(ActionRecord::try_from)
            .transpose()
    }

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>> {
        let rows: Vec<ActionRow> = filter
            .listing()
            .fetch(self.pool(), ActionFilter::TIME_COLUMN, filter.limit)
            .await?;
        rows.into_iter().map(ActionRecord::try_from).collect()
    }

    async fn action_by_key(
        &self,
        customer: &CustomerSlug,
        key: &str,
    ) -> Result<Option<ActionRecord>> {
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE customer = $1 AND idempotency_key = $2"
        );
        sqlx::query_as::<E::Db, ActionRow>(sqlx::AssertSqlSafe(sql))
            .bind(customer.as_str())
            .bind(key)
            .fetch_optional(self.pool())
            .await?
            .map(ActionRecord::try_from)
            .transpose()
    }

    async fn stale_actions(&self, takeover: &Takeover) -> Result<Vec<ActionRecord>> {
        let (lease_ended, alive_since, mine) = super::instances_sql::takeover_binds(takeover);
        let rows = sqlx::query_as::<E::Db, ActionRow>(sqlx::AssertSqlSafe(stale_actions_sql()))
            .bind(lease_ended)
            .bind(alive_since)
            .bind(mine)
            .fetch_all(self.pool())
            .await?;
        // One unreadable row must not keep every other interrupted action from its outcome.
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                ActionRecord::try_from(row)
                    .inspect_err(|e| tracing::error!(error = %e, "an interrupted action cannot be read; it is left for an operator"))
                    .ok()
            })
            .collect())
    }

    async fn claim_action(
        &self,
        action: &ActionRecord,
        lease_until: Timestamp,
        owner: Option<uuid::Uuid>,
    ) -> Result<bool> {
        let (id, old) = (action.id.to_string(), action.lease_until.to_string());
        let owner = owner.map(|o| o.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                let claimed = sqlx::query_as::<E::Db, (String,)>(CLAIM_ACTION)
                    .bind(id)
                    .bind(old)
                    .bind(lease_until.to_string())
                    .bind(owner)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(claimed.is_some())
            })
        })
        .await
    }
}

/// A customer row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRecord {
    pub slug: String,
    pub name: String,
    pub domain: String,
    pub tenant_id: String,
    pub policy: String,
    pub created_at: String,
    pub connection_ready: Option<bool>,
    pub connection_detail: Option<String>,
    pub connection_checked_at: Option<String>,
    pub connection_ok_at: Option<String>,
}

impl CustomerRecord {
    pub fn parse(self) -> Result<Customer> {
        let corrupt = |what: &str| {
            Error::Internal(format!(
                "stored customer `{}` has an invalid {what}",
                self.slug
            ))
        };
        Ok(Customer {
            slug: self.slug.parse().map_err(|_| corrupt("slug"))?,
            tenant_id: self.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
            policy: serde_json::from_str(&self.policy).map_err(|_| corrupt("policy"))?,
            created_at: self
                .created_at
                .parse()
                .map_err(|_| corrupt("creation time"))?,
            connection: match (self.connection_ready, self.connection_checked_at.as_deref()) {
                (Some(ready), Some(checked_at)) => Some(Connection {
                    ready,
                    detail: self.connection_detail.unwrap_or_default(),
                    checked_at: checked_at.parse().map_err(|_| corrupt("check time"))?,
                    last_ready_at: self
                        .connection_ok_at
                        .as_deref()
                        .and_then(|t| t.parse().ok()),
                }),
                _ => None,
            },
            name: self.name,
            domain: self.domain,
        })
    }
}

pub fn select_action_sql() -> String {
    format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1")
}

/// `$1` the lease's end, `$2` the oldest heartbeat of a live run, `$3` the asking run ('' if none).
/// Ordered by lease so that the partial index of unfinished actions is read in order: every
/// round reads the unfinished actions only, never the whole table.
pub fn stale_actions_sql() -> String {
    let gone = super::instances_sql::run_gone("actions.owner_run", "$2", "$3");
    format!(
        "SELECT {ACTION_COLUMNS} FROM actions WHERE finished_at IS NULL AND (lease_until < $1 OR {gone}) \
         ORDER BY lease_until"
    )
}

pub const CLAIM_ACTION: &str = "UPDATE actions SET lease_until = $3, owner_run = $4 \
     WHERE id = $1 AND lease_until = $2 AND finished_at IS NULL RETURNING id";

pub const SELECT_CUSTOMER: &str = "SELECT slug, name, domain, tenant_id, policy, created_at, connection_ready, \
     connection_detail, connection_checked_at, connection_ok_at FROM customers WHERE slug = $1";
pub const SELECT_CUSTOMERS: &str = "SELECT slug, name, domain, tenant_id, policy, created_at, connection_ready, \
     connection_detail, connection_checked_at, connection_ok_at FROM customers ORDER BY slug";

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot serialise: {e}")))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Inserts a customer and records `customer_added` in its (new) chain.
pub async fn add_customer<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    customer: &Customer,
    actor: &Actor,
) -> Result<()>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    let now = Timestamp::now().to_string();
    let inserted = sqlx::query::<DB>(
        "INSERT INTO customers (slug, name, domain, tenant_id, policy, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(customer.slug.as_str())
    .bind(customer.name.as_str())
    .bind(customer.domain.as_str())
    .bind(customer.tenant_id.to_string())
    .bind(json(&customer.policy)?)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict(format!(
                "customer `{}` already exists",
                customer.slug
            )));
        }
        other => other?,
    };
    let event = AuditEvent::CustomerAdded {
        name: customer.name.clone(),
        domain: customer.domain.clone(),
        tenant_id: Some(customer.tenant_id.to_string()),
    };
    conn.append(
        sealer,
        &ChainId::Customer(customer.slug.clone()),
        actor,
        &event,
    )
    .await?;
    Ok(())
}

/// Replaces a customer's policy and records what changed.
pub async fn update_policy<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    customer: &Customer,
    policy: &Policy,
    actor: &Actor,
) -> Result<()>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let updated: Option<(String,)> = sqlx::query_as::<DB, (String,)>(
        "UPDATE customers SET policy = $2, updated_at = $3 WHERE slug = $1 RETURNING slug",
    )
    .bind(customer.slug.as_str())
    .bind(json(policy)?)
    .bind(Timestamp::now().to_string())
    .fetch_optional(&mut *conn)
    .await?;
    if updated.is_none() {
        return Err(Error::NotFound(format!("customer `{}`", customer.slug)));
    }
    let event = AuditEvent::CustomerPolicyChanged {
        changes: serde_json::json!({ "before": customer.policy, "after": policy }),
    };
    conn.append(
        sealer,
        &ChainId::Customer(customer.slug.clone()),
        actor,
        &event,
    )
    .await?;
    Ok(())
}

/// Records a request (and, when a guard rail stops it, its denial) or finds the action an
/// idempotency key already names. Runs with the customer's chain locked, so two requests cannot
/// both slip under the hourly limit, and a detection the action decides cannot be decided
/// otherwise meanwhile.
pub(crate) async fn admit<S: ActionStatements>(
    tx: &mut S,
    sealer: &Sealer,
    new: &NewAction,
    guard: Guard,
) -> Result<Admission> {
    let chain = ChainId::Customer(new.customer.clone());
    tx.lock_chain(&chain).await?;

    if let Some(existing) = by_idempotency_key(tx, new).await? {
        if existing.request_hash != new.request_hash {
            return Ok(Admission::KeyConflict(existing));
        }
        if let Some(state) = super::detections_sql::claim(tx, sealer, new, existing.id).await? {
            return Ok(Admission::AlreadyDecided(state));
        }
        return Ok(Admission::Replayed(existing));
    }
    if let Some(state) = super::detections_sql::claim(tx, sealer, new, new.id).await? {
        return Ok(Admission::AlreadyDecided(state));
    }

    let denial = denial(tx, new, guard).await?;
    let requested = AuditEvent::ActionRequested {
        action_id: new.id,
        operation: new.operation,
        account: new.account.to_string(),
        reason: new.reason.as_str().to_owned(),
        ticket: new.ticket.as_ref().map(|t| t.as_str().to_owned()),
        revoke_sessions: new.revoke_sessions,
        mfa: new.mfa.clone(),
        request: new.request.clone(),
    };
    let requested_seq = tx.append(sealer, &chain, &new.actor, &requested).await?.seq;
    let record = ActionRecord::requested(new, requested_seq);
    let owner_run = new.owner_run.map(|o| o.to_string());
    let Some((denial, detail)) = denial else {
        tx.insert_action(&ActionRow::try_from(&record)?, owner_run)
            .await?;
        return Ok(Admission::Admitted(record));
    };
    let outcome = AuditEvent::ActionOutcome {
        action_id: new.id,
        outcome: Outcome::Denied,
        detail: Some(detail.clone()),
        warnings: vec![],
        before: None,
        after: None,
        graph: None,
        duration_ms: 0,
    };
    let seq = tx.append(sealer, &chain, &new.actor, &outcome).await?.seq;
    let record = record.denied(denial, detail, seq);
    tx.insert_action(&ActionRow::try_from(&record)?, owner_run)
        .await?;
    Ok(Admission::Denied(record))
}

/// The action the request's idempotency key already names for its customer, if any.
async fn by_idempotency_key<S: ActionStatements>(
    tx: &mut S,
    new: &NewAction,
) -> Result<Option<ActionRecord>> {
    let Some(key) = &new.idempotency_key else {
        return Ok(None);
    };
    tx.action_by_key(new.customer.as_str(), key.as_str())
        .await?
        .map(ActionRecord::try_from)
        .transpose()
}

/// Why a guard rail stops the request (protected account, hourly limit), if one does, and the
/// words recorded for it.
async fn denial<S: ActionStatements>(
    tx: &mut S,
    new: &NewAction,
    guard: Guard,
) -> Result<Option<(Denial, String)>> {
    if guard.protected {
        return Ok(Some((Denial::ProtectedAccount, "the account is on the customer's protected list (break-glass or service account); nothing was sent to Entra".to_owned())));
    }
    let since = Timestamp::from_datetime(new.created_at.as_datetime() - chrono::Duration::hours(1))
        .to_string();
    let recent = tx.recent_actions(new.customer.as_str(), &since).await?;
    Ok((recent >= i64::from(guard.max_actions_per_hour)).then(|| {
        (Denial::HourlyLimit, format!(
            "rate limit: {recent} actions in the last hour for this customer, the policy allows {}; nothing was sent to Entra",
            guard.max_actions_per_hour
        ))
    }))
}

/// Records the outcome of an action that has none yet and returns the action as stored.
/// Returns [`Error::Superseded`] when another process recorded one first; the caller must then
/// roll back, which also removes the entry appended here.
pub(crate) async fn finish<S: ActionStatements>(
    tx: &mut S,
    sealer: &Sealer,
    f: &Finish,
) -> Result<ActionRecord> {
    let chain = ChainId::Customer(f.customer.clone());
    let event = AuditEvent::ActionOutcome {
        action_id: f.id,
        outcome: f.outcome,
        detail: f.detail.clone(),
        warnings: f.warnings.clone(),
        before: f.before.clone(),
        after: f.after.clone(),
        graph: f.graph.clone(),
        duration_ms: f.duration_ms,
    };
    let seq = tx.append(sealer, &chain, &f.actor, &event).await?.seq;
    let outcome = OutcomeUpdate {
        id: f.id.to_string(),
        state: ActionState::from(f.outcome).as_str(),
        detail: f.detail.clone(),
        warnings: (!f.warnings.is_empty())
            .then(|| json(&f.warnings))
            .transpose()?,
        graph: f.graph.as_ref().map(json).transpose()?,
        before: f.before.as_ref().map(json).transpose()?,
        after: f.after.as_ref().map(json).transpose()?,
        target_id: f.target_id.clone(),
        finished_at: Timestamp::now().to_string(),
        duration_ms: i64::try_from(f.duration_ms).unwrap_or(i64::MAX),
        outcome_seq: i64::try_from(seq).unwrap_or(i64::MAX),
        // The engine denies only a protected account it found on reading it (hourly limits are
        // decided at admission).
        denial: (f.outcome == Outcome::Denied).then_some(Denial::ProtectedAccount.kind()),
    };
    let claimed = tx.finish_action(&outcome).await?;
    crate::fault::point("action.outcome_commit").await;
    match claimed {
        Some(row) => ActionRecord::try_from(row),
        None => Err(Error::Superseded),
    }
}
