//! Detections as stored.

use serde::Serialize;
use uuid::Uuid;

use super::payload::Severity;
use super::signature::Assurance;
use crate::domain::CustomerSlug;
pub use crate::store::DETECTION_COLUMNS;
use crate::time::Timestamp;

/// Where a detection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionState {
    /// Waiting for an analyst (or for the account to be found).
    Pending,
    /// Disabled at once under the customer's auto-disable policy.
    AutoRemediated,
    /// An analyst approved it with a one-time code; the action says how it ended.
    Approved,
    /// An analyst dismissed it; nothing was sent to Entra.
    Dismissed,
}

impl DetectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionState::Pending => "pending",
            DetectionState::AutoRemediated => "auto_remediated",
            DetectionState::Approved => "approved",
            DetectionState::Dismissed => "dismissed",
        }
    }

    pub fn parse(text: &str) -> Option<DetectionState> {
        Some(match text {
            "pending" => DetectionState::Pending,
            "auto_remediated" => DetectionState::AutoRemediated,
            "approved" => DetectionState::Approved,
            "dismissed" => DetectionState::Dismissed,
            _ => return None,
        })
    }
}

/// A detection as the features see it: typed, read from its row at the store's edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionRecord {
    pub id: Uuid,
    pub customer: CustomerSlug,
    /// Falcon's id for the detection; a repeated one is the same detection.
    pub composite_id: String,
    pub detection_id: Option<String>,
    pub severity: Severity,
    pub tactic: Option<String>,
    pub technique: Option<String>,
    pub account_upn: Option<String>,
    pub account_sid: Option<String>,
    pub account_domain: Option<String>,
    pub falcon_host_link: Option<String>,
    pub cid: Option<String>,
    /// Falcon's time for the detection, as Falcon wrote it.
    pub falcon_time: Option<String>,
    pub assurance: Assurance,
    pub state: DetectionState,
    /// The Entra account it was matched to (object id and UPN).
    pub target_id: Option<String>,
    pub target_upn: Option<String>,
    /// Why it waits (no opt-in, below the threshold, bearer only, account not found…).
    pub pending_reason: Option<String>,
    /// The remediation action, once there is one.
    pub action_id: Option<Uuid>,
    /// Who decided it (an actor, as JSON).
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub decision_reason: Option<String>,
    pub received_at: Timestamp,
}

/// Which detections to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DetectionFilter {
    pub customers: Option<Vec<crate::domain::CustomerSlug>>,
    pub state: Option<DetectionState>,
    pub limit: u32,
}

impl DetectionFilter {
    pub fn sql(&self) -> String {
        let mut sql = format!("SELECT {DETECTION_COLUMNS} FROM detections");
        let mut n = 0;
        let mut clauses = Vec::new();
        if let Some(customers) = &self.customers {
            let placeholders: Vec<String> = customers
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            clauses.push(if placeholders.is_empty() {
                "1 = 0".to_owned()
            } else {
                format!("customer IN ({})", placeholders.join(", "))
            });
        }
        if self.state.is_some() {
            n += 1;
            clauses.push(format!("state = ${n}"));
        }
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY received_at DESC, id LIMIT ${}", n + 1));
        sql
    }

    pub fn binds(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .customers
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        values.extend(self.state.map(|s| s.as_str().to_owned()));
        values
    }
}
