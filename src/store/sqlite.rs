//! The SQLite backend: one file, WAL, `synchronous=FULL`; all writes go through the group-commit
//! writer, reads through a separate pool (WAL lets them run beside the writer).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Sqlite, SqliteConnection};

use super::analysts_sql;
use super::detection_rows::DetectionRow;
use super::detections_sql::{self, TargetUpdate};
use super::domain_sql::{self, ChainTx, CustomerRecord};
use super::onboarding_sql::CustomerSecretRow;
use super::sqlite_detections;
use super::sqlite_direct::{DirectOpener, query_first};
use super::sqlite_entries::EntryReader;
use super::sqlite_reads;
use super::sqlite_writer::{AppendRequest, Then, Writer};
use super::{Backend, Store, StoreOptions};
use crate::audit::append::{Appended, Sealer};
use crate::audit::records::{EntryLines, EntryRecord};
use crate::domain::ChainId;
use crate::domain::action::{ActionRecord, Admission, Finish, Guard, NewAction};
use crate::domain::detection::DetectionRecord;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};
use crate::time::Timestamp;
use futures::executor::block_on;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use rusqlite::types::ToSql;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    reader: sqlx::Pool<Sqlite>,
    /// Reads ranges of entries in bulk, without sqlx's hand-over per row.
    entries: EntryReader,
    writer: Writer,
    options: StoreOptions,
}

impl SqliteStore {
    pub async fn open(url: &str, options: StoreOptions) -> Result<SqliteStore> {
        let connect = durable_options(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Streams (exports, audit check) read a million rows; a deeper row channel lets the
            // worker thread run ahead instead of handing rows over fifty at a time.
            .row_buffer_size(1024)
            .create_if_missing(options.create_if_missing);
        if options.create_if_missing {
            create_parent_dir(connect.get_filename())?;
            if !is_memory(connect.get_filename()) {
                crate::files::precreate_private_file(connect.get_filename())?;
            }
        }
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| open_error(connect.get_filename(), e))?;
        super::migrate_or_check(&MIGRATOR, &write_pool, options.migrate).await?;
        secure_database_files(connect.get_filename())?;
        // The writer keeps the connection for good: through a pool it would be pinged before
        // and after every batch, two more round trips to its worker thread on every write.
        let write_conn = write_pool.acquire().await?.detach();
        let read = connect.clone().create_if_missing(false);
        let entries = EntryReader::new(url, read.get_filename(), &options, BUSY_TIMEOUT);
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A connection is a thread in this process, not a socket that can go stale: a ping
            // before each read would only double the round trips of a point read.
            .test_before_acquire(false)
            .connect_with(read)
            .await?;
        Ok(SqliteStore {
            reader,
            entries,
            writer: Writer::spawn(
                write_conn,
                connect.clone(),
                DirectOpener::new(url, connect.get_filename(), BUSY_TIMEOUT),
                options.sealer.clone(),
            ),
            options,
        })
    }

    fn sealer(&self) -> Result<Arc<Sealer>> {
        super::sealer(&self.options)
    }

    /// Runs `work` in the next group-committed write transaction.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        self.writer.run(work).await
    }
}

fn is_memory(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.to_string_lossy().starts_with(":memory:")
}

/// The database and its WAL and shared-memory files hold the audit log and sealed secrets:
/// private to the service's account (SQLite gives new WAL files the database file's mode).
fn secure_database_files(file: &Path) -> Result<()> {
    if is_memory(file) {
        return Ok(());
    }
    crate::files::secure_file(file, "database")?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        crate::files::secure_file(Path::new(&companion), "database")?;
    }
    Ok(())
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            crate::files::create_private_dir(dir).map_err(|e| {
                Error::io(
                    format!("cannot create the database folder {}", dir.display()),
                    e,
                )
            })
        }
        _ => Ok(()),
    }
}

fn open_error(file: &Path, e: sqlx::Error) -> Error {
    Error::DatabaseUnavailable(format!(
        "cannot open SQLite database {}: {}",
        file.display(),
        super::describe(&e)
    ))
}

impl ChainTx for SqliteConnection {
    fn lock_chain<'a>(
        &'a mut self,
        _chain: &'a ChainId,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        // The writer's BEGIN IMMEDIATE already holds SQLite's one write lock.
        Box::pin(async { Ok(()) })
    }

    fn append<'a>(
        &'a mut self,
        sealer: &'a Sealer,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> futures::future::BoxFuture<'a, Result<Appended>> {
        // The writer's transaction already holds SQLite's write lock.
        Box::pin(super::sqlite_writer::append_now(
            self, sealer, chain, actor, event,
        ))
    }
}

impl super::Engine for SqliteStore {
    type Db = Sqlite;

    fn pool(&self) -> &sqlx::Pool<Sqlite> {
        &self.reader
    }

    fn sealer(&self) -> Result<Arc<Sealer>> {
        super::sealer(&self.options)
    }

    fn write<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        Box::pin(self.writer.run(work))
    }

    fn write_statement<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        Box::pin(
            self.writer
                .single(move |conn| Box::pin(async move { work(conn).await.map(Then::Done) })),
        )
    }

    fn append<'a>(
        &'a self,
        chain: &'a ChainId,
        actor: &'a Actor,
        event: &'a AuditEvent,
    ) -> BoxFuture<'a, Result<Appended>> {
        Box::pin(
            self.writer
                .append(chain.clone(), actor.clone(), event.clone()),
        )
    }

    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>> {
        self.entries.entry_range(chain, first, last)
    }

    fn entry_lines<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryLines>> {
        self.entries.entry_lines(chain, first, last)
    }

    fn admit(&self, action: NewAction, guard: Guard) -> BoxFuture<'_, Result<Admission>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            self.writer
                .direct_steps(move |batch| {
                    block_on(domain_sql::admit(batch, &sealer, &action, guard))
                })
                .await
        })
    }

    fn finish(&self, finish: Finish) -> BoxFuture<'_, Result<ActionRecord>> {
        Box::pin(async move {
            let sealer = self.sealer()?;
            self.writer
                .direct_steps(move |batch| block_on(domain_sql::finish(batch, &sealer, &finish)))
                .await
        })
    }

    fn consume_step(
        &self,
        analyst: uuid::Uuid,
        step: u64,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool>> {
        let (analyst, step, now) = (
            analyst.to_string(),
            analysts_sql::step_value(step),
            now.to_string(),
        );
        Box::pin(self.writer.direct(move |conn| {
            let values: [&dyn ToSql; 3] = [&analyst, &step, &now];
            let accepted = query_first(conn, analysts_sql::CONSUME_STEP, &values, |_| Ok(()))?;
            Ok(Then::Done(accepted.is_some()))
        }))
    }

    fn customer_row<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Option<CustomerRecord>>> {
        let slug = slug.to_owned();
        Box::pin(
            self.entries
                .read_point(move |conn| sqlite_reads::customer(conn, &slug)),
        )
    }

    fn customer_secret_rows<'a>(
        &'a self,
        slug: &'a str,
        now: String,
    ) -> BoxFuture<'a, Result<Vec<CustomerSecretRow>>> {
        let slug = slug.to_owned();
        Box::pin(
            self.entries
                .read_point(move |conn| sqlite_reads::customer_with_secrets(conn, &slug, &now)),
        )
    }

    fn store_target(&self, update: TargetUpdate) -> BoxFuture<'_, Result<Option<DetectionRow>>> {
        Box::pin(
            self.writer
                .direct(move |conn| Ok(Then::Done(sqlite_detections::set_target(conn, &update)?))),
        )
    }

    fn record_detection<'a>(
        &'a self,
        detection: &'a DetectionRecord,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<(DetectionRecord, bool)>> {
        let (chain, event) = detections_sql::received(detection);
        let (detection, actor) = (detection.clone(), actor.clone());
        Box::pin(async move {
            self.sealer()?;
            // One statement and an entry sealed with the batch's other appends, on the writer's
            // plain connection: a burst of detections costs a few µs of SQLite each. The stored
            // row is converted after the batch.
            let row = DetectionRow::from(&detection);
            let outcome = self
                .writer
                .direct(move |conn| {
                    if sqlite_detections::insert_new(conn, &row)? {
                        let audit = Box::new(AppendRequest {
                            chain,
                            actor,
                            event,
                        });
                        Ok(Then::Append {
                            audit,
                            value: Recorded::New(detection),
                        })
                    } else {
                        let stored = sqlite_detections::existing(conn, &row)?;
                        Ok(Then::Done(Recorded::Known(stored)))
                    }
                })
                .await?;
            match outcome {
                Recorded::New(new) => Ok((new, true)),
                Recorded::Known(stored) => Ok((DetectionRecord::try_from(stored)?, false)),
            }
        })
    }
}

/// What a delivery of a detection found: a new one (as given), or the one stored before.
enum Recorded {
    New(DetectionRecord),
    Known(DetectionRow),
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        super::ping(&self.reader).await
    }
}

/// Writes a consistent copy of the database at `url` into `dest`, a file that is absent or
/// empty, while the service may be writing: `VACUUM INTO` reads one snapshot, and in WAL mode a
/// reader does not hold up the writer. The copy is written with the source connection's
/// `synchronous` setting, then synced once more before this returns.
pub async fn vacuum_into(url: &str, dest: &Path) -> Result<()> {
    let connect = durable_options(url)?.create_if_missing(false);
    let target = utf8(dest)?;
    let mut conn = SqliteConnection::connect_with(&connect)
        .await
        .map_err(|e| open_error(connect.get_filename(), e))?;
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let written = std::fs::File::open(dest).and_then(|file| file.sync_all());
    written.map_err(|e| Error::io(format!("cannot sync {}", dest.display()), e))
}

/// A URL that opens the SQLite file at `path` read-only and immutable: no lock is taken and no
/// WAL or shared-memory file is created beside it (for a copy nothing else has open).
pub fn read_only_url(path: &Path) -> Result<String> {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'%')
        .add(b'?')
        .add(b'#')
        .add(b' ');
    let text = utf8(path)?;
    Ok(format!(
        "sqlite://{}?mode=ro&immutable=true",
        percent_encoding::utf8_percent_encode(text, RESERVED)
    ))
}

/// The database at `url` with every commit synced and a wait, not a failure, on a lock.
fn durable_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(vec![format!("database.url: {e}")]))?
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::InvalidInput(format!("{}: the path is not UTF-8", path.display())))
}
