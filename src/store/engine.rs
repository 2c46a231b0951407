//! What a backend gives the storage code written once: its read pool, one way to run a write
//! transaction (SQLite: the group-commit writer; PostgreSQL: a pool transaction), and the two
//! writes and the read each backend does its own way for speed (an audit append, a new
//! detection, a chain's entries).

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::{Database, Pool};

use super::detection_rows::DetectionRow;
use super::detections_sql::TargetUpdate;
use super::domain_sql::CustomerRecord;
use super::onboarding_sql::CustomerSecretRow;
use crate::audit::append::{Appended, Sealer};
use crate::audit::records::{EntryLines, EntryRecord};
use crate::domain::ChainId;
use crate::domain::action::{ActionRecord, Admission, Finish, Guard, NewAction};
use crate::domain::detection::DetectionRecord;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::Result;
use crate::time::Timestamp;

/// Entries per run of export lines built from rows (about 1 MB of typical entries).
const LINES_PER_RUN: usize = 1024;

/// The connection a write runs on.
pub type Conn<E> = <<E as Engine>::Db as Database>::Connection;

/// A backend's engine. The concern traits (`AuditStore`, `CustomerStore`, `ActionStore`, …)
/// are implemented once for every engine, beside their SQL, so a new storage method is
/// written once, in SQL both databases run.
pub trait Engine: Send + Sync + 'static {
    type Db: Database;

    /// The pool reads run on (SQLite: read-only connections beside the writer).
    fn pool(&self) -> &Pool<Self::Db>;

    /// The sealer that signs audit entries; an error for a store opened without one.
    fn sealer(&self) -> Result<Arc<Sealer>>;

    /// Runs `work` in one write transaction, committed when it returns `Ok`; on `Err` nothing
    /// it wrote remains.
    fn write<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn<Self>) -> BoxFuture<'c, Result<T>> + Send + 'static;

    /// Runs `work`, which must be a single statement and fail only with that statement's own
    /// database error, without a transaction of its own (SQLite: batched with other writes,
    /// without a savepoint, so any other error undoes the whole batch).
    fn write_statement<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn<Self>) -> BoxFuture<'c, Result<T>> + Send + 'static;

    /// Appends one event to a chain, durably.
    fn append<'a>(
        &'a self,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> BoxFuture<'a, Result<Appended>>;

    /// Entries `first..=last` of a chain in `seq` order, streamed (each engine reads them its
    /// fastest way: verification and exports read millions).
    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>>;

    /// The export's lines for entries `first..=last` of a chain, in `seq` order, a run of them
    /// at a time; an engine that can build them itself spares a copy of every entry.
    fn entry_lines<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryLines>> {
        self.entry_range(chain, first, last)
            .chunks(LINES_PER_RUN)
            .map(|records| {
                let mut lines = EntryLines::default();
                for record in records {
                    lines.push(record?);
                }
                Ok(lines)
            })
            .boxed()
    }

    /// Records an action's request (its admission with the guard rails), in one transaction
    /// with its entries.
    fn admit(&self, action: NewAction, guard: Guard) -> BoxFuture<'_, Result<Admission>>;

    /// Records an action's one outcome with its entry; [`Error::Superseded`](crate::error::Error::Superseded)
    /// when it had one.
    fn finish(&self, finish: Finish) -> BoxFuture<'_, Result<ActionRecord>>;

    /// Marks an analyst's TOTP step used, at most once (see `analysts_sql::consume_step`).
    fn consume_step(
        &self,
        analyst: uuid::Uuid,
        step: u64,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool>>;

    /// Stores the account a pending detection was matched to and why it waits, in one
    /// statement; the row as updated, if the detection was still pending.
    fn store_target(&self, update: TargetUpdate) -> BoxFuture<'_, Result<Option<DetectionRow>>>;

    /// The customer `slug`, as stored ([`SELECT_CUSTOMER`](super::domain_sql::SELECT_CUSTOMER)).
    fn customer_row<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Option<CustomerRecord>>>;

    /// The customer with its webhook secrets valid at `now`
    /// ([`CUSTOMER_WITH_SECRETS`](super::onboarding_sql::CUSTOMER_WITH_SECRETS)).
    fn customer_secret_rows<'a>(
        &'a self,
        slug: &'a str,
        now: String,
    ) -> BoxFuture<'a, Result<Vec<CustomerSecretRow>>>;

    /// Stores a detection unless its composite id is known (then the stored one, `false`).
    fn record_detection<'a>(
        &'a self,
        detection: &'a DetectionRecord,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<(DetectionRecord, bool)>>;
}

/// A row the engine's database returns.
pub type Row<E> = <<E as Engine>::Db as Database>::Row;
