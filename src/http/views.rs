//! What the API accepts and answers, as documented in `/openapi.json`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::input::PageLimit;
use super::openapi::schemas;
use crate::audit::event::{AccountState, GraphEvidence};
use crate::falcon::records::DetectionRecord;
use crate::graph::GraphUser;
use crate::remediation::action::ActionRecord;

/// Body of `POST …/disable`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    #[schema(schema_with = schemas::reason)]
    pub reason: String,
    #[schema(schema_with = schemas::ticket)]
    pub ticket: Option<String>,
    /// Also revoke the account's sign-in sessions (default: the customer's policy).
    pub revoke_sessions: Option<bool>,
}

/// Body of `POST …/enable`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    #[schema(schema_with = schemas::reason)]
    pub reason: String,
    #[schema(schema_with = schemas::ticket)]
    pub ticket: Option<String>,
}

/// An account's live state in the customer's Entra tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub customer: String,
    pub id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub account_enabled: Option<bool>,
    /// Synchronised from on-premises AD: disable it there too, or the next sync re-enables it.
    pub on_premises_sync_enabled: Option<bool>,
    /// On the customer's protected list: killswitch will not change it.
    pub protected: bool,
}

impl AccountView {
    pub fn new(customer: &str, user: GraphUser, protected: bool) -> AccountView {
        AccountView {
            customer: customer.to_owned(),
            id: user.id,
            user_principal_name: user.user_principal_name,
            display_name: user.display_name,
            account_enabled: user.account_enabled,
            on_premises_sync_enabled: user.on_premises_sync_enabled,
            protected,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountStateView {
    pub id: String,
    pub user_principal_name: String,
    pub account_enabled: Option<bool>,
    pub on_premises_sync_enabled: Option<bool>,
}

impl From<AccountState> for AccountStateView {
    fn from(s: AccountState) -> Self {
        AccountStateView {
            id: s.id,
            user_principal_name: s.user_principal_name,
            account_enabled: s.account_enabled,
            on_premises_sync_enabled: s.on_premises_sync_enabled,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEvidenceView {
    pub status: Option<u16>,
    pub error_code: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub date: Option<String>,
}

impl From<GraphEvidence> for GraphEvidenceView {
    fn from(g: GraphEvidence) -> Self {
        GraphEvidenceView {
            status: g.status,
            error_code: g.error_code,
            request_id: g.request_id,
            client_request_id: g.client_request_id,
            date: g.date,
        }
    }
}

/// One remediation action and, once it has one, its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    pub id: String,
    pub customer: String,
    /// `disable` or `enable`.
    pub operation: String,
    /// The account as requested (UPN or object id).
    pub account: String,
    /// `requested` (still running), `succeeded`, `noop`, `failed` or `denied`.
    pub state: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub revoke_sessions: bool,
    #[schema(value_type = Object)]
    pub requested_by: serde_json::Value,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub detail: Option<String>,
    pub warnings: Vec<String>,
    pub before: Option<AccountStateView>,
    pub after: Option<AccountStateView>,
    pub graph: Option<GraphEvidenceView>,
    pub duration_ms: Option<i64>,
    /// Where to poll this action.
    pub href: String,
}

impl From<&ActionRecord> for ActionView {
    fn from(r: &ActionRecord) -> Self {
        ActionView {
            id: r.id.to_string(),
            customer: r.customer.to_string(),
            operation: r.operation.as_str().to_owned(),
            account: r.account.clone(),
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            revoke_sessions: r.revoke_sessions,
            requested_by: serde_json::to_value(&r.actor).unwrap_or_default(),
            created_at: r.created_at.to_string(),
            finished_at: r.finished_at.map(|t| t.to_string()),
            detail: r.detail.clone(),
            warnings: r.warnings.clone(),
            before: r.before.clone().map(Into::into),
            after: r.after.clone().map(Into::into),
            graph: r.graph.clone().map(Into::into),
            duration_ms: r.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
            href: format!("/api/v1/actions/{}", r.id),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionsQuery {
    /// Only this customer.
    #[param(schema_with = schemas::customer_slug)]
    pub customer: Option<String>,
    #[param(schema_with = schemas::action_state)]
    pub state: Option<String>,
    #[param(schema_with = schemas::page_limit)]
    pub limit: Option<PageLimit>,
}

/// A detection as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DetectionRecord)]
pub struct DetectionView {
    pub id: String,
    pub customer: String,
    pub composite_id: String,
    pub detection_id: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    pub tactic: Option<String>,
    pub technique: Option<String>,
    pub account_upn: Option<String>,
    pub account_sid: Option<String>,
    pub account_domain: Option<String>,
    pub falcon_host_link: Option<String>,
    pub cid: Option<String>,
    pub falcon_time: Option<String>,
    /// `signed` (HMAC with a fresh timestamp) or `bearer` (static secret: never auto-disables).
    pub assurance: String,
    /// `pending`, `auto_remediated`, `approved` or `dismissed`.
    pub state: String,
    /// The Entra account it was matched to (object id and UPN).
    pub target_id: Option<String>,
    pub target_upn: Option<String>,
    /// Why it waits (no opt-in, below the threshold, bearer only, account not found…).
    pub pending_reason: Option<String>,
    /// The remediation action, once there is one.
    pub action_id: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    pub received_at: String,
}

impl From<&DetectionRecord> for DetectionView {
    fn from(d: &DetectionRecord) -> Self {
        DetectionView {
            id: d.id.to_string(),
            customer: d.customer.to_string(),
            composite_id: d.composite_id.clone(),
            detection_id: d.detection_id.clone(),
            severity: d.severity.as_str().to_owned(),
            tactic: d.tactic.clone(),
            technique: d.technique.clone(),
            account_upn: d.account_upn.clone(),
            account_sid: d.account_sid.clone(),
            account_domain: d.account_domain.clone(),
            falcon_host_link: d.falcon_host_link.clone(),
            cid: d.cid.clone(),
            falcon_time: d.falcon_time.clone(),
            assurance: d.assurance.as_str().to_owned(),
            state: d.state.as_str().to_owned(),
            target_id: d.target_id.clone(),
            target_upn: d.target_upn.clone(),
            pending_reason: d.pending_reason.clone(),
            action_id: d.action_id.map(|id| id.to_string()),
            decided_by: d.decided_by.clone(),
            decided_at: d.decided_at.map(|t| t.to_string()),
            decision_reason: d.decision_reason.clone(),
            received_at: d.received_at.to_string(),
        }
    }
}
