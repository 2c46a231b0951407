//! The writer's plain SQLite connection, for the writes that arrive in floods: a Falcon
//! detection stored as it arrives (with its `detection_received` entry) and the account it was
//! matched to; an action's admission and outcome; a used TOTP step.
//!
//! sqlx hands every statement to the connection's worker thread and waits to be woken with the
//! answer; under a storm of webhooks those hand-overs, not SQLite, were the writer's time (about
//! 100 µs a write against a few µs of SQLite's own work). Here the writer's own thread runs a
//! whole batch statement after statement on a rusqlite connection to the same file, on the
//! same SQLite library. The SQL is the text both backends share (`$n` placeholders,
//! which SQLite takes as named parameters), so nothing is written twice.
//!
//! The writer runs this connection's batches and its sqlx connection's one after the other,
//! never both at once; each keeps its own cache of chain heads and trusts it only while
//! `PRAGMA data_version` shows that no other connection has committed since its last commit.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{CachedStatement, Connection, OpenFlags, Row, Statement};

use super::audit_sql::{self, ROWS_PER_STATEMENT};
use super::sqlite_writer::{AppendRequest, BatchFailed};
use crate::audit::append::{AppendPlan, Appended, Sealer};
use crate::audit::records::{CheckpointRecord, HeadRecord};
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};

/// The writer's page cache: the indexes a write goes through (detections keyed by a random
/// composite id, actions, audit entries) stay in memory at a million rows each. SQLite's
/// default, 2 MB, held them up to about 100 k.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Statements kept prepared: the fixed ones and the multi-row appends of the usual batch sizes.
const PREPARED_STATEMENTS: usize = 64;

/// A job of a direct batch.
pub(super) trait DirectJob: Send {
    /// Runs the job's statements; `Err` undoes the whole batch.
    fn run(&mut self, batch: &mut DirectBatch<'_>) -> Result<()>;
    /// Delivers the job's result, or the commit error that undid it.
    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>);
}

/// Where to open the connection again after a failed batch.
#[derive(Clone)]
pub(super) struct DirectOpener {
    filename: String,
    flags: OpenFlags,
    busy_timeout: Duration,
}

impl DirectOpener {
    pub(super) fn new(url: &str, file: &std::path::Path, busy_timeout: Duration) -> Self {
        let (filename, flags) =
            super::sqlite_entries::uri_filename(url, file, OpenFlags::SQLITE_OPEN_READ_WRITE);
        DirectOpener {
            filename,
            flags,
            busy_timeout,
        }
    }

    /// A write connection as durable as sqlx's: every commit synced, foreign keys enforced.
    pub(super) fn open(&self) -> Result<DirectConn> {
        let conn = Connection::open_with_flags(&self.filename, self.flags).map_err(unavailable)?;
        conn.busy_timeout(self.busy_timeout).map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(unavailable)?;
        Ok(DirectConn {
            conn,
            appends: Appends::default(),
            data_version: None,
        })
    }
}

pub(super) struct DirectConn {
    conn: Connection,
    appends: Appends,
    /// `PRAGMA data_version` as of this connection's last commit.
    data_version: Option<i64>,
}

/// A connection's cache of the chain heads it wrote, and the appends sealed for its open batch
/// (written before the commit). The cache is trusted only while `PRAGMA data_version` shows
/// that no other connection (the writer's other one, a CLI command beside the server) has
/// committed since the owner's last commit.
#[derive(Default)]
pub(super) struct Appends {
    heads: HashMap<String, HeadRecord>,
    plans: Vec<AppendPlan>,
}

/// An open batch: its transaction, and a way to seal appends into it.
pub(super) struct DirectBatch<'t> {
    conn: &'t mut Connection,
    appends: &'t mut Appends,
    sealer: Option<&'t Sealer>,
}

impl DirectBatch<'_> {
    /// The batch's connection, inside its transaction.
    pub(super) fn conn(&self) -> &Connection {
        self.conn
    }

    /// Seals a queued entry with the store's sealer.
    pub(super) fn append(&mut self, request: &AppendRequest) -> Result<Appended> {
        let sealer = self
            .sealer
            .ok_or_else(|| Error::AuditUnavailable("the store was opened read-only".to_owned()))?;
        self.seal(sealer, &request.chain, &request.actor, &request.event)
    }

    /// Seals an entry after the batch's earlier appends; written with them before the commit.
    pub(super) fn seal(
        &mut self,
        sealer: &Sealer,
        chain: &ChainId,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<Appended> {
        let head = match self.appends.head(chain.as_str()) {
            Some(head) => Some(head),
            None => select_head(self.conn, chain.as_str())?,
        };
        Ok(self
            .appends
            .push(sealer.plan(chain, head.as_ref(), actor, event)?))
    }

    /// Runs `steps` in a savepoint: on `Err` its statements and its appends are undone and the
    /// batch goes on; the outer `Err` (the savepoint itself failed) undoes the batch.
    pub(super) fn in_savepoint<T>(
        &mut self,
        steps: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Result<T>> {
        self.conn.execute_batch("SAVEPOINT job").map_err(failed)?;
        let mark = self.appends.plans.len();
        let outcome = steps(self);
        match &outcome {
            Ok(_) => self.conn.execute_batch("RELEASE job"),
            Err(_) => {
                self.appends.discard_from(mark);
                self.conn.execute_batch("ROLLBACK TO job; RELEASE job")
            }
        }
        .map_err(failed)?;
        Ok(outcome)
    }
}

impl Appends {
    /// The chain's head as of the appends sealed so far, if known.
    pub(super) fn head(&self, chain: &str) -> Option<HeadRecord> {
        self.heads.get(chain).cloned()
    }

    /// Adds a sealed append; its head becomes the chain's.
    pub(super) fn push(&mut self, plan: AppendPlan) -> Appended {
        let appended = plan.appended.clone();
        self.heads
            .insert(plan.head.chain.clone(), plan.head.clone());
        self.plans.push(plan);
        appended
    }

    /// The appends to write now, in the order they were sealed.
    pub(super) fn take_plans(&mut self) -> Vec<AppendPlan> {
        std::mem::take(&mut self.plans)
    }

    pub(super) fn forget_heads(&mut self) {
        self.heads.clear();
    }

    pub(super) fn forget_all(&mut self) {
        *self = Appends::default();
    }

    /// Forgets the appends sealed since `mark`, and the heads they made.
    fn discard_from(&mut self, mark: usize) {
        for dropped in self.plans.split_off(mark) {
            let chain = dropped.head.chain;
            match self
                .plans
                .iter()
                .rev()
                .find(|plan| plan.head.chain == chain)
            {
                Some(earlier) => self.heads.insert(chain, earlier.head.clone()),
                // Nothing of this chain waits: the database holds its head again.
                None => self.heads.remove(&chain),
            };
        }
    }
}

impl DirectConn {
    /// Runs `jobs` in one transaction and tells each how it ended. `Err` when the batch was
    /// undone: the connection may then be in any state, so the caller drops it.
    pub(super) fn run_batch(
        &mut self,
        sealer: Option<&Sealer>,
        jobs: &mut [Box<dyn DirectJob>],
    ) -> Result<()> {
        // IMMEDIATE takes the write lock up front, so another process waits for it instead of
        // failing halfway through with SQLITE_BUSY.
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(failed)?;
        if self.data_version != Some(version) {
            self.appends.forget_heads();
        }
        self.appends.take_plans();
        let mut batch = DirectBatch {
            conn: &mut self.conn,
            appends: &mut self.appends,
            sealer,
        };
        for job in jobs.iter_mut() {
            job.run(&mut batch)?;
        }
        let plans = self.appends.take_plans();
        write_plans(&self.conn, &plans)?;
        self.conn.execute_batch("COMMIT").map_err(failed)?;
        // Our own commits do not change data_version for this connection.
        self.data_version = Some(version);
        Ok(())
    }
}

fn select_head(conn: &Connection, chain: &str) -> Result<Option<HeadRecord>> {
    query_first(conn, audit_sql::SELECT_HEAD, &[&chain], |row| {
        Ok(HeadRecord {
            chain: row.get(0)?,
            seq: row.get(1)?,
            hash: row.get(2)?,
        })
    })
    .map_err(failed)
}

/// The statement for `sql`, prepared once per connection, with `values` bound to `$1`, `$2`, ….
pub(super) fn prepared<'c>(
    conn: &'c Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> rusqlite::Result<CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind_numbered(&mut statement, values)?;
    Ok(statement)
}

/// The first row `sql` returns with `values` bound, read by `read`.
pub(super) fn query_first<T>(
    conn: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut statement = prepared(conn, sql, values)?;
    let mut rows = statement.raw_query();
    rows.next()?.map(read).transpose()
}

/// Writes the batch's appends: entries, heads and notices a multi-row INSERT per table (up to
/// its row limit), then checkpoints.
fn write_plans(conn: &Connection, plans: &[AppendPlan]) -> Result<()> {
    for chunk in plans.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<&dyn ToSql> = chunk
            .iter()
            .flat_map(|plan| {
                let e = &plan.entry;
                [
                    &e.chain as &dyn ToSql,
                    &e.seq,
                    &e.time,
                    &e.event,
                    &e.entry,
                    &e.hash,
                ]
            })
            .collect();
        insert_rows(
            conn,
            audit_sql::INSERT_ENTRIES,
            audit_sql::ENTRY_COLUMNS,
            "",
            &values,
        )?;
    }
    let heads = audit_sql::newest_heads(plans);
    for chunk in heads.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<&dyn ToSql> = chunk
            .iter()
            .flat_map(|head| [&head.chain as &dyn ToSql, &head.seq, &head.hash])
            .collect();
        insert_rows(
            conn,
            audit_sql::UPSERT_HEADS,
            audit_sql::HEAD_COLUMNS,
            audit_sql::UPSERT_HEADS_SUFFIX,
            &values,
        )?;
    }
    let notices = audit_sql::notices(plans);
    for chunk in notices.chunks(ROWS_PER_STATEMENT) {
        let kinds: Vec<&str> = chunk.iter().map(|(_, kind)| kind.as_str()).collect();
        let values: Vec<&dyn ToSql> = chunk
            .iter()
            .zip(&kinds)
            .flat_map(|((plan, _), kind)| {
                let e = &plan.entry;
                [&e.chain as &dyn ToSql, &e.seq, kind, &e.time]
            })
            .collect();
        insert_rows(
            conn,
            audit_sql::INSERT_NOTICES,
            audit_sql::NOTICE_COLUMNS,
            "",
            &values,
        )?;
    }
    for checkpoint in plans.iter().filter_map(|plan| plan.checkpoint.as_ref()) {
        write_checkpoint(conn, checkpoint)?;
    }
    Ok(())
}

/// One multi-row statement of `values.len() / columns` rows.
fn insert_rows(
    conn: &Connection,
    prefix: &str,
    columns: usize,
    suffix: &str,
    values: &[&dyn ToSql],
) -> Result<()> {
    let sql = audit_sql::multi_row(prefix, columns, values.len() / columns, 1, suffix);
    let mut statement = conn.prepare_cached(&sql).map_err(failed)?;
    // `multi_row` numbers the placeholders in the order they appear, from `$1`, so each one's
    // position is its number.
    for (index, value) in values.iter().enumerate() {
        statement
            .raw_bind_parameter(index + 1, value)
            .map_err(failed)?;
    }
    statement.raw_execute().map_err(failed)?;
    Ok(())
}

fn write_checkpoint(conn: &Connection, cp: &CheckpointRecord) -> Result<()> {
    let values: [&dyn ToSql; 6] = [
        &cp.chain,
        &cp.seq,
        &cp.hash,
        &cp.time,
        &cp.key_id,
        &cp.signature,
    ];
    let mut statement = prepared(conn, audit_sql::INSERT_CHECKPOINT, &values).map_err(failed)?;
    statement.raw_execute().map_err(failed)?;
    Ok(())
}

/// Binds `values[n - 1]` to every `$n` of the statement, wherever it appears, as sqlx does:
/// SQLite numbers named parameters by first appearance, not by their names.
pub(super) fn bind_numbered(
    statement: &mut Statement<'_>,
    values: &[&dyn ToSql],
) -> rusqlite::Result<()> {
    let mut bound = 0;
    for (n, value) in values.iter().enumerate() {
        if let Some(index) = statement.parameter_index(&format!("${}", n + 1))? {
            statement.raw_bind_parameter(index, value)?;
            bound += 1;
        }
    }
    if bound != statement.parameter_count() {
        return Err(rusqlite::Error::InvalidParameterCount(
            values.len(),
            statement.parameter_count(),
        ));
    }
    Ok(())
}

/// Whether SQLite undid only the statement that failed (a constraint violation, with the
/// default ABORT resolution that every table keeps); any other error may have ended the
/// transaction.
pub(super) fn statement_undone(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _)
        if failure.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// A write error: the batch cannot go on.
pub(super) fn failed(e: rusqlite::Error) -> Error {
    Error::AuditUnavailable(format!("SQLite: {e}"))
}

fn unavailable(e: rusqlite::Error) -> Error {
    Error::DatabaseUnavailable(format!("cannot open SQLite for writing: {e}"))
}
