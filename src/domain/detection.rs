//! Falcon detections as every layer sees them: severity, how a delivery was proven, where a
//! detection is, and the detection itself.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CustomerSlug;
use crate::time::Timestamp;

/// Severity as killswitch acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse_stored(text: &str) -> Option<Severity> {
        match text {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// Falcon's numeric scale (0–100) in bands: 80 and up critical, 60 high, 40 medium, else low.
    pub fn from_score(score: u64) -> Option<Severity> {
        Some(match score {
            80..=100 => Severity::Critical,
            60..=79 => Severity::High,
            40..=59 => Severity::Medium,
            0..=39 => Severity::Low,
            _ => return None,
        })
    }

    /// Falcon's names; `informational` counts as low.
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            "low" | "informational" | "info" => Severity::Low,
            _ => return None,
        })
    }
}

/// How sure we are the detection came from the customer's Falcon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assurance {
    /// An HMAC over the body with a fresh timestamp.
    Signed,
    /// Only a static bearer secret: it may have leaked and can be replayed.
    Bearer,
}

impl Assurance {
    pub fn as_str(self) -> &'static str {
        match self {
            Assurance::Signed => "signed",
            Assurance::Bearer => "bearer",
        }
    }

    /// The assurance a stored text names ([`as_str`](Self::as_str) read back).
    pub fn parse_stored(text: &str) -> Option<Assurance> {
        match text {
            "signed" => Some(Assurance::Signed),
            "bearer" => Some(Assurance::Bearer),
            _ => None,
        }
    }
}

/// Which string the CrowdStrike scheme signs, per customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignedString {
    /// `base64(HMAC-SHA256(secret, body ‖ timestamp))`
    #[default]
    BodyTimestampBase64,
    /// `hex(HMAC-SHA256(secret, timestamp ‖ body))`
    TimestampBodyHex,
}

impl SignedString {
    pub const ALL: [SignedString; 2] = [
        SignedString::BodyTimestampBase64,
        SignedString::TimestampBodyHex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignedString::BodyTimestampBase64 => "body_timestamp_base64",
            SignedString::TimestampBodyHex => "timestamp_body_hex",
        }
    }
}

impl std::str::FromStr for SignedString {
    type Err = super::InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SignedString::ALL
            .into_iter()
            .find(|signed| signed.as_str() == text)
            .ok_or_else(|| {
                super::InvalidValue::Input(format!(
                    "`{text}` is not body_timestamp_base64 or timestamp_body_hex"
                ))
            })
    }
}

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
    pub const ALL: [DetectionState; 4] = [
        DetectionState::Pending,
        DetectionState::AutoRemediated,
        DetectionState::Approved,
        DetectionState::Dismissed,
    ];

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
    /// The registered run that received it and decides it (see `domain::instance`); when that
    /// run is gone before the detection was decided, another run decides it.
    pub received_run: Option<Uuid>,
}

/// Which detections to list, newest first (`received_at`, then `id`, both descending).
#[derive(Debug, Clone, Default)]
pub struct DetectionFilter {
    pub customers: Option<Vec<crate::domain::CustomerSlug>>,
    pub state: Option<DetectionState>,
    /// Only detections older than this position (the last row of the page before).
    pub before: Option<super::cursor::ListCursor>,
    pub limit: u32,
}
