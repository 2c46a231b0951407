//! The single SQLite writer, with group commit.
//!
//! SQLite allows one writer at a time, a durable commit (`synchronous=FULL`) costs an fsync, and
//! every statement is a round trip to sqlx's worker thread. So writes are queued to one thread
//! that runs whatever is waiting in a single `BEGIN IMMEDIATE` transaction and commits once; a
//! caller hears back only after that commit, so "returned Ok" always means "durably on disk".
//!
//! Plain audit appends are sealed in memory against a cache of chain heads and written with
//! one multi-row statement per table. Other writes (domain rows together with their audit
//! entry) run as closures, each in its own savepoint so a failing one is undone without
//! disturbing the rest. A write of a single statement, optionally followed by an audit entry,
//! needs no savepoint: SQLite undoes a failed statement by itself, and its entry joins the
//! batch's multi-row append.
//!
//! The writes that come in floods skip sqlx altogether: a detection's, and an action's
//! admission and outcome run on a plain connection of the writer's (`sqlite_direct`), a batch
//! of them in one transaction of their own, before the batch's other jobs.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::audit_sql::SELECT_HEAD;
use super::sqlite_direct::{self, Appends, DirectBatch, DirectConn, DirectJob, DirectOpener};
use crate::audit::append::{Appended, Sealer};
use crate::audit::records::HeadRecord;
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};

/// Most jobs folded into one transaction; bounds the latency one commit adds to its callers.
const MAX_BATCH: usize = 512;
/// Closure jobs cost a handful of statements each (~50 µs per statement through sqlx's worker
/// thread) and everyone in a batch waits for the whole batch: a few per commit keeps each
/// caller's wait short, while an fsync per few jobs is still cheap.
const MAX_WORK_PER_BATCH: usize = 32;
const QUEUE_DEPTH: usize = 4096;

/// The error that undid a batch's transaction, shared by every job of the batch: each caller
/// hears that the audit log could not be written, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(super) struct BatchFailed(Arc<Error>);

impl From<BatchFailed> for Error {
    fn from(failed: BatchFailed) -> Self {
        Error::AuditUnavailable(failed.to_string())
    }
}

type Work<T> = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send>;

trait WorkJob: Send {
    /// Runs the job's statements; `false` when the job failed and must be rolled back.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;
    /// Delivers the job's result, or the commit error that undid it.
    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>);
}

impl<T: Send + 'static> WorkJob for Typed<Work<T>, T> {
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            let output = work(conn).await;
            let ok = output.is_ok();
            self.output = Some(output);
            ok
        })
    }

    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>) {
        (*self).deliver(commit);
    }
}

/// What a single-statement write asks of the writer once its statement ran.
pub enum Then<T> {
    /// Nothing more; `T` is the caller's once the batch commits.
    Done(T),
    /// Audit the write with this entry, sealed into the same batch.
    Append { audit: Box<AppendRequest>, value: T },
}

type Single<T> =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<Then<T>>> + Send>;

/// An entry to append: to which chain, caused by whom, what happened.
pub struct AppendRequest {
    pub chain: ChainId,
    pub actor: Actor,
    pub event: AuditEvent,
}

trait SingleJob: Send {
    /// Runs the statement. `Ok(Some(_))` asks for an entry; `Err` means the batch must be undone
    /// (the error was not one SQLite confines to the failed statement).
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<Option<Box<AppendRequest>>>>;
    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>);
}

impl<T: Send + 'static> SingleJob for Typed<Single<T>, T> {
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<Option<Box<AppendRequest>>>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Err(Error::Internal("write job was run twice".to_owned()));
            };
            match work(conn).await {
                Ok(Then::Done(value)) => {
                    self.output = Some(Ok(value));
                    Ok(None)
                }
                Ok(Then::Append { audit, value }) => {
                    self.output = Some(Ok(value));
                    Ok(Some(audit))
                }
                Err(e) if statement_undone(&e) => {
                    self.output = Some(Err(e));
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>) {
        (*self).deliver(commit);
    }
}

/// A constraint violation undoes only the statement that caused it (SQLite's default ABORT
/// conflict resolution; no table or statement here asks for ROLLBACK, and a test keeps it so);
/// any other error (I/O, a full disk) may have undone the whole transaction, so the batch
/// cannot go on.
fn statement_undone(error: &Error) -> bool {
    use sqlx::error::ErrorKind;
    matches!(error, Error::Database(sqlx::Error::Database(db)) if matches!(
        db.kind(),
        ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
    ))
}

/// A queued job: its closure (`W`, until it runs), its result once run, and where the result
/// goes.
struct Typed<W, T> {
    work: Option<W>,
    output: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<W, T> Typed<W, T> {
    fn boxed(work: W, reply: oneshot::Sender<Result<T>>) -> Box<Self> {
        Box::new(Typed {
            work: Some(work),
            output: None,
            reply,
        })
    }

    fn deliver(self, commit: Result<(), BatchFailed>) {
        deliver(self.reply, commit, self.output);
    }
}

/// Hands a job its result: its own error, its value once committed, or the commit's failure.
fn deliver<T>(
    reply: oneshot::Sender<Result<T>>,
    commit: Result<(), BatchFailed>,
    output: Option<Result<T>>,
) {
    let result = match (commit, output) {
        // The job's own error stands even when the batch committed without it.
        (_, Some(Err(e))) => Err(e),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(failed), _) => Err(failed.into()),
        (Ok(()), None) => Err(Error::Internal("write job was never run".to_owned())),
    };
    // The caller may have gone away; the write itself stands either way.
    let _ = reply.send(result);
}

struct AppendJob {
    request: AppendRequest,
    sealed: Option<Appended>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// A statement for the writer's plain connection (optionally asking for an entry), as a
/// closure; it runs on a blocking thread.
type Direct<T> = Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<Then<T>> + Send>;

impl<T: Send + 'static> DirectJob for Typed<Direct<T>, T> {
    fn run(&mut self, batch: &mut DirectBatch<'_>) -> Result<()> {
        let Some(work) = self.work.take() else {
            return Err(Error::Internal("write job was run twice".to_owned()));
        };
        self.output = Some(match work(batch.conn()) {
            Ok(Then::Done(value)) => Ok(value),
            Ok(Then::Append { audit, value }) => {
                batch.append(&audit)?;
                Ok(value)
            }
            // The job's own failure; the batch goes on without it.
            Err(e) if sqlite_direct::statement_undone(&e) => {
                Err(Error::Internal(format!("SQLite refused the write: {e}")))
            }
            Err(e) => return Err(sqlite_direct::failed(e)),
        });
        Ok(())
    }

    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>) {
        (*self).deliver(commit);
    }
}

/// Steps written over [`ActionStatements`](super::action_steps::ActionStatements), for the plain
/// connection; they run in a savepoint of their own.
type Steps<T> = Box<dyn FnOnce(&mut DirectBatch<'_>) -> Result<T> + Send>;

impl<T: Send + 'static> DirectJob for Typed<Steps<T>, T> {
    fn run(&mut self, batch: &mut DirectBatch<'_>) -> Result<()> {
        let Some(steps) = self.work.take() else {
            return Err(Error::Internal("write job was run twice".to_owned()));
        };
        self.output = Some(batch.in_savepoint(steps)?);
        Ok(())
    }

    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>) {
        (*self).deliver(commit);
    }
}

enum Job {
    /// Runs on the plain connection (a detection's writes, an action's admission and outcome).
    Direct(Box<dyn DirectJob>),
    /// Runs on the sqlx connection.
    Sqlx(SqlxJob),
}

enum SqlxJob {
    Append(Box<AppendJob>),
    Work(Box<dyn WorkJob>),
    Single(Box<dyn SingleJob>),
}

impl SqlxJob {
    fn finish(self, commit: Result<(), BatchFailed>) {
        match self {
            SqlxJob::Work(job) => job.finish(commit),
            SqlxJob::Single(job) => job.finish(commit),
            SqlxJob::Append(job) => {
                let result = match (commit, job.sealed) {
                    (Ok(()), Some(appended)) => Ok(appended),
                    (Ok(()), None) => Err(Error::Internal("append was never sealed".to_owned())),
                    (Err(failed), _) => Err(failed.into()),
                };
                let _ = job.reply.send(result);
            }
        }
    }
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the one write connection; `connect` opens a fresh one after a
    /// failed batch.
    pub fn spawn(
        conn: SqliteConnection,
        connect: SqliteConnectOptions,
        direct: DirectOpener,
        sealer: Option<Arc<Sealer>>,
    ) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let state = WriterState {
            conn: Some(conn),
            connect,
            direct: None,
            open_direct: direct,
            sealer,
            appends: Appends::default(),
            data_version: None,
        };
        let runtime = tokio::runtime::Handle::current();
        let started = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || state.run(queue, runtime));
        if let Err(e) = started {
            // The queue's receiver went with the thread: every write says the writer stopped.
            tracing::error!(error = %e, "the SQLite writer thread could not be started");
        }
        Writer { jobs }
    }

    /// Appends one event; returns after the commit that made it durable.
    pub async fn append(
        &self,
        chain: ChainId,
        actor: Actor,
        event: AuditEvent,
    ) -> Result<Appended> {
        self.ask(|reply| {
            Job::Sqlx(SqlxJob::Append(Box::new(AppendJob {
                request: AppendRequest {
                    chain,
                    actor,
                    event,
                },
                sealed: None,
                reply,
            })))
        })
        .await
    }

    /// Runs `work` inside the next write transaction and returns its result after the commit.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.ask(|reply| {
            Job::Sqlx(SqlxJob::Work(Typed::<Work<T>, T>::boxed(
                Box::new(work),
                reply,
            )))
        })
        .await
    }

    /// Runs `work`, one statement that writes (reads around it are fine) and touches no audit
    /// table, in the next write transaction without a savepoint; returns after the commit.
    pub async fn single<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<Then<T>>>
            + Send
            + 'static,
    {
        self.ask(|reply| {
            Job::Sqlx(SqlxJob::Single(Typed::<Single<T>, T>::boxed(
                Box::new(work),
                reply,
            )))
        })
        .await
    }

    /// Runs `work`, one statement that writes (reads around it are fine) and touches no audit
    /// table, on the writer's plain connection in the next batch; returns after the commit. A
    /// constraint violation fails only this job; any other error undoes the batch.
    pub async fn direct<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Then<T>> + Send + 'static,
    {
        self.ask(|reply| Job::Direct(Typed::<Direct<T>, T>::boxed(Box::new(work), reply)))
            .await
    }

    /// Runs `steps` on the writer's plain connection in the next batch, in a savepoint of their
    /// own (undone alone when they fail); returns after the commit.
    pub async fn direct_steps<T, F>(&self, steps: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DirectBatch<'_>) -> Result<T> + Send + 'static,
    {
        self.ask(|reply| Job::Direct(Typed::<Steps<T>, T>::boxed(Box::new(steps), reply)))
            .await
    }

    /// Queues the job `make` builds around its reply, and waits for the reply.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(make(reply)).await?;
        answer.await.map_err(|_| dropped())?
    }

    async fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::AuditUnavailable("the SQLite writer has stopped".to_owned()))
    }
}

fn dropped() -> Error {
    Error::AuditUnavailable("the SQLite writer dropped a write".to_owned())
}

struct WriterState {
    /// The write connection; `None` after a failed batch until the next one opens a fresh one.
    conn: Option<SqliteConnection>,
    connect: SqliteConnectOptions,
    /// The plain connection; `None` before the first direct batch and after a failed one.
    direct: Option<DirectConn>,
    open_direct: DirectOpener,
    sealer: Option<Arc<Sealer>>,
    /// The batch's sealed appends not yet written, and the chain heads as of them; the heads are
    /// trusted only while `PRAGMA data_version` shows that no other connection (a CLI command
    /// beside the server) has committed since our last commit.
    appends: Appends,
    data_version: Option<i64>,
}

/// Seals `event` onto `chain` after the batch's earlier appends (`appends`); written by the
/// next [`flush`].
async fn seal(
    appends: &mut Appends,
    conn: &mut SqliteConnection,
    sealer: &Sealer,
    chain: &ChainId,
    actor: &Actor,
    event: &AuditEvent,
) -> Result<Appended> {
    let head = match appends.head(chain.as_str()) {
        Some(head) => Some(head),
        None => {
            sqlx::query_as::<_, HeadRecord>(SELECT_HEAD)
                .bind(chain.as_str())
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    Ok(appends.push(sealer.plan(chain, head.as_ref(), actor, event)?))
}

/// Writes the waiting appends in as few statements as the batch allows.
async fn flush(appends: &mut Appends, conn: &mut SqliteConnection) -> Result<()> {
    let plans = appends.take_plans();
    super::audit_sql::write_plans_at_once(conn, &plans).await
}

/// Appends inside a transaction of the sqlx connection, written at once.
pub(crate) async fn append_now(
    conn: &mut SqliteConnection,
    sealer: &Sealer,
    chain: &ChainId,
    actor: &Actor,
    event: &AuditEvent,
) -> Result<Appended> {
    let mut own = Appends::default();
    let appended = seal(&mut own, conn, sealer, chain, actor, event).await?;
    flush(&mut own, conn).await?;
    Ok(appended)
}

impl WriterState {
    /// The writer's loop, on a thread of its own: direct batches run here, statement after
    /// statement with no hand-over; sqlx batches run here too, through the runtime, so the two
    /// connections never hold transactions at once.
    fn run(mut self, mut queue: mpsc::Receiver<Job>, runtime: tokio::runtime::Handle) {
        let mut batch: Vec<SqlxJob> = Vec::with_capacity(MAX_BATCH);
        let mut direct: Vec<Box<dyn DirectJob>> = Vec::with_capacity(MAX_BATCH);
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match queue.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            // A batch is a run of jobs of one connection, in queue order: a write queued after
            // another commits after it (a wrong code that locks an analyst out before a right
            // one that would reset the count, say).
            let mut work = 0;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Direct(job) if batch.is_empty() => direct.push(job),
                    Job::Sqlx(SqlxJob::Work(job))
                        if direct.is_empty() && work < MAX_WORK_PER_BATCH =>
                    {
                        work += 1;
                        batch.push(SqlxJob::Work(job));
                    }
                    Job::Sqlx(job @ (SqlxJob::Append(_) | SqlxJob::Single(_)))
                        if direct.is_empty() =>
                    {
                        batch.push(job);
                    }
                    other => {
                        held = Some(other);
                        break;
                    }
                }
                if direct.len() + batch.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if !direct.is_empty() {
                self.run_direct(std::mem::take(&mut direct));
            }
            if !batch.is_empty() {
                self.run_sqlx(&runtime, &mut batch);
            }
        }
    }

    /// Runs the batch's direct jobs in one transaction on the plain connection and tells each
    /// how it ended.
    fn run_direct(&mut self, mut jobs: Vec<Box<dyn DirectJob>>) {
        let (conn, sealer) = (self.direct.take(), self.sealer.clone());
        let open = &self.open_direct;
        // A job that panics takes its batch's replies with it (its callers hear the write was
        // dropped), not the writer.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut conn = match conn {
                Some(conn) => Ok(conn),
                None => open.open(),
            };
            let outcome = match &mut conn {
                Ok(conn) => conn.run_batch(sealer.as_deref(), &mut jobs),
                Err(e) => Err(Error::AuditUnavailable(e.to_string())),
            };
            let outcome = outcome.map_err(|e| {
                tracing::error!(error = %e, jobs = jobs.len(), "SQLite write transaction failed");
                BatchFailed(Arc::new(e))
            });
            let kept = outcome.is_ok();
            for job in jobs {
                job.finish(outcome.clone());
            }
            // After a failure the connection's state is unknown (SQLite may have ended the
            // transaction itself): the next batch opens a fresh one.
            conn.ok().filter(|_| kept)
        }));
        self.direct = ran.unwrap_or(None);
    }

    /// Runs a batch on the sqlx connection and tells each job how it ended. A job that panics
    /// takes its batch's replies with it, and the connection (its transaction may be open), not
    /// the writer.
    fn run_sqlx(&mut self, runtime: &tokio::runtime::Handle, batch: &mut Vec<SqlxJob>) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(self.run_batch(batch))
        }));
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(_) => {
                self.conn = None;
                Err(Error::Internal("a write job panicked".to_owned()))
            }
        };
        let outcome = outcome.map_err(|e| {
            tracing::error!(error = %e, jobs = batch.len(), "SQLite write transaction failed");
            self.appends.forget_all();
            self.data_version = None;
            BatchFailed(Arc::new(e))
        });
        for job in batch.drain(..) {
            job.finish(outcome.clone());
        }
    }

    async fn run_batch(&mut self, batch: &mut [SqlxJob]) -> Result<()> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect.connect().await?,
        };
        let outcome = self.run_batch_on(&mut conn, batch).await;
        // After a failure SQLite may have ended the transaction itself (a full disk, an I/O
        // error) while sqlx still counts it as open and would refuse every later BEGIN on this
        // connection: a fresh connection is the only state known to be clean.
        if outcome.is_ok() {
            self.conn = Some(conn);
        }
        outcome
    }

    async fn run_batch_on(
        &mut self,
        conn: &mut SqliteConnection,
        batch: &mut [SqlxJob],
    ) -> Result<()> {
        // IMMEDIATE takes the write lock up front, so another process waits for it instead of
        // failing halfway through with SQLITE_BUSY.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        if let [SqlxJob::Work(work)] = batch {
            // Alone in its transaction, a closure needs no savepoint: undoing the transaction
            // undoes only it. Nor does it read `data_version`, a statement as dear as reading
            // the one head it needs: the cached heads are dropped instead.
            self.appends.forget_heads();
            if self.run_work(&mut tx, work.as_mut()).await {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            return Ok(());
        }
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut *tx)
            .await?;
        if self.data_version != Some(version) {
            self.appends.forget_heads();
        }
        for job in batch.iter_mut() {
            match job {
                SqlxJob::Append(append) => {
                    append.sealed = Some(self.seal(&mut tx, &append.request).await?);
                }
                SqlxJob::Single(single) => {
                    if let Some(request) = single.run(&mut tx).await? {
                        self.seal(&mut tx, &request).await?;
                    }
                }
                SqlxJob::Work(work) => {
                    // It reads the audit tables as written so far, outside its savepoint.
                    flush(&mut self.appends, &mut tx).await?;
                    let mut savepoint = tx.begin().await?;
                    if self.run_work(&mut savepoint, work.as_mut()).await {
                        savepoint.commit().await?;
                    } else {
                        savepoint.rollback().await?;
                    }
                }
            }
        }
        flush(&mut self.appends, &mut tx).await?;
        tx.commit().await?;
        // Our own commits do not change data_version for this connection.
        self.data_version = Some(version);
        Ok(())
    }

    /// Runs one closure; `false` when it failed and its statements must be undone. It may
    /// append through its own path, so no cached head outlives it.
    async fn run_work(&mut self, conn: &mut SqliteConnection, work: &mut dyn WorkJob) -> bool {
        let ok = work.run(conn).await;
        self.appends.forget_heads();
        ok
    }

    /// Seals a queued append into the batch.
    async fn seal(
        &mut self,
        conn: &mut SqliteConnection,
        request: &AppendRequest,
    ) -> Result<Appended> {
        let sealer = self
            .sealer
            .as_deref()
            .ok_or_else(|| Error::AuditUnavailable("the store was opened read-only".to_owned()))?;
        let AppendRequest {
            chain,
            actor,
            event,
        } = request;
        seal(&mut self.appends, conn, sealer, chain, actor, event).await
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    use super::{Then, Writer};
    use crate::store::sqlite_direct::DirectOpener;

    async fn writer_on(dir: &std::path::Path) -> Writer {
        let url = format!("sqlite://{}/w.db", dir.display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("{e}"))
            .journal_mode(SqliteJournalMode::Wal)
            .create_if_missing(true);
        let conn = options.connect().await.unwrap_or_else(|e| panic!("{e}"));
        let direct = DirectOpener::new(
            &url,
            options.get_filename(),
            std::time::Duration::from_secs(1),
        );
        Writer::spawn(conn, options, direct, None)
    }

    #[tokio::test]
    async fn the_plain_connection_syncs_every_commit_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let writer = writer_on(dir.path()).await;
        let (synchronous, foreign_keys, journal) = writer
            .direct(|conn| {
                let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
                let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                Ok(Then::Done((synchronous, foreign_keys, journal)))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(synchronous, 2, "synchronous=FULL");
        assert_eq!(foreign_keys, 1);
        assert_eq!(journal, "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_commit_in_the_order_they_were_queued_whichever_connection_runs_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let writer = writer_on(dir.path()).await;
        writer
            .direct(|conn| {
                conn.execute("CREATE TABLE t (x TEXT NOT NULL)", [])?;
                Ok(Then::Done(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Hold the writer in a batch while two writes queue up behind it: one for the sqlx
        // connection, then one for the plain connection that looks for the first.
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holding = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .direct(move |_| {
                        let _ = started.send(());
                        let _ = released.recv();
                        Ok(Then::Done(()))
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || running.recv())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let first = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run(|conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (x) VALUES ('first')")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let second = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .direct(|conn| {
                        let seen: i64 =
                            conn.query_row("SELECT COUNT(*) FROM t WHERE x = 'first'", [], |r| {
                                r.get(0)
                            })?;
                        Ok(Then::Done(seen))
                    })
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        release.send(()).unwrap_or_else(|e| panic!("{e}"));
        let outcomes = (holding.await, first.await, second.await);
        let (Ok(Ok(())), Ok(Ok(())), Ok(Ok(seen))) = outcomes else {
            panic!("a write failed: {outcomes:?}");
        };
        assert_eq!(seen, 1, "the later write ran before the earlier one");
    }

    #[tokio::test]
    async fn a_direct_batch_that_fails_is_undone_and_the_next_runs_on_a_fresh_connection() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let writer = writer_on(dir.path()).await;
        writer
            .direct(|conn| {
                conn.execute("CREATE TABLE t (x TEXT NOT NULL)", [])?;
                Ok(Then::Done(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The disk is full for this connection: the file may not grow any more.
        let full = writer
            .direct(|conn| {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
                conn.pragma_update(None, "max_page_count", pages)?;
                conn.execute("INSERT INTO t (x) VALUES (?1)", ["x".repeat(200_000)])?;
                Ok(Then::Done(()))
            })
            .await;
        assert!(full.is_err(), "the write that needs room must fail");
        // A constraint violation fails its own job only.
        let refused = writer
            .direct(|conn| {
                conn.execute("INSERT INTO t (x) VALUES (NULL)", [])?;
                Ok(Then::Done(()))
            })
            .await;
        assert!(refused.is_err(), "NULL into a NOT NULL column");
        let count = writer
            .direct(|conn| {
                // As large as the refused one: on the full connection it would fail again.
                conn.execute("INSERT INTO t (x) VALUES (?1)", ["y".repeat(200_000)])?;
                let rows: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))?;
                Ok(Then::Done(rows))
            })
            .await
            .unwrap_or_else(|e| panic!("after the full disk: {e}"));
        assert_eq!(count, 1, "the failed batch left nothing behind");
    }

    #[test]
    fn no_sqlite_table_resolves_conflicts_by_rolling_back_the_transaction() {
        // `statement_undone` relies on a constraint violation undoing only its statement.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut read = 0;
        for file in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let path = file.unwrap_or_else(|e| panic!("{e}")).path();
            let sql = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .to_uppercase();
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                !sql.contains("CONFLICT ROLLBACK") && !sql.contains("OR ROLLBACK"),
                "{} resolves a conflict with ROLLBACK",
                path.display()
            );
            read += 1;
        }
        assert!(read >= 6);
    }
}
