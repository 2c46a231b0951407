//! Notifications: the SOC hears at once of what killswitch did or is waiting for, and each
//! customer of every action on its tenant, with a signed witness of its audit log.
//!
//! The path: an audit entry that calls for a notice owes one in its own transaction (the
//! outbox); a worker routes it into messages (one per destination, rendered then), leases each
//! message, sends it, and settles the attempt: sent, again later with backoff, or given up
//! after `notify.give_up_after_secs`.

pub mod email;
pub mod render;
pub mod route;
pub mod schedule;
pub mod settings;
pub mod webhook;
pub mod worker;

use serde::Serialize;
use uuid::Uuid;

use crate::domain::CustomerSlug;
use crate::domain::cursor::ListCursor;
pub use crate::domain::event::NoticeKind;
use crate::error::{Error, Result};
use crate::time::Timestamp;
pub use settings::{NotifySettings, WebhookKind};

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

    fn parse_stored(text: &str) -> Option<Audience> {
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

    fn parse_stored(text: &str) -> Option<Channel> {
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
    /// The rendered message ([`render::Message`] as JSON).
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

/// A notification row as both databases return it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub chain: Option<String>,
    pub seq: Option<i64>,
    pub kind: String,
    pub audience: String,
    pub customer: Option<String>,
    pub channel: String,
    pub destination: String,
    pub subject: String,
    pub message: String,
    pub state: String,
    pub attempts: i64,
    pub created_at: String,
    pub next_attempt_at: String,
    pub lease_until: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    pub about: Option<String>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = Error;

    fn try_from(row: NotificationRow) -> Result<Notification> {
        let corrupt = |what: &str| {
            Error::Internal(format!(
                "stored notification {} has an invalid {what}",
                row.id
            ))
        };
        let time = |text: &str, what: &str| text.parse::<Timestamp>().map_err(|_| corrupt(what));
        Ok(Notification {
            id: row.id.parse().map_err(|_| corrupt("id"))?,
            kind: NoticeKind::parse_stored(&row.kind).ok_or_else(|| corrupt("kind"))?,
            audience: Audience::parse_stored(&row.audience).ok_or_else(|| corrupt("audience"))?,
            customer: row
                .customer
                .as_deref()
                .map(|c| c.parse().map_err(|_| corrupt("customer")))
                .transpose()?,
            channel: Channel::parse_stored(&row.channel).ok_or_else(|| corrupt("channel"))?,
            state: row.state.parse().map_err(|_| corrupt("state"))?,
            created_at: time(&row.created_at, "creation time")?,
            next_attempt_at: time(&row.next_attempt_at, "next attempt time")?,
            finished_at: row
                .finished_at
                .as_deref()
                .map(|t| time(t, "finish time"))
                .transpose()?,
            chain: row.chain,
            seq: row.seq,
            destination: row.destination,
            subject: row.subject,
            message: row.message,
            attempts: row.attempts,
            last_error: row.last_error,
            about: row.about,
        })
    }
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
