//! The `actions` table's row as stored, and its conversion to and from the typed
//! [`ActionRecord`] the features use: the one place where action columns are text.

use uuid::Uuid;

use super::domain_sql::json;
use crate::domain::action::{ActionRecord, Denial};
use crate::domain::event::Operation;
use crate::error::{Error, Result};

pub const ACTION_COLUMNS: &str = "id, customer, operation, account, target_id, state, reason, ticket, revoke_sessions, \
     idempotency_key, request_hash, actor, detail, warnings, graph, before_state, after_state, requested_seq, \
     outcome_seq, created_at, lease_until, finished_at, duration_ms, denial";

/// An action row, columns as stored (JSON columns as text).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRow {
    pub id: String,
    pub customer: String,
    pub operation: String,
    pub account: String,
    pub target_id: Option<String>,
    pub state: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub revoke_sessions: bool,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub actor: String,
    pub detail: Option<String>,
    pub warnings: Option<String>,
    pub graph: Option<String>,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
    pub requested_seq: i64,
    pub outcome_seq: Option<i64>,
    pub created_at: String,
    pub lease_until: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub denial: Option<String>,
}

impl TryFrom<ActionRow> for ActionRecord {
    type Error = Error;

    fn try_from(row: ActionRow) -> Result<ActionRecord> {
        let id = row.id.clone();
        let corrupt = move |what: &str| {
            Error::Internal(format!("stored action `{id}` has an invalid {what}"))
        };
        Ok(ActionRecord {
            id: Uuid::parse_str(&row.id).map_err(|_| corrupt("id"))?,
            customer: row.customer.parse().map_err(|_| corrupt("customer"))?,
            operation: Operation::parse_stored(&row.operation)
                .ok_or_else(|| corrupt("operation"))?,
            state: row.state.parse().map_err(|_| corrupt("state"))?,
            denial: denial(&row).map_err(|()| corrupt("denial"))?,
            actor: serde_json::from_str(&row.actor).map_err(|_| corrupt("actor"))?,
            warnings: from_json(row.warnings.as_deref())
                .map_err(|()| corrupt("warnings"))?
                .unwrap_or_default(),
            graph: from_json(row.graph.as_deref()).map_err(|()| corrupt("graph evidence"))?,
            before: from_json(row.before_state.as_deref()).map_err(|()| corrupt("before state"))?,
            after: from_json(row.after_state.as_deref()).map_err(|()| corrupt("after state"))?,
            requested_seq: u64::try_from(row.requested_seq).map_err(|_| corrupt("seq"))?,
            outcome_seq: row
                .outcome_seq
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("seq"))?,
            created_at: row
                .created_at
                .parse()
                .map_err(|_| corrupt("creation time"))?,
            lease_until: row.lease_until.parse().map_err(|_| corrupt("lease"))?,
            finished_at: row
                .finished_at
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| corrupt("finish time"))?,
            duration_ms: row
                .duration_ms
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("duration"))?,
            account: row.account,
            target_id: row.target_id,
            reason: row.reason,
            ticket: row.ticket,
            revoke_sessions: row.revoke_sessions,
            idempotency_key: row.idempotency_key,
            request_hash: row.request_hash,
            detail: row.detail,
        })
    }
}

impl TryFrom<&ActionRecord> for ActionRow {
    type Error = Error;

    fn try_from(r: &ActionRecord) -> Result<ActionRow> {
        Ok(ActionRow {
            id: r.id.to_string(),
            customer: r.customer.to_string(),
            operation: r.operation.as_str().to_owned(),
            account: r.account.clone(),
            target_id: r.target_id.clone(),
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            revoke_sessions: r.revoke_sessions,
            idempotency_key: r.idempotency_key.clone(),
            request_hash: r.request_hash.clone(),
            actor: json(&r.actor)?,
            detail: r.detail.clone(),
            warnings: (!r.warnings.is_empty())
                .then(|| json(&r.warnings))
                .transpose()?,
            graph: r.graph.as_ref().map(json).transpose()?,
            before_state: r.before.as_ref().map(json).transpose()?,
            after_state: r.after.as_ref().map(json).transpose()?,
            requested_seq: i64::try_from(r.requested_seq).unwrap_or(i64::MAX),
            outcome_seq: r.outcome_seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            created_at: r.created_at.to_string(),
            lease_until: r.lease_until.to_string(),
            finished_at: r.finished_at.map(|t| t.to_string()),
            duration_ms: r.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
            denial: r.denial.map(|d| d.kind().to_owned()),
        })
    }
}

/// The denial a row records. A denied row without one was written by a release before the
/// column (still running beside this one during an upgrade): its kind is read from the detail
/// it was written with, as migration 0007 did for older rows.
fn denial(row: &ActionRow) -> std::result::Result<Option<Denial>, ()> {
    match row.denial.as_deref() {
        None if row.state == "denied" => Ok(Some(
            if row
                .detail
                .as_deref()
                .unwrap_or_default()
                .starts_with("rate limit")
            {
                Denial::HourlyLimit
            } else {
                Denial::ProtectedAccount
            },
        )),
        None => Ok(None),
        Some("protected_account") => Ok(Some(Denial::ProtectedAccount)),
        Some("hourly_limit") => Ok(Some(Denial::HourlyLimit)),
        Some(_) => Err(()),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
) -> std::result::Result<Option<T>, ()> {
    text.map(serde_json::from_str).transpose().map_err(|_| ())
}
