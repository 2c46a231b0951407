//! Reading a chain's entries from SQLite in bulk, for verification and exports of millions.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every row (or a
//! page packed into one value) to the caller over a channel, waking both threads each time. On
//! a million entries that hand-over, not SQLite or the verifier, took most of the time. Here a
//! plain SQLite connection (rusqlite, on the same SQLite library sqlx links) reads a whole page
//! of rows on a blocking thread, and pages are read ahead while the caller works on the one
//! before. The connections are opened read-only (and immutable for a backup copy).

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::StoreOptions;
use crate::audit::records::{EntryLines, EntryRecord};
use crate::error::{Error, Result};

/// Entries per page: about 4 MB of text for typical entries, and one chunk of an export.
const PAGE: i64 = 4096;
/// Pages read ahead of the caller.
const READ_AHEAD: usize = 2;
/// Connections kept open for the next page once read (more may be open while reading).
const IDLE_CONNECTIONS: usize = 4;

/// A page of one chain's range, in seq order. Every column is read, so a row is verified as it
/// stands.
const SELECT_ENTRIES: &str = "SELECT seq, time, event, entry, hash FROM audit_entries \
     WHERE chain = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4";
/// The same, only what an export line holds.
const SELECT_LINES: &str = "SELECT seq, entry, hash FROM audit_entries \
     WHERE chain = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4";

/// Reads entries on connections of its own, at most as many pages at once as the store has
/// connections, like sqlx's pool beside it.
#[derive(Clone)]
pub struct EntryReader {
    shared: Arc<Shared>,
}

struct Shared {
    /// An SQLite URI filename, so `immutable` carries over.
    filename: String,
    flags: OpenFlags,
    busy_timeout: Duration,
    acquire_timeout: Duration,
    reading: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

/// How the store's URL says the database is opened, in sqlx's spelling of it.
#[derive(Debug, PartialEq, Eq)]
struct OpenAs {
    memory: bool,
    immutable: bool,
}

impl OpenAs {
    fn of(url: &str) -> OpenAs {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut open = OpenAs {
            memory: database == ":memory:",
            immutable: false,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match (&*key, &*value) {
                ("mode", "memory") => open.memory = true,
                ("immutable", "true") => open.immutable = true,
                _ => {}
            }
        }
        open
    }
}

/// The SQLite URI filename and open flags (`access` added) that reach the database sqlx opens
/// from `url` as `file`.
pub(super) fn uri_filename(url: &str, file: &Path, access: OpenFlags) -> (String, OpenFlags) {
    let open = OpenAs::of(url);
    let mut flags = access | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let filename = if open.memory {
        // sqlx names a shared in-memory database; the same name shares it.
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        file.to_string_lossy().into_owned()
    } else {
        let path = file.as_os_str().as_encoded_bytes();
        let encoded = percent_encoding::percent_encode(path, percent_encoding::NON_ALPHANUMERIC);
        match open.immutable {
            true => format!("file:{encoded}?immutable=1"),
            false => format!("file:{encoded}"),
        }
    };
    (filename, flags)
}

/// A page as read, with how many rows it holds and the last one's seq.
struct Read<P> {
    page: P,
    rows: i64,
    last: Option<i64>,
}

impl EntryReader {
    /// A reader of the database at `url`, which sqlx opens as `file`.
    pub fn new(
        url: &str,
        file: &Path,
        options: &StoreOptions,
        busy_timeout: Duration,
    ) -> EntryReader {
        let (filename, flags) = uri_filename(url, file, OpenFlags::SQLITE_OPEN_READ_ONLY);
        let connections = usize::try_from(options.max_connections.max(1)).unwrap_or(1);
        EntryReader {
            shared: Arc::new(Shared {
                filename,
                flags,
                busy_timeout,
                acquire_timeout: options.acquire_timeout,
                reading: Arc::new(Semaphore::new(connections)),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Entries `first..=last` of `chain`, streamed in seq order.
    pub fn entry_range(
        &self,
        chain: &str,
        first: i64,
        last: i64,
    ) -> BoxStream<'static, Result<EntryRecord>> {
        let chain_name = chain.to_owned();
        self.pages::<EntryPage>(chain, first, last)
            .flat_map(move |page| match page {
                Ok(page) => futures::stream::iter(page.into_records(chain_name.clone()).map(Ok))
                    .left_stream(),
                Err(e) => futures::stream::once(async { Err(e) }).right_stream(),
            })
            .boxed()
    }

    /// The export's lines for entries `first..=last` of `chain`, a page at a time, in seq order.
    pub fn entry_lines(
        &self,
        chain: &str,
        first: i64,
        last: i64,
    ) -> BoxStream<'static, Result<EntryLines>> {
        self.pages::<EntryLines>(chain, first, last).boxed()
    }

    /// Pages of the range, read by a task of their own ahead of the caller.
    fn pages<P: Page>(
        &self,
        chain: &str,
        first: i64,
        last: i64,
    ) -> impl futures::Stream<Item = Result<P>> + Send + 'static {
        let (pages, arriving) = mpsc::channel(READ_AHEAD);
        tokio::spawn(
            self.clone()
                .send_pages(Arc::from(chain), first, last, pages),
        );
        futures::stream::unfold(arriving, |mut arriving| async move {
            let page = arriving.recv().await?;
            Some((page, arriving))
        })
    }

    /// Reads page after page until the range ends, an error (sent on as the last item), or the
    /// caller leaves. Between pages it holds no connection and no read: a caller taking pages
    /// slowly (a customer downloading an export) keeps neither a connection from others nor
    /// SQLite from checkpointing its WAL.
    async fn send_pages<P: Page>(
        self,
        chain: Arc<str>,
        mut first: i64,
        last: i64,
        pages: mpsc::Sender<Result<P>>,
    ) {
        while first <= last {
            let read = match self.read_page::<P>(chain.clone(), first, last).await {
                Ok(read) => read,
                Err(e) => {
                    let _ = pages.send(Err(e)).await;
                    return;
                }
            };
            if read.rows == 0 || pages.send(Ok(read.page)).await.is_err() {
                return;
            }
            match read.last.and_then(|seq| seq.checked_add(1)) {
                Some(next) if read.rows == PAGE => first = next,
                _ => return,
            }
        }
    }

    async fn read_page<P: Page>(&self, chain: Arc<str>, first: i64, last: i64) -> Result<Read<P>> {
        let _reading = self.permit().await?;
        let reader = self.clone();
        tokio::task::spawn_blocking(move || reader.read_page_now(&chain, first, last))
            .await
            .map_err(|e| unreadable(format!("the reading stopped: {e}")))?
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        let waiting = self.shared.reading.clone().acquire_owned();
        match tokio::time::timeout(self.shared.acquire_timeout, waiting).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(unreadable("every reading connection stayed busy")),
        }
    }

    fn read_page_now<P: Page>(&self, chain: &str, first: i64, last: i64) -> Result<Read<P>> {
        let connection = self.connection()?;
        let read = read_with(&connection, chain, first, last);
        if read.is_ok() {
            self.put_back(connection);
        }
        read
    }

    /// Runs a point read (a row or a few, by key). On the calling thread when a connection is
    /// idle and SQLite answers without waiting for a lock: a read by key takes microseconds,
    /// less than handing it to another thread and back would. Otherwise (every connection in
    /// use, or a lock held elsewhere, as while another process recovers the WAL) on a blocking
    /// thread, where it may open a connection and wait for the lock like any other read.
    pub async fn read_point<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Some(connection) = self.idle_connection()
            && connection.busy_timeout(Duration::ZERO).is_ok()
        {
            let answered = read(&connection);
            let restored = connection.busy_timeout(self.shared.busy_timeout).is_ok();
            let waits = matches!(&answered, Err(rusqlite::Error::SqliteFailure(failure, _))
                if matches!(failure.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
            if restored && (answered.is_ok() || waits) {
                self.put_back(connection);
            }
            if !waits {
                return answered.map_err(point_error);
            }
        }
        let _reading = self.permit().await?;
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = reader.connection()?;
            let answered = read(&connection).map_err(point_error);
            if answered.is_ok() {
                reader.put_back(connection);
            }
            answered
        })
        .await
        .map_err(|e| point_error(format!("the reading stopped: {e}")))?
    }

    fn idle_connection(&self) -> Option<Connection> {
        self.shared.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    fn connection(&self) -> Result<Connection> {
        if let Some(connection) = self.idle_connection() {
            return Ok(connection);
        }
        let connection = Connection::open_with_flags(&self.shared.filename, self.shared.flags)
            .map_err(|e| unreadable(format!("cannot open the database: {e}")))?;
        connection
            .busy_timeout(self.shared.busy_timeout)
            .map_err(sqlite_error)?;
        Ok(connection)
    }

    /// Keeps a connection that finished its read for the next one.
    fn put_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.shared.idle.lock()
            && idle.len() < IDLE_CONNECTIONS
        {
            idle.push(connection);
        }
    }
}

/// One page from `first` on, read by one statement that ends (is finalised) before it returns.
fn read_with<P: Page>(
    connection: &Connection,
    chain: &str,
    first: i64,
    last: i64,
) -> Result<Read<P>> {
    let mut statement = connection.prepare(P::SELECT).map_err(sqlite_error)?;
    let mut rows = statement
        .query(rusqlite::params![chain, first, last, PAGE])
        .map_err(sqlite_error)?;
    let mut read = Read {
        page: P::default(),
        rows: 0,
        last: None,
    };
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        read.last = Some(read.page.add_row(row)?);
        read.rows += 1;
    }
    Ok(read)
}

/// What a read hands over: rows gathered into a page.
trait Page: Default + Send + 'static {
    const SELECT: &'static str;
    /// Adds a row; returns its seq.
    fn add_row(&mut self, row: &Row<'_>) -> Result<i64>;
}

/// A page of entries as read: their columns' text run together, and where each row's values
/// end. The records are made only as the caller takes them, so they are allocated and freed on
/// the caller's thread: records allocated on the reading thread and freed on the caller's made
/// the two threads contend for the allocator's lock, a third of `audit check`'s time.
#[derive(Default)]
struct EntryPage {
    text: String,
    /// Per row: its seq, and the ends of its time, event, entry and hash in `text`.
    rows: Vec<(i64, [usize; 4])>,
}

impl EntryPage {
    fn into_records(self, chain: String) -> Records {
        Records {
            chain,
            text: self.text,
            rows: self.rows.into_iter(),
            start: 0,
        }
    }
}

impl Page for EntryPage {
    const SELECT: &'static str = SELECT_ENTRIES;

    fn add_row(&mut self, row: &Row<'_>) -> Result<i64> {
        let seq = seq(row)?;
        let mut ends = [0; 4];
        for (end, column) in ends.iter_mut().zip(1..) {
            self.text.push_str(&text(row, column)?);
            *end = self.text.len();
        }
        self.rows.push((seq, ends));
        Ok(seq)
    }
}

/// A page's entries, each made as it is taken.
struct Records {
    chain: String,
    text: String,
    rows: std::vec::IntoIter<(i64, [usize; 4])>,
    /// Where the next row's values start in `text`.
    start: usize,
}

impl Iterator for Records {
    type Item = EntryRecord;

    fn next(&mut self) -> Option<EntryRecord> {
        let (seq, [time, event, entry, hash]) = self.rows.next()?;
        let value = |from: usize, to: usize| self.text.get(from..to).unwrap_or("").to_owned();
        let record = EntryRecord {
            chain: self.chain.clone(),
            seq,
            time: value(self.start, time),
            event: value(time, event),
            entry: value(event, entry),
            hash: value(entry, hash),
        };
        self.start = hash;
        Some(record)
    }
}

impl Page for EntryLines {
    const SELECT: &'static str = SELECT_LINES;

    fn add_row(&mut self, row: &Row<'_>) -> Result<i64> {
        let seq = seq(row)?;
        self.push_line(seq, &text(row, 1)?, &text(row, 2)?);
        Ok(seq)
    }
}

fn seq(row: &Row<'_>) -> Result<i64> {
    row.get(0).map_err(sqlite_error)
}

/// A column as text. A NULL reads as empty text, a number as its digits and bytes that are not
/// UTF-8 with replacement characters, so the verifier reports an edited row where it stands
/// (its hash no longer matches) rather than the read failing.
fn text<'r>(row: &'r Row<'_>, column: usize) -> Result<Cow<'r, str>> {
    Ok(match row.get_ref(column).map_err(sqlite_error)? {
        ValueRef::Null => Cow::Borrowed(""),
        ValueRef::Integer(number) => Cow::Owned(number.to_string()),
        ValueRef::Real(number) => Cow::Owned(number.to_string()),
        // `from_utf8` first: the lossy reading is several times slower on the valid text that
        // every intact row holds.
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        },
    })
}

fn sqlite_error(e: rusqlite::Error) -> Error {
    unreadable(e.to_string())
}

fn point_error(why: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cannot read from SQLite: {why}"))
}

fn unreadable(why: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cannot read audit entries from SQLite: {why}"))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::{EntryReader, OpenAs, PAGE};
    use crate::audit::records::{EntryLines, EntryRecord};
    use crate::store::StoreOptions;

    /// A WAL database holding the columns the reader reads: `count` entries of contoso and
    /// three of fabrikam, interleaved.
    fn database(count: i64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("entries.db");
        let db = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        fill(&db, count);
        (dir, path)
    }

    fn fill(db: &rusqlite::Connection, count: i64) {
        db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
        db.execute_batch(
            "CREATE TABLE audit_entries (chain TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT, \
             event TEXT, entry TEXT, hash TEXT, PRIMARY KEY (chain, seq)); BEGIN;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for seq in 1..=count {
            for chain in ["contoso", "fabrikam"]
                .iter()
                .take(if seq <= 3 { 2 } else { 1 })
            {
                db.execute(
                    "INSERT INTO audit_entries VALUES (?1, ?2, 't', 'e', ?3, ?4)",
                    rusqlite::params![
                        chain,
                        seq,
                        format!("{{\"seq\":{seq}}}"),
                        format!("{seq:064x}")
                    ],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        db.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
    }

    fn reader(url: &str) -> EntryReader {
        let options: SqliteConnectOptions = url.parse().unwrap_or_else(|e| panic!("{e}"));
        let file = options.get_filename();
        let limits = StoreOptions::default();
        EntryReader::new(url, file, &limits, std::time::Duration::from_secs(1))
    }

    /// Every entry of `first..=last` of `chain`, or the test fails.
    async fn range(reader: &EntryReader, chain: &str, first: i64, last: i64) -> Vec<EntryRecord> {
        reader
            .entry_range(chain, first, last)
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_point_read_that_meets_a_lock_waits_for_it_instead_of_failing() {
        let (_dir, path) = database(5);
        let reader = reader(&format!("sqlite://{}", path.display()));
        let count = |conn: &rusqlite::Connection| {
            conn.query_row("SELECT COUNT(*) FROM audit_entries", [], |row| {
                row.get::<_, i64>(0)
            })
        };
        // Another process holds the database exclusively (as while it recovers the WAL).
        let holder = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        holder
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM audit_entries WHERE seq = 5; COMMIT;")
            .unwrap_or_else(|e| panic!("{e}"));
        let reading = tokio::spawn({
            let reader = reader.clone();
            async move { reader.read_point(count).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(holder);
        let read = reading.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read.ok(),
            Some(7),
            "the read waited for the lock and saw the commit"
        );
    }

    #[tokio::test]
    async fn a_range_comes_whole_in_seq_order_across_pages_and_from_its_chain_only() {
        let count = 2 * PAGE + 10;
        let (_dir, path) = database(count);
        let reader = reader(&format!("sqlite://{}", path.display()));
        for (first, last) in [
            (1, count),
            (2, PAGE + 1),
            (1, PAGE),
            (1, 2 * PAGE),
            (7, 7),
            (9, 8),
            (i64::MIN, i64::MAX),
        ] {
            let rows = range(&reader, "contoso", first, last).await;
            let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
            assert_eq!(seqs, (first.max(1)..=last.min(count)).collect::<Vec<_>>());
            assert!(rows.iter().all(|row| row.chain == "contoso"));
            let pages: Vec<EntryLines> = reader
                .entry_lines("contoso", first, last)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut expected = EntryLines::default();
            rows.into_iter().for_each(|row| expected.push(row));
            let text: String = pages.iter().map(|page| page.text.as_str()).collect();
            assert_eq!(text, expected.text);
            assert_eq!(
                pages.iter().map(|page| page.count).sum::<u64>(),
                expected.count
            );
            assert_eq!(
                pages.last().and_then(|page| page.last.clone()),
                expected.last
            );
        }
        let fabrikam = range(&reader, "fabrikam", 1, count).await;
        assert_eq!(fabrikam.len(), 3);
    }

    #[tokio::test]
    async fn a_reader_slower_than_the_reading_holds_no_read_open_between_pages() {
        let (_dir, path) = database(0);
        let db = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        db.execute(
            "WITH RECURSIVE n(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM n WHERE seq < ?1) \
             INSERT INTO audit_entries SELECT 'contoso', seq, 't', 'e', '{}', 'h' FROM n",
            [6 * PAGE],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut entries =
            reader(&format!("sqlite://{}", path.display())).entry_range("contoso", 1, 6 * PAGE);
        let first = entries.try_next().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.map(|entry| entry.seq), Some(1));
        // Pages are read ahead of this caller, which takes no more for now. A checkpoint that
        // resets the WAL waits for no reader once no read is open.
        let checkpointed = async {
            loop {
                let (busy, _, _): (i64, i64, i64) = db
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                if busy == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), checkpointed)
            .await
            .unwrap_or_else(|_| panic!("a read held open kept the WAL from being checkpointed"));
        let rest: Vec<EntryRecord> = entries
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest.len() as i64, 6 * PAGE - 1);
    }

    #[test]
    fn the_url_says_how_the_database_is_opened() {
        let open = |memory, immutable| OpenAs { memory, immutable };
        assert_eq!(OpenAs::of("sqlite://data/k.db"), open(false, false));
        assert_eq!(
            OpenAs::of("sqlite://k.db?mode=ro&immutable=true"),
            open(false, true)
        );
        assert_eq!(OpenAs::of("sqlite::memory:"), open(true, false));
        assert_eq!(OpenAs::of("sqlite:k.db?mode=memory"), open(true, false));
        assert_eq!(OpenAs::of("sqlite://kill:switch.db"), open(false, false));
    }

    #[tokio::test]
    async fn a_shared_in_memory_database_is_read_by_its_name() {
        let url = "sqlite::memory:";
        let options: SqliteConnectOptions = url.parse().unwrap_or_else(|e| panic!("{e}"));
        let name = options.get_filename().to_string_lossy().into_owned();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_MEMORY
            | rusqlite::OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        let held =
            rusqlite::Connection::open_with_flags(&name, flags).unwrap_or_else(|e| panic!("{e}"));
        held.execute_batch(
            "CREATE TABLE audit_entries (chain TEXT, seq INTEGER, time TEXT, event TEXT, \
             entry TEXT, hash TEXT); \
             INSERT INTO audit_entries VALUES ('contoso', 1, 't', 'e', '{}', 'h');",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let file = options.get_filename();
        let reader = EntryReader::new(
            url,
            file,
            &StoreOptions::default(),
            std::time::Duration::from_secs(1),
        );
        let rows = range(&reader, "contoso", 1, 1).await;
        assert_eq!(rows.len(), 1);
    }

    #[tokio::test]
    async fn a_copy_opened_read_only_and_immutable_is_read_and_left_alone() {
        let (dir, path) = database(5);
        let url = crate::store::sqlite::read_only_url(&path).unwrap_or_else(|e| panic!("{e}"));
        let rows = range(&reader(&url), "contoso", 1, 5).await;
        assert_eq!(rows.len(), 5);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|entry| entry.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["entries.db"],
            "no WAL or shared-memory file beside a copy"
        );
    }

    #[tokio::test]
    async fn an_edited_row_is_read_as_it_stands_and_a_missing_file_is_an_error() {
        let (dir, path) = database(2);
        let db = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        db.execute(
            "UPDATE audit_entries SET time = NULL, hash = 42, event = CAST(X'65FF' AS TEXT) \
             WHERE seq = 2",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rows = range(
            &reader(&format!("sqlite://{}", path.display())),
            "contoso",
            2,
            2,
        )
        .await;
        let row = &rows[0];
        let read = (row.time.as_str(), row.event.as_str(), row.hash.as_str());
        assert_eq!(read, ("", "e\u{FFFD}", "42"));
        let missing = reader(&format!(
            "sqlite://{}",
            dir.path().join("none.db").display()
        ))
        .entry_range("contoso", 1, 2)
        .try_collect::<Vec<_>>()
        .await;
        assert!(missing.is_err());
    }
}
