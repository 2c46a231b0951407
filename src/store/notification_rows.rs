//! A notification row as both databases return it, and its conversion at the store's edge.

use crate::domain::notification::{Audience, Channel, NoticeKind, Notification};
use crate::error::{Error, Result};
use crate::time::Timestamp;

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
