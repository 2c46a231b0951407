//! The `detections` table's row as stored, and its conversion to and from the typed
//! [`DetectionRecord`] the features use: the one place where detection columns are text.

use uuid::Uuid;

use crate::domain::detection::{
    Assurance, DetectionFilter, DetectionRecord, DetectionState, Severity,
};
use crate::error::{Error, Result};

pub const DETECTION_COLUMNS: &str = "id, customer, composite_id, detection_id, severity, tactic, technique, account_upn, \
     account_sid, account_domain, falcon_host_link, cid, falcon_time, assurance, state, target_id, target_upn, \
     pending_reason, action_id, decided_by, decided_at, decision_reason, received_at, received_run";

/// A detection row, columns as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DetectionRow {
    pub id: String,
    pub customer: String,
    pub composite_id: String,
    pub detection_id: Option<String>,
    pub severity: String,
    pub tactic: Option<String>,
    pub technique: Option<String>,
    pub account_upn: Option<String>,
    pub account_sid: Option<String>,
    pub account_domain: Option<String>,
    pub falcon_host_link: Option<String>,
    pub cid: Option<String>,
    pub falcon_time: Option<String>,
    pub assurance: String,
    pub state: String,
    pub target_id: Option<String>,
    pub target_upn: Option<String>,
    pub pending_reason: Option<String>,
    pub action_id: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    pub received_at: String,
    pub received_run: Option<String>,
}

impl TryFrom<DetectionRow> for DetectionRecord {
    type Error = Error;

    fn try_from(row: DetectionRow) -> Result<DetectionRecord> {
        let id = row.id.clone();
        let corrupt = move |what: &str| {
            Error::Internal(format!("stored detection `{id}` has an invalid {what}"))
        };
        Ok(DetectionRecord {
            id: Uuid::parse_str(&row.id).map_err(|_| corrupt("id"))?,
            customer: row.customer.parse().map_err(|_| corrupt("customer"))?,
            severity: Severity::parse_stored(&row.severity).ok_or_else(|| corrupt("severity"))?,
            assurance: Assurance::parse_stored(&row.assurance)
                .ok_or_else(|| corrupt("assurance"))?,
            state: DetectionState::parse(&row.state).ok_or_else(|| corrupt("state"))?,
            action_id: row
                .action_id
                .as_deref()
                .map(Uuid::parse_str)
                .transpose()
                .map_err(|_| corrupt("action id"))?,
            decided_at: row
                .decided_at
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| corrupt("decision time"))?,
            received_at: row
                .received_at
                .parse()
                .map_err(|_| corrupt("arrival time"))?,
            received_run: row
                .received_run
                .as_deref()
                .map(Uuid::parse_str)
                .transpose()
                .map_err(|_| corrupt("receiving run"))?,
            composite_id: row.composite_id,
            detection_id: row.detection_id,
            tactic: row.tactic,
            technique: row.technique,
            account_upn: row.account_upn,
            account_sid: row.account_sid,
            account_domain: row.account_domain,
            falcon_host_link: row.falcon_host_link,
            cid: row.cid,
            falcon_time: row.falcon_time,
            target_id: row.target_id,
            target_upn: row.target_upn,
            pending_reason: row.pending_reason,
            decided_by: row.decided_by,
            decision_reason: row.decision_reason,
        })
    }
}

impl From<&DetectionRecord> for DetectionRow {
    fn from(d: &DetectionRecord) -> DetectionRow {
        DetectionRow {
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
            received_run: d.received_run.map(|r| r.to_string()),
        }
    }
}

impl DetectionFilter {
    pub(super) const TIME_COLUMN: &'static str = "received_at";

    pub(super) fn listing(&self) -> super::listing::Listing {
        super::listing::Listing::new(format!("SELECT {DETECTION_COLUMNS} FROM detections"))
            .customers(self.customers.as_deref())
            .equal("state", self.state.map(DetectionState::as_str))
            .before(Self::TIME_COLUMN, self.before.as_ref())
    }
}
