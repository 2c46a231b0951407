//! Actions: what was asked, by whom, what admission decided, and how each ended.

use std::str::FromStr;

use serde::Serialize;
use uuid::Uuid;

use super::InvalidValue;
use super::detection::DetectionState;
use super::event::{
    AccountState, Actor, GraphEvidence, MfaEvidence, Operation, Outcome, RequestContext,
};
use super::{AccountRef, CustomerSlug, IdempotencyKey, Reason, Ticket};
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
    pub const ALL: [ActionState; 5] = [
        ActionState::Requested,
        ActionState::Succeeded,
        ActionState::Noop,
        ActionState::Failed,
        ActionState::Denied,
    ];

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
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Ok(match s {
            "requested" => ActionState::Requested,
            "succeeded" => ActionState::Succeeded,
            "noop" => ActionState::Noop,
            "failed" => ActionState::Failed,
            "denied" => ActionState::Denied,
            other => {
                return Err(InvalidValue::Input(format!(
                    "`{other}` is not an action state (requested, succeeded, noop, failed, denied)"
                )));
            }
        })
    }
}

/// Why a guard rail refused an action before anything was sent to Entra. The numbers behind
/// an hourly-limit denial are in the action's detail, the words people read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The account is on the customer's protected list (break-glass or service account).
    ProtectedAccount,
    /// The customer's policy allows no more actions this hour.
    HourlyLimit,
}

impl Denial {
    /// The stored kind (the `denial` column).
    pub fn kind(self) -> &'static str {
        match self {
            Denial::ProtectedAccount => "protected_account",
            Denial::HourlyLimit => "hourly_limit",
        }
    }
}

/// An action as the features see it: typed, read from its row at the store's edge.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    pub id: Uuid,
    pub customer: CustomerSlug,
    pub operation: Operation,
    /// The account as requested (UPN or object id).
    pub account: String,
    /// The Entra object id, once Graph has named it.
    pub target_id: Option<String>,
    pub state: ActionState,
    /// Why it was denied, when it was.
    pub denial: Option<Denial>,
    pub reason: String,
    pub ticket: Option<String>,
    pub revoke_sessions: bool,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub actor: Actor,
    pub detail: Option<String>,
    pub warnings: Vec<String>,
    pub graph: Option<GraphEvidence>,
    pub before: Option<AccountState>,
    pub after: Option<AccountState>,
    pub requested_seq: u64,
    pub outcome_seq: Option<u64>,
    pub created_at: Timestamp,
    pub lease_until: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
}

impl ActionRecord {
    /// The record of a request just admitted as `requested` at `requested_seq`.
    pub fn requested(new: &NewAction, requested_seq: u64) -> ActionRecord {
        ActionRecord {
            id: new.id,
            customer: new.customer.clone(),
            operation: new.operation,
            account: new.account.to_string(),
            target_id: None,
            state: ActionState::Requested,
            denial: None,
            reason: new.reason.as_str().to_owned(),
            ticket: new.ticket.as_ref().map(|t| t.as_str().to_owned()),
            revoke_sessions: new.revoke_sessions,
            idempotency_key: new.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            request_hash: new.request_hash.clone(),
            actor: new.actor.clone(),
            detail: None,
            warnings: Vec::new(),
            graph: None,
            before: None,
            after: None,
            requested_seq,
            outcome_seq: None,
            created_at: new.created_at,
            lease_until: new.lease_until,
            finished_at: None,
            duration_ms: None,
        }
    }

    /// The same record, denied by `denial` (told in `detail`) with its outcome entry at
    /// `outcome_seq`.
    pub fn denied(mut self, denial: Denial, detail: String, outcome_seq: u64) -> ActionRecord {
        self.state = ActionState::Denied;
        self.denial = Some(denial);
        self.detail = Some(detail);
        self.outcome_seq = Some(outcome_seq);
        self.finished_at = Some(self.created_at);
        self.duration_ms = Some(0);
        self
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
    /// The registered run executing it (see `domain::instance`): when that run is gone, the
    /// action is reconciled without waiting for its lease. `None` outside a registered service.
    pub owner_run: Option<Uuid>,
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
    /// The Entra account the detection was matched to (its object id and UPN), stored on the
    /// detection in the same transaction; `None` keeps the one stored before.
    pub target: Option<(String, String)>,
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
