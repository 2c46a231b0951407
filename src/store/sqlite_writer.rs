//! The single SQLite writer, with group commit.
//!
//! SQLite allows one writer at a time, and a durable commit (`synchronous=FULL`) costs an fsync.
//! Instead of letting every task fight for the write lock and fsync on its own, write jobs are
//! queued to one task that runs whatever is waiting in a single `BEGIN IMMEDIATE` transaction,
//! each job inside its own savepoint, then commits once. A caller hears back only after that
//! commit, so "returned Ok" always means "durably on disk"; a job that fails is rolled back to
//! its savepoint without disturbing the others.

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Most jobs folded into one transaction; bounds the latency one commit adds to its callers.
const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;

type Work<T> = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send>;

trait Job: Send {
    /// Runs the job's statements; `false` when the job failed and must be rolled back.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;
    /// Delivers the job's result, or the commit error that undid it.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct TypedJob<T> {
    work: Option<Work<T>>,
    output: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Job for TypedJob<T> {
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

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match (commit, self.output) {
            // The job's own error stands even when the batch committed without it.
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(reason), _) => Err(Error::AuditUnavailable(reason)),
            (Ok(()), None) => Err(Error::Internal("write job was never run".to_owned())),
        };
        // The caller may have gone away; the write itself stands either way.
        let _ = self.reply.send(result);
    }
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer task on a pool that holds the one write connection.
    pub fn spawn(pool: SqlitePool) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run_writer(pool, queue));
        Writer { jobs }
    }

    /// Runs `work` inside the next write transaction and returns its result after the commit.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work: Some(Box::new(work)),
            output: None,
            reply,
        };
        self.jobs
            .send(Box::new(job))
            .await
            .map_err(|_| Error::AuditUnavailable("the SQLite writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| Error::AuditUnavailable("the SQLite writer dropped a write".to_owned()))?
    }
}

async fn run_writer(pool: SqlitePool, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&pool, &mut batch).await.map_err(|e| {
            tracing::error!(error = %e, jobs = batch.len(), "SQLite write transaction failed");
            e.to_string()
        });
        for job in batch.drain(..) {
            job.finish(outcome.clone());
        }
    }
}

async fn run_batch(pool: &SqlitePool, batch: &mut [Box<dyn Job>]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    // IMMEDIATE takes the write lock up front, so another process (a CLI command next to the
    // server) waits for it instead of failing halfway through with SQLITE_BUSY.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for job in batch.iter_mut() {
        let mut savepoint = tx.begin().await?;
        if job.run(&mut savepoint).await {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
