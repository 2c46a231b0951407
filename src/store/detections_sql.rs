//! Detection writes, once for both backends, each audited in the customer's chain in the same
//! transaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::action_rows::ActionRow;
use super::action_steps::{ActionStatements, DecisionUpdate, OnSqlx};
use super::detection_rows::{DETECTION_COLUMNS, DetectionRow};
use super::domain_sql::ChainTx;
use super::engine::{Conn, Engine, Row};
use super::listing::Listing;
use crate::audit::append::Sealer;
use crate::domain::action::NewAction;
use crate::domain::detection::{DetectionFilter, DetectionRecord, DetectionState};
use crate::domain::event::{Actor, AuditEvent};
use crate::domain::instance::Takeover;
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Falcon detections and their decisions.
#[async_trait]
pub trait DetectionStore: Send + Sync {
    /// Stores a detection unless its composite id is known (then returns the stored one, `false`).
    async fn record_detection(
        &self,
        detection: &DetectionRecord,
        actor: &Actor,
    ) -> Result<(DetectionRecord, bool)>;

    /// The Entra account a detection was matched to, or why it waits. Returns the detection as
    /// stored with them; `None` when it is no longer pending (decided meanwhile, or unknown).
    async fn set_detection_target(
        &self,
        id: uuid::Uuid,
        target_id: Option<&str>,
        target_upn: Option<&str>,
        pending_reason: Option<&str>,
    ) -> Result<Option<DetectionRecord>>;

    /// Decides a pending detection (audited); `false` when it was decided already.
    async fn decide_detection(&self, decision: &Decision) -> Result<bool>;

    async fn detection(&self, id: uuid::Uuid) -> Result<Option<DetectionRecord>>;

    async fn detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>>;

    /// How many detections wait for a decision (a metric).
    async fn pending_detections(&self) -> Result<i64>;

    /// Detections stored but never decided (a crash between storing and deciding) that
    /// `takeover` allows to be taken over, oldest first: their run is gone, or (stored by no
    /// registered run) their arrival is older than the lease.
    async fn undecided_detections(&self, takeover: &Takeover) -> Result<Vec<DetectionRecord>>;

    /// Takes an undecided detection over for `run`; `false` when another run took it first or
    /// it was decided meanwhile.
    async fn claim_detection(
        &self,
        detection: &DetectionRecord,
        run: Option<uuid::Uuid>,
    ) -> Result<bool>;

    /// How many detections wait for a decision, per customer among `customers` (`None`: all);
    /// a customer with none is absent.
    async fn pending_by_customer(
        &self,
        customers: Option<&[CustomerSlug]>,
    ) -> Result<BTreeMap<CustomerSlug, u64>>;
}

/// The chain a detection is audited in and the entry that records its arrival. Built before
/// anything is written, so nothing can fail between storing the row and auditing it.
pub fn received(d: &DetectionRecord) -> (ChainId, AuditEvent) {
    let event = AuditEvent::DetectionReceived {
        detection_id: d.id,
        composite_id: d.composite_id.clone(),
        severity: d.severity.as_str().to_owned(),
        account: d.account_upn.clone().or_else(|| d.account_sid.clone()),
        assurance: d.assurance.as_str().to_owned(),
    };
    (ChainId::Customer(d.customer.clone()), event)
}

/// Inserts the detection unless its `composite_id` is known for the customer; `true` when it
/// was inserted. One statement, so a failure leaves nothing behind.
pub async fn insert_new<DB>(conn: &mut DB::Connection, record: &DetectionRecord) -> Result<bool>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let d = DetectionRow::from(record);
    let inserted: Option<(String,)> =
        sqlx::query_as::<DB, (String,)>(sqlx::AssertSqlSafe(insert_new_sql()))
            .bind(d.id.as_str())
            .bind(d.customer.as_str())
            .bind(d.composite_id.as_str())
            .bind(d.detection_id.as_deref())
            .bind(d.severity.as_str())
            .bind(d.tactic.as_deref())
            .bind(d.technique.as_deref())
            .bind(d.account_upn.as_deref())
            .bind(d.account_sid.as_deref())
            .bind(d.account_domain.as_deref())
            .bind(d.falcon_host_link.as_deref())
            .bind(d.cid.as_deref())
            .bind(d.falcon_time.as_deref())
            .bind(d.assurance.as_str())
            .bind(d.state.as_str())
            .bind(d.target_id.as_deref())
            .bind(d.target_upn.as_deref())
            .bind(d.pending_reason.as_deref())
            .bind(d.action_id.as_deref())
            .bind(d.decided_by.as_deref())
            .bind(d.decided_at.as_deref())
            .bind(d.decision_reason.as_deref())
            .bind(d.received_at.as_str())
            .bind(d.received_run.as_deref())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(inserted.is_some())
}

/// Inserts a detection's columns (`DETECTION_COLUMNS` in order, `$1`…`$24`) unless its
/// `composite_id` is known for the customer; returns its id when it was inserted.
pub fn insert_new_sql() -> String {
    format!(
        "INSERT INTO detections ({DETECTION_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) \
         ON CONFLICT (customer, composite_id) DO NOTHING RETURNING id"
    )
}

/// The stored detection of customer `$1` with `composite_id` `$2`.
pub fn existing_sql() -> String {
    format!("SELECT {DETECTION_COLUMNS} FROM detections WHERE customer = $1 AND composite_id = $2")
}

/// Stores the account a pending detection was matched to and why it waits; returns the row.
pub fn set_target_sql() -> String {
    format!("{SET_TARGET} RETURNING {DETECTION_COLUMNS}")
}

/// The account a pending detection was matched to and why it waits, as stored.
pub struct TargetUpdate {
    pub id: String,
    pub target_id: Option<String>,
    pub target_upn: Option<String>,
    pub pending_reason: Option<String>,
}

/// Stores a [`TargetUpdate`] in one statement; the row as updated, if it was still pending.
pub async fn set_target<DB>(
    conn: &mut DB::Connection,
    update: TargetUpdate,
) -> Result<Option<DetectionRow>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'r> DetectionRow: FromRow<'r, DB::Row>,
{
    Ok(
        sqlx::query_as::<DB, DetectionRow>(sqlx::AssertSqlSafe(set_target_sql()))
            .bind(update.id)
            .bind(update.target_id)
            .bind(update.target_upn)
            .bind(update.pending_reason)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The stored detection with the same customer and `composite_id` as `d`.
pub async fn existing<DB>(conn: &mut DB::Connection, d: &DetectionRecord) -> Result<DetectionRecord>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> DetectionRow: FromRow<'r, DB::Row>,
{
    existing_row::<DB>(conn, d).await?.try_into()
}

/// [`existing`] as stored, for a caller that must fail only with the statement's own error.
pub async fn existing_row<DB>(
    conn: &mut DB::Connection,
    d: &DetectionRecord,
) -> Result<DetectionRow>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> DetectionRow: FromRow<'r, DB::Row>,
{
    Ok(
        sqlx::query_as::<DB, DetectionRow>(sqlx::AssertSqlSafe(existing_sql()))
            .bind(d.customer.as_str())
            .bind(d.composite_id.as_str())
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Stores a detection unless its `composite_id` is known for the customer; returns the stored
/// one and whether it is new. Only a new one is audited.
pub async fn record<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    d: &DetectionRecord,
    actor: &Actor,
) -> Result<(DetectionRecord, bool)>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'r> DetectionRow: FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let (chain, event) = received(d);
    // The chain is held first, so a concurrent delivery of the same detection waits and then
    // finds this one.
    conn.lock_chain(&chain).await?;
    if !insert_new::<DB>(conn, d).await? {
        return Ok((existing::<DB>(conn, d).await?, false));
    }
    conn.append(sealer, &chain, actor, &event).await?;
    Ok((d.clone(), true))
}

/// The decision about a pending detection; `false` (nothing written) when it was decided already.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: uuid::Uuid,
    pub customer: CustomerSlug,
    pub state: DetectionState,
    pub action_id: Option<uuid::Uuid>,
    pub reason: Option<String>,
    pub actor: Actor,
}

/// Decides a pending detection (compare-and-set from `pending`), audited in the customer's
/// chain, whose head the caller holds. `Ok(false)` when it was decided already.
pub(crate) async fn decide<S: ActionStatements>(
    tx: &mut S,
    sealer: &Sealer,
    decision: &Decision,
) -> Result<bool> {
    let chain = ChainId::Customer(decision.customer.clone());
    tx.lock_chain(&chain).await?;
    let update = DecisionUpdate {
        id: decision.id.to_string(),
        state: decision.state.as_str(),
        action_id: decision.action_id.map(|id| id.to_string()),
        decided_by: super::domain_sql::json(&decision.actor)?,
        decided_at: Timestamp::now().to_string(),
        reason: decision.reason.clone(),
        customer: decision.customer.as_str().to_owned(),
    };
    if !tx.decide_detection(&update).await? {
        return Ok(false);
    }
    let event = AuditEvent::DetectionDecided {
        detection_id: decision.id,
        decision: decision.state.as_str().to_owned(),
        reason: decision.reason.clone(),
        action_id: decision.action_id,
    };
    tx.append(sealer, &chain, &decision.actor, &event).await?;
    Ok(true)
}

/// When `new` decides a detection: moves it from pending to the claimed decision for action
/// `action_id`, in the transaction that admits the action (the customer's chain is held).
/// `Some(state)`, with nothing written, when the detection was no longer pending.
pub(crate) async fn claim<S: ActionStatements>(
    tx: &mut S,
    sealer: &Sealer,
    new: &NewAction,
    action_id: uuid::Uuid,
) -> Result<Option<DetectionState>> {
    let Some(claim) = &new.claim else {
        return Ok(None);
    };
    if let Some((target_id, target_upn)) = &claim.target {
        // The account it was matched to, with the decision: a commit fewer before the PATCH.
        tx.set_target(&claim.detection.to_string(), target_id, target_upn)
            .await?;
    }
    let decision = Decision {
        id: claim.detection,
        customer: new.customer.clone(),
        state: claim.decision,
        action_id: Some(action_id),
        reason: claim.reason.clone(),
        actor: new.actor.clone(),
    };
    if decide(tx, sealer, &decision).await? {
        return Ok(None);
    }
    let id = decision.id.to_string();
    let state = tx.detection_state(&id).await?;
    DetectionState::parse(&state)
        .ok_or_else(|| Error::Internal(format!("detection {id} has the unknown state `{state}`")))
        .map(Some)
}

/// Detections stored but not decided that may be taken over: `$1` the end of the lease of one
/// stored by no registered run, `$2` the oldest heartbeat of a live run, `$3` the asking run.
pub fn undecided_sql() -> String {
    let gone = super::instances_sql::run_gone("detections.received_run", "$2", "$3");
    format!(
        "SELECT {DETECTION_COLUMNS} FROM detections WHERE state = 'pending' AND pending_reason IS NULL \
         AND ((received_run IS NULL AND received_at < $1) OR {gone}) ORDER BY received_at LIMIT 500"
    )
}

const CLAIM_DETECTION: &str = "UPDATE detections SET received_run = $2 \
     WHERE id = $1 AND state = 'pending' AND pending_reason IS NULL AND COALESCE(received_run, '') = $3 \
     RETURNING id";

pub const SET_TARGET: &str = "UPDATE detections SET target_id = $2, target_upn = $3, pending_reason = $4 WHERE id = $1 AND state = 'pending'";

#[async_trait]
impl<E> DetectionStore for E
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
    for<'r> (i64,): FromRow<'r, Row<E>>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> (String, i64): FromRow<'r, Row<E>>,
    for<'r> DetectionRow: FromRow<'r, Row<E>>,
    for<'t> Option<i64>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> bool: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> ActionRow: FromRow<'r, Row<E>>,
{
    async fn record_detection(
        &self,
        detection: &DetectionRecord,
        actor: &Actor,
    ) -> Result<(DetectionRecord, bool)> {
        Engine::record_detection(self, detection, actor).await
    }

    async fn set_detection_target(
        &self,
        id: uuid::Uuid,
        target_id: Option<&str>,
        target_upn: Option<&str>,
        pending_reason: Option<&str>,
    ) -> Result<Option<DetectionRecord>> {
        let update = TargetUpdate {
            id: id.to_string(),
            target_id: target_id.map(str::to_owned),
            target_upn: target_upn.map(str::to_owned),
            pending_reason: pending_reason.map(str::to_owned),
        };
        // The row comes back with the update, converted once the write committed (a job of
        // one statement may fail only with that statement's own error).
        let updated = self.store_target(update).await?;
        updated.map(DetectionRecord::try_from).transpose()
    }

    async fn decide_detection(&self, decision: &Decision) -> Result<bool> {
        let sealer = self.sealer()?;
        let decision = decision.clone();
        self.write(move |conn| {
            Box::pin(async move { decide(&mut OnSqlx::<E::Db>(conn), &sealer, &decision).await })
        })
        .await
    }

    async fn detection(&self, id: uuid::Uuid) -> Result<Option<DetectionRecord>> {
        let sql = format!("SELECT {DETECTION_COLUMNS} FROM detections WHERE id = $1");
        sqlx::query_as::<E::Db, DetectionRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .map(DetectionRecord::try_from)
            .transpose()
    }

    async fn detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>> {
        let rows: Vec<DetectionRow> = filter
            .listing()
            .fetch(self.pool(), DetectionFilter::TIME_COLUMN, filter.limit)
            .await?;
        rows.into_iter().map(DetectionRecord::try_from).collect()
    }

    async fn pending_detections(&self) -> Result<i64> {
        let (count,) = sqlx::query_as::<E::Db, (i64,)>(
            "SELECT COUNT(*) FROM detections WHERE state = 'pending'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    async fn undecided_detections(&self, takeover: &Takeover) -> Result<Vec<DetectionRecord>> {
        let (lease_ended, alive_since, mine) = super::instances_sql::takeover_binds(takeover);
        let rows = sqlx::query_as::<E::Db, DetectionRow>(sqlx::AssertSqlSafe(undecided_sql()))
            .bind(lease_ended)
            .bind(alive_since)
            .bind(mine)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(DetectionRecord::try_from).collect()
    }

    async fn claim_detection(
        &self,
        detection: &DetectionRecord,
        run: Option<uuid::Uuid>,
    ) -> Result<bool> {
        let id = detection.id.to_string();
        let old = detection
            .received_run
            .map(|r| r.to_string())
            .unwrap_or_default();
        let run = run.map(|r| r.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                let claimed = sqlx::query_as::<E::Db, (String,)>(CLAIM_DETECTION)
                    .bind(id)
                    .bind(run)
                    .bind(old)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(claimed.is_some())
            })
        })
        .await
    }

    async fn pending_by_customer(
        &self,
        customers: Option<&[CustomerSlug]>,
    ) -> Result<BTreeMap<CustomerSlug, u64>> {
        let rows: Vec<(String, i64)> =
            Listing::new("SELECT customer, COUNT(*) FROM detections".to_owned())
                .equal("state", Some(DetectionState::Pending.as_str()))
                .customers(customers)
                .fetch_grouped(self.pool(), "customer")
                .await?;
        rows.into_iter()
            .map(|(customer, count)| {
                let slug = customer.parse().map_err(|_| {
                    Error::Internal(format!(
                        "a detection names the invalid customer `{customer}`"
                    ))
                })?;
                Ok((slug, u64::try_from(count).unwrap_or_default()))
            })
            .collect()
    }
}
