//! Notifications as every layer sees them: who a message is for, how it travels, where it
//! stands, and what an attempt came to. The outbox and its workers are in `notify`.

use serde::Serialize;
use uuid::Uuid;

use super::CustomerSlug;
use super::cursor::ListCursor;
pub use super::event::NoticeKind;
use crate::time::Timestamp;

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Soc,
    Customer,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Soc => "soc",
            Audience::Customer => "customer",
        }
    }

    pub fn parse_stored(text: &str) -> Option<Audience> {
        [Audience::Soc, Audience::Customer]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Slack,
    Teams,
    /// A Standard Webhooks POST (signed), for a SOAR or a pager.
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Slack,
        Channel::Teams,
        Channel::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse_stored(text: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    /// Not yet delivered; another attempt is due at `next_attempt_at`.
    Pending,
    Sent,
    /// Every attempt failed until `notify.give_up_after_secs` had passed.
    Failed,
}

impl NotificationState {
    pub const ALL: [NotificationState; 3] = [
        NotificationState::Pending,
        NotificationState::Sent,
        NotificationState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for NotificationState {
    type Err = crate::domain::InvalidValue;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        NotificationState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                crate::domain::InvalidValue::Input(format!(
                    "`{text}` is not pending, sent or failed"
                ))
            })
    }
}

/// A notice owed and not yet routed, with the audit entry it tells of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OwedNotice {
    pub chain: String,
    pub seq: i64,
    pub kind: String,
    pub created_at: String,
    /// The entry's canonical JSON and hash, as stored.
    pub entry: String,
    pub hash: String,
}

/// An owed notice and the messages routing made of it (possibly none).
#[derive(Debug, Clone)]
pub struct RoutedNotice {
    pub chain: String,
    pub seq: i64,
    pub messages: Vec<NewNotification>,
}

/// A message to store, rendered for its destination.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: Uuid,
    /// The audit entry it tells of, if one.
    pub chain: Option<String>,
    pub seq: Option<i64>,
    pub kind: NoticeKind,
    pub audience: Audience,
    pub customer: Option<CustomerSlug>,
    pub channel: Channel,
    pub destination: String,
    pub subject: String,
    /// The rendered message (`notify::render::Message` as JSON).
    pub message: String,
    pub created_at: Timestamp,
    /// The id of the action or detection it is about, if one.
    pub about: Option<String>,
    /// Makes a message several instances may decide on at once exist only once.
    pub dedupe_key: Option<String>,
}

/// A stored message and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: Uuid,
    pub chain: Option<String>,
    pub seq: Option<i64>,
    pub kind: NoticeKind,
    pub audience: Audience,
    pub customer: Option<CustomerSlug>,
    pub channel: Channel,
    pub destination: String,
    pub subject: String,
    #[serde(skip)]
    pub message: String,
    pub state: NotificationState,
    pub attempts: i64,
    pub created_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub about: Option<String>,
}

/// One attempt at delivering a message.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub notification_id: String,
    pub attempt: i64,
    pub at: String,
    pub ok: bool,
    pub detail: String,
}

/// Which messages to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    /// Only these customers' messages (the SOC's own messages have none); `None`: all.
    pub customers: Option<Vec<CustomerSlug>>,
    pub state: Option<NotificationState>,
    pub before: Option<ListCursor>,
    pub limit: u32,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Sent,
    /// Failed; try again at this time.
    Retry(Timestamp),
    /// Failed, and the message is too old to try again.
    GaveUp,
}

/// An attempt to record, for the message as it was leased.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub notification: Notification,
    pub at: Timestamp,
    pub outcome: AttemptOutcome,
    /// What the other side said (or why it could not be reached); never a secret.
    pub detail: String,
}

impl Settlement {
    pub fn ok(&self) -> bool {
        self.outcome == AttemptOutcome::Sent
    }

    /// The columns the message gets: state, next attempt, finish time, last error.
    pub fn columns(&self) -> (&'static str, String, Option<String>, Option<String>) {
        let at = self.at.to_string();
        match &self.outcome {
            AttemptOutcome::Sent => (NotificationState::Sent.as_str(), at.clone(), Some(at), None),
            AttemptOutcome::Retry(next) => (
                NotificationState::Pending.as_str(),
                next.to_string(),
                None,
                Some(self.detail.clone()),
            ),
            AttemptOutcome::GaveUp => (
                NotificationState::Failed.as_str(),
                at.clone(),
                Some(at),
                Some(self.detail.clone()),
            ),
        }
    }
}
