//! The notification outbox, once for both backends.
//!
//! Notices are owed by the transaction that appends their audit entry (see `audit_sql`); here
//! they are routed into messages, leased by one worker at a time, and settled attempt by
//! attempt. A message sent to a customer is recorded in the customer's chain when it is settled.

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::domain_sql::ChainTx;
use super::engine::{Conn, Engine, Row};
use super::listing::Listing;
use super::notification_rows::NotificationRow;
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::domain::notification::{
    Attempt, Audience, NewNotification, Notification, NotificationFilter, OwedNotice, RoutedNotice,
    Settlement,
};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The outbox: notices owed, messages to send, and what became of each attempt.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Notices not yet routed, oldest first, each with the audit entry it tells of.
    async fn owed_notices(&self, limit: u32) -> Result<Vec<OwedNotice>>;

    /// Marks notices routed and stores the messages each became, all in one transaction; a
    /// notice another worker routed first is skipped with its messages. Returns the messages
    /// stored.
    async fn route_notices(&self, routed: Vec<RoutedNotice>, now: Timestamp) -> Result<usize>;

    /// Stores messages that tell of no single entry (reminders, digests).
    async fn add_notifications(&self, messages: Vec<NewNotification>) -> Result<()>;

    /// Messages due for an attempt at `now` whose lease (if any) has ended.
    async fn due_notifications(&self, now: Timestamp, limit: u32) -> Result<Vec<Notification>>;

    /// Takes a due message until `lease_until`, counting the attempt; `None` when another
    /// worker took it first.
    async fn lease_notification(
        &self,
        id: uuid::Uuid,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Notification>>;

    /// Records an attempt and where the message stands after it; `false` when a later attempt
    /// (after this one's lease ran out) has already been recorded.
    async fn settle_notification(&self, settlement: &Settlement) -> Result<bool>;

    async fn notification(&self, id: uuid::Uuid) -> Result<Option<Notification>>;

    async fn notifications(&self, filter: &NotificationFilter) -> Result<Vec<Notification>>;

    /// Every attempt at the messages named, oldest first.
    async fn notification_attempts(&self, ids: &[uuid::Uuid]) -> Result<Vec<Attempt>>;

    /// When the newest message about `about` (an action's or a detection's id) was made.
    async fn last_notified_about(&self, about: &str) -> Result<Option<Timestamp>>;

    /// Whether a message with this dedupe key exists.
    async fn notification_made(&self, dedupe_key: &str) -> Result<bool>;

    /// Detections still pending whose last message (or arrival, if none) is older than
    /// `quiet_since`, oldest first.
    async fn detections_to_remind(
        &self,
        quiet_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<uuid::Uuid>>;
}

pub const NOTIFICATION_COLUMNS: &str = "id, chain, seq, kind, audience, customer, channel, destination, subject, message, \
     state, attempts, created_at, next_attempt_at, lease_until, finished_at, last_error, about";

const OWED: &str = "SELECT n.chain, n.seq, n.kind, n.created_at, a.entry, a.hash FROM notification_events n \
     JOIN audit_entries a ON a.chain = n.chain AND a.seq = n.seq \
     WHERE n.routed_at IS NULL ORDER BY n.created_at LIMIT $1";
/// Notices marked routed by one statement (two parameters each).
const MARKED_PER_STATEMENT: usize = 256;
// A message whose dedupe key exists was made by another instance already: that one stands.
const INSERT: &str = "INSERT INTO notifications (id, chain, seq, kind, audience, customer, channel, destination, \
     subject, message, state, attempts, created_at, next_attempt_at, about, dedupe_key) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11, $11, $12, $13) \
     ON CONFLICT (dedupe_key) DO NOTHING";
const LEASE_SUFFIX: &str = " WHERE id = $1 AND state = 'pending' AND next_attempt_at <= $2 \
     AND (lease_until IS NULL OR lease_until < $2)";
const INSERT_ATTEMPT: &str = "INSERT INTO notification_attempts (notification_id, attempt, at, ok, detail) \
     VALUES ($1, $2, $3, $4, $5)";
const SETTLE: &str = "UPDATE notifications SET state = $3, next_attempt_at = $4, lease_until = NULL, \
     finished_at = $5, last_error = $6 WHERE id = $1 AND attempts = $2 AND state = 'pending' RETURNING id";

#[async_trait]
impl<E> NotificationStore for E
where
    E: Engine,
    Conn<E>: ChainTx,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    for<'c> &'c Pool<E::Db>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> &'t str: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<&'t str>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<String>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> i64: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<i64>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> bool: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> (String, i64): FromRow<'r, Row<E>>,
    for<'r> OwedNotice: FromRow<'r, Row<E>>,
    for<'r> NotificationRow: FromRow<'r, Row<E>>,
    for<'r> Attempt: FromRow<'r, Row<E>>,
    for<'r> (Option<String>,): FromRow<'r, Row<E>>,
{
    async fn owed_notices(&self, limit: u32) -> Result<Vec<OwedNotice>> {
        Ok(sqlx::query_as::<E::Db, OwedNotice>(OWED)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?)
    }

    async fn route_notices(&self, routed: Vec<RoutedNotice>, now: Timestamp) -> Result<usize> {
        if routed.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            Box::pin(async move {
                let mut stored = 0;
                for chunk in routed.chunks(MARKED_PER_STATEMENT) {
                    let marked = mark_routed::<E::Db>(conn, chunk, now).await?;
                    for notice in chunk {
                        if marked.contains(&(notice.chain.clone(), notice.seq)) {
                            insert_all::<E::Db>(conn, &notice.messages).await?;
                            stored += notice.messages.len();
                        }
                    }
                }
                Ok(stored)
            })
        })
        .await
    }

    async fn add_notifications(&self, messages: Vec<NewNotification>) -> Result<()> {
        self.write(move |conn| Box::pin(async move { insert_all::<E::Db>(conn, &messages).await }))
            .await
    }

    async fn due_notifications(&self, now: Timestamp, limit: u32) -> Result<Vec<Notification>> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_attempt_at LIMIT $2"
        );
        sqlx::query_as::<E::Db, NotificationRow>(sqlx::AssertSqlSafe(sql))
            .bind(now.to_string())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(Notification::try_from)
            .collect()
    }

    async fn lease_notification(
        &self,
        id: uuid::Uuid,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Notification>> {
        let sql = format!(
            "UPDATE notifications SET lease_until = $3, attempts = attempts + 1{LEASE_SUFFIX} \
             RETURNING {NOTIFICATION_COLUMNS}"
        );
        let row = self
            .write_statement(move |conn| {
                Box::pin(async move {
                    Ok(
                        sqlx::query_as::<E::Db, NotificationRow>(sqlx::AssertSqlSafe(sql))
                            .bind(id.to_string())
                            .bind(now.to_string())
                            .bind(lease_until.to_string())
                            .fetch_optional(&mut *conn)
                            .await?,
                    )
                })
            })
            .await?;
        row.map(Notification::try_from).transpose()
    }

    async fn settle_notification(&self, settlement: &Settlement) -> Result<bool> {
        let sealer = self.sealer()?;
        let settlement = settlement.clone();
        let settled = self
            .write(move |conn| {
                Box::pin(async move {
                    settle::<E::Db>(conn, &settlement).await?;
                    if let Some((chain, event)) = settlement.customer_record() {
                        conn.append(&sealer, &chain, &Actor::Service, &event)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await;
        Ok(super::superseded_is_none(settled)?.is_some())
    }

    async fn notification(&self, id: uuid::Uuid) -> Result<Option<Notification>> {
        let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1");
        sqlx::query_as::<E::Db, NotificationRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .map(Notification::try_from)
            .transpose()
    }

    async fn notifications(&self, filter: &NotificationFilter) -> Result<Vec<Notification>> {
        let listing = Listing::new(format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications"))
            .customers(filter.customers.as_deref())
            .equal("state", filter.state.map(|s| s.as_str()))
            .before("created_at", filter.before.as_ref());
        let rows: Vec<NotificationRow> = listing
            .fetch(self.pool(), "created_at", filter.limit)
            .await?;
        rows.into_iter().map(Notification::try_from).collect()
    }

    async fn notification_attempts(&self, ids: &[uuid::Uuid]) -> Result<Vec<Attempt>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One read for the page; only numbered placeholders go into the text.
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT notification_id, attempt, at, ok, detail FROM notification_attempts \
             WHERE notification_id IN ({}) ORDER BY notification_id, attempt",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<E::Db, Attempt>(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.to_string());
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    async fn last_notified_about(&self, about: &str) -> Result<Option<Timestamp>> {
        newest_time(
            self.pool(),
            "SELECT MAX(created_at) FROM notifications WHERE about = $1",
            about,
        )
        .await
    }

    async fn detections_to_remind(
        &self,
        quiet_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<uuid::Uuid>> {
        let rows: Vec<(String,)> = sqlx::query_as::<E::Db, (String,)>(
            "SELECT d.id FROM detections d WHERE d.state = 'pending' AND COALESCE(\
             (SELECT MAX(n.created_at) FROM notifications n WHERE n.about = d.id), d.received_at) < $1 \
             ORDER BY d.received_at LIMIT $2",
        )
        .bind(quiet_since.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id,)| {
                id.parse()
                    .map_err(|_| Error::Internal(format!("stored detection id `{id}`")))
            })
            .collect()
    }

    async fn notification_made(&self, dedupe_key: &str) -> Result<bool> {
        let made = newest_time(
            self.pool(),
            "SELECT MAX(created_at) FROM notifications WHERE dedupe_key = $1",
            dedupe_key,
        )
        .await?;
        Ok(made.is_some())
    }
}

async fn newest_time<'q, DB>(
    pool: &Pool<DB>,
    sql: &'static str,
    key: &'q str,
) -> Result<Option<Timestamp>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
{
    let (newest,): (Option<String>,) = sqlx::query_as::<DB, (Option<String>,)>(sql)
        .bind(key)
        .fetch_one(pool)
        .await?;
    newest
        .map(|t| {
            t.parse::<Timestamp>()
                .map_err(|e| Error::Internal(format!("stored notification time: {e}")))
        })
        .transpose()
}

/// Marks the notices routed at `now` unless another worker did first; returns those it marked.
/// One statement for them all: a round after a storm of webhooks routes hundreds.
async fn mark_routed<DB>(
    conn: &mut DB::Connection,
    notices: &[RoutedNotice],
    now: Timestamp,
) -> Result<std::collections::HashSet<(String, i64)>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
{
    // PostgreSQL locks the rows in key order first, as routing them one by one in that order
    // did: two instances routing the same notices wait for each other instead of deadlocking.
    // SQLite's one writer needs no row locks (and has no FOR UPDATE).
    let locked = if DB::NAME == "PostgreSQL" {
        " ORDER BY chain, seq FOR UPDATE"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE notification_events SET routed_at = $1 WHERE (chain, seq) IN \
         (SELECT chain, seq FROM notification_events WHERE routed_at IS NULL AND (chain, seq) IN \
         (VALUES {}){locked}) RETURNING chain, seq",
        super::audit_sql::multi_row("", 2, notices.len(), 2, "")
    );
    let mut query =
        sqlx::query_as::<DB, (String, i64)>(sqlx::AssertSqlSafe(sql)).bind(now.to_string());
    for notice in notices {
        query = query.bind(notice.chain.as_str()).bind(notice.seq);
    }
    Ok(query.fetch_all(&mut *conn).await?.into_iter().collect())
}

async fn insert_all<DB>(conn: &mut DB::Connection, messages: &[NewNotification]) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
{
    for m in messages {
        sqlx::query::<DB>(INSERT)
            .bind(m.id.to_string())
            .bind(m.chain.as_deref())
            .bind(m.seq)
            .bind(m.kind.as_str())
            .bind(m.audience.as_str())
            .bind(m.customer.as_ref().map(|c| c.as_str()))
            .bind(m.channel.as_str())
            .bind(m.destination.as_str())
            .bind(m.subject.as_str())
            .bind(m.message.as_str())
            .bind(m.created_at.to_string())
            .bind(m.about.as_deref())
            .bind(m.dedupe_key.as_deref())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes the attempt and the message's new state; [`Error::Superseded`] when the message has
/// moved on since this attempt's lease (the caller then rolls back).
async fn settle<DB>(conn: &mut DB::Connection, s: &Settlement) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let (state, next, finished, error) = s.columns();
    let updated = sqlx::query_as::<DB, (String,)>(SETTLE)
        .bind(s.notification.id.to_string())
        .bind(s.notification.attempts)
        .bind(state)
        .bind(next)
        .bind(finished)
        .bind(error)
        .fetch_optional(&mut *conn)
        .await?;
    if updated.is_none() {
        return Err(Error::Superseded);
    }
    sqlx::query::<DB>(INSERT_ATTEMPT)
        .bind(s.notification.id.to_string())
        .bind(s.notification.attempts)
        .bind(s.at.to_string())
        .bind(s.ok())
        .bind(s.detail.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Settlement {
    /// The entry recording a notice sent to a customer, in that customer's chain.
    fn customer_record(&self) -> Option<(ChainId, AuditEvent)> {
        let n = &self.notification;
        if !self.ok() || n.audience != Audience::Customer {
            return None;
        }
        Some((
            ChainId::Customer(n.customer.clone()?),
            AuditEvent::NotificationSent {
                notification_id: n.id,
                kind: n.kind.as_str().to_owned(),
                channel: n.channel.as_str().to_owned(),
                destination: n.destination.clone(),
                about_seq: n.seq.and_then(|s| u64::try_from(s).ok()),
            },
        ))
    }
}
