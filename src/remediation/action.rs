//! Actions as stored: what was asked, by whom, and how it ended.

use std::str::FromStr;

use serde::Serialize;
use uuid::Uuid;

use crate::audit::event::{
    AccountState, Actor, GraphEvidence, MfaEvidence, Operation, Outcome, RequestContext,
};
use crate::domain::{AccountRef, CustomerSlug, IdempotencyKey, Reason, Ticket};
use crate::error::{Error, Result};
use crate::falcon::records::DetectionState;
use crate::time::Timestamp;

/// Where an action is: `requested` until its one outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Requested,
    Succeeded,
    Noop,
    Failed,
    Denied,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Requested => "requested",
            ActionState::Succeeded => "succeeded",
            ActionState::Noop => "noop",
            ActionState::Failed => "failed",
            ActionState::Denied => "denied",
        }
    }

    pub fn is_finished(self) -> bool {
        self != ActionState::Requested
    }
}

impl From<Outcome> for ActionState {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => ActionState::Succeeded,
            Outcome::Noop => ActionState::Noop,
            Outcome::Failed => ActionState::Failed,
            Outcome::Denied => ActionState::Denied,
        }
    }
}

impl FromStr for ActionState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "requested" => ActionState::Requested,
            "succeeded" => ActionState::Succeeded,
            "noop" => ActionState::Noop,
            "failed" => ActionState::Failed,
            "denied" => ActionState::Denied,
            other => {
                return Err(Error::InvalidInput(format!(
                    "`{other}` is not an action state (requested, succeeded, noop, failed, denied)"
                )));
            }
        })
    }
}

/// An action row, columns as stored (JSON columns as text).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActionRecord {
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
}

impl ActionRecord {
    pub fn state(&self) -> Result<ActionState> {
        self.state.parse()
    }

    pub fn id(&self) -> Result<Uuid> {
        Uuid::parse_str(&self.id)
            .map_err(|_| Error::Internal(format!("stored action id `{}` is not a UUID", self.id)))
    }

    pub fn operation(&self) -> Result<Operation> {
        match self.operation.as_str() {
            "disable" => Ok(Operation::Disable),
            "enable" => Ok(Operation::Enable),
            other => Err(Error::Internal(format!("stored operation `{other}`"))),
        }
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .as_deref()
            .and_then(|w| serde_json::from_str(w).ok())
            .unwrap_or_default()
    }

    pub fn graph(&self) -> Option<GraphEvidence> {
        self.graph
            .as_deref()
            .and_then(|g| serde_json::from_str(g).ok())
    }

    pub fn before(&self) -> Option<AccountState> {
        self.before_state
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    pub fn after(&self) -> Option<AccountState> {
        self.after_state
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    pub fn actor(&self) -> Option<Actor> {
        serde_json::from_str(&self.actor).ok()
    }
}

/// A request that passed validation, about to be admitted.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub id: Uuid,
    pub customer: CustomerSlug,
    pub operation: Operation,
    pub account: AccountRef,
    pub reason: Reason,
    pub ticket: Option<Ticket>,
    pub revoke_sessions: bool,
    pub idempotency_key: Option<IdempotencyKey>,
    /// SHA-256 over what was asked, to tell a replay from a different request with the same key.
    pub request_hash: String,
    pub actor: Actor,
    pub mfa: Option<MfaEvidence>,
    pub request: Option<RequestContext>,
    pub created_at: Timestamp,
    /// Until then nobody else may reconcile the action: the executing process owns it.
    pub lease_until: Timestamp,
    /// The pending detection this action decides, if any.
    pub claim: Option<DetectionClaim>,
}

/// A pending detection an action decides: the action is admitted only while the detection is
/// still pending, and the detection moves to `decision` in the same transaction.
#[derive(Debug, Clone)]
pub struct DetectionClaim {
    pub detection: Uuid,
    /// `Approved` or `AutoRemediated`.
    pub decision: DetectionState,
    /// Why, for the audit entry (the auto-disable rule that applied).
    pub reason: Option<String>,
}

/// The guard rails admission enforces inside the transaction that records the request.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    pub max_actions_per_hour: u32,
    /// The account as requested is on the customer's protected list.
    pub protected: bool,
}

/// What admission decided.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Recorded as `requested`; the caller now talks to Graph.
    Admitted(ActionRecord),
    /// Same idempotency key, same request: the action recorded earlier.
    Replayed(ActionRecord),
    /// Same idempotency key, different request.
    KeyConflict(ActionRecord),
    /// Recorded as requested and denied (protected account or rate limit).
    Denied(ActionRecord),
    /// The detection the action was to decide was decided first; nothing was recorded.
    AlreadyDecided(DetectionState),
}

/// The one outcome of an action.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: Uuid,
    pub customer: CustomerSlug,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub warnings: Vec<String>,
    pub target_id: Option<String>,
    pub before: Option<AccountState>,
    pub after: Option<AccountState>,
    pub graph: Option<GraphEvidence>,
    pub duration_ms: u64,
    pub actor: Actor,
}
