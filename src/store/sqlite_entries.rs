//! Reading a chain's entries from SQLite in bulk, for verification and exports of millions.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every row (or a
//! page packed into one value) to the caller over a channel, waking both threads each time. On
//! a million entries that hand-over, not SQLite or the verifier, took most of the time. Here a
//! plain SQLite connection (rusqlite, on the same SQLite library sqlx links) reads a page of
//! rows per statement on a blocking thread and hands the caller whole pages, read ahead while
//! the caller works on the page before. The connection is opened as the store's readers are (read-only and
//! immutable for a copy), and never writes.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use sqlx::ConnectOptions as _;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::mpsc;

use crate::audit::records::{EntryLines, EntryRecord};
use crate::error::{Error, Result};

/// Entries per page: about 2.5 MB of text for typical entries (4 MB as export lines, each page
/// one chunk of the export).
const PAGE: i64 = 4096;
/// Pages read ahead of the caller.
const READ_AHEAD: usize = 2;
/// Connections kept open between reads: one per export or check running at once.
const IDLE_CONNECTIONS: usize = 4;

/// A range of one chain in seq order. Every column is read, so a row is verified as it stands.
const SELECT_ENTRIES: &str = "SELECT seq, time, event, entry, hash FROM audit_entries \
     WHERE chain = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4";
/// The same range, only what an export line holds.
const SELECT_LINES: &str = "SELECT seq, entry, hash FROM audit_entries \
     WHERE chain = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4";

/// Reads entries on connections of its own, kept open between reads.
#[derive(Clone)]
pub struct EntryReader {
    shared: Arc<Shared>,
}

struct Shared {
    /// An SQLite URI filename, so `immutable` carries over.
    filename: String,
    flags: OpenFlags,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl EntryReader {
    /// A reader of the database the store's readers open with `options`.
    pub fn new(options: &SqliteConnectOptions, busy_timeout: Duration) -> EntryReader {
        let url = options.to_url_lossy();
        let param = |name: &str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        let access = match param("mode").as_deref() {
            Some("ro") => OpenFlags::SQLITE_OPEN_READ_ONLY,
            _ => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        let path = options.get_filename().as_os_str().as_encoded_bytes();
        let mut filename = format!(
            "file:{}",
            percent_encoding::percent_encode(path, percent_encoding::NON_ALPHANUMERIC)
        );
        if param("immutable").as_deref() == Some("true") {
            filename.push_str("?immutable=1");
        }
        EntryReader {
            shared: Arc::new(Shared {
                filename,
                flags: access | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                busy_timeout,
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

    /// Pages of the range, read on a blocking thread ahead of the caller until the range ends,
    /// an error (sent on as the last item), or the caller leaves.
    fn pages<P: Page>(
        &self,
        chain: &str,
        first: i64,
        last: i64,
    ) -> impl futures::Stream<Item = Result<P>> + Send + 'static {
        let (pages, arriving) = mpsc::channel(READ_AHEAD);
        let (reader, chain) = (self.clone(), chain.to_owned());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = reader.send_pages(&chain, first, last, &pages) {
                let _ = pages.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(arriving, |mut arriving| async move {
            let page = arriving.recv().await?;
            Some((page, arriving))
        })
    }

    /// Each page is read by a statement of its own, so no read transaction outlives a page,
    /// however slowly the caller takes them: a long one would keep SQLite from checkpointing
    /// its WAL while, say, a customer downloads an export.
    fn send_pages<P: Page>(
        &self,
        chain: &str,
        mut first: i64,
        last: i64,
        pages: &mpsc::Sender<Result<P>>,
    ) -> Result<()> {
        let connection = self.connection()?;
        let mut statement = connection.prepare(P::SELECT).map_err(unreadable)?;
        while first <= last {
            let mut page = P::default();
            let (mut count, mut next) = (0, None);
            let mut rows = statement
                .query(rusqlite::params![chain, first, last, PAGE])
                .map_err(unreadable)?;
            while let Some(row) = rows.next().map_err(unreadable)? {
                next = page.add_row(row)?.checked_add(1);
                count += 1;
            }
            // Resets the statement, which ends its read.
            drop(rows);
            if count > 0 && pages.blocking_send(Ok(page)).is_err() {
                break;
            }
            match next {
                Some(next) if count == PAGE => first = next,
                _ => break,
            }
        }
        drop(statement);
        self.put_back(connection);
        Ok(())
    }

    fn connection(&self) -> Result<Connection> {
        let idle = self.shared.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(connection) = idle {
            return Ok(connection);
        }
        let connection = Connection::open_with_flags(&self.shared.filename, self.shared.flags)
            .map_err(|e| {
                Error::DatabaseUnavailable(format!("cannot open SQLite to read entries: {e}"))
            })?;
        connection
            .busy_timeout(self.shared.busy_timeout)
            .and_then(|()| connection.pragma_update(None, "query_only", true))
            .map_err(unreadable)?;
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
    row.get(0).map_err(unreadable)
}

/// A column as text. A NULL reads as empty text and a number as its digits, so the verifier
/// reports an edited row where it stands rather than the read failing.
fn text<'r>(row: &'r Row<'_>, column: usize) -> Result<Cow<'r, str>> {
    Ok(match row.get_ref(column).map_err(unreadable)? {
        ValueRef::Null => Cow::Borrowed(""),
        ValueRef::Integer(number) => Cow::Owned(number.to_string()),
        ValueRef::Real(number) => Cow::Owned(number.to_string()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| {
                Error::DatabaseUnavailable(
                    "cannot read audit entries from SQLite: a stored value is not UTF-8".to_owned(),
                )
            })?)
        }
    })
}

fn unreadable(e: rusqlite::Error) -> Error {
    Error::DatabaseUnavailable(format!("cannot read audit entries from SQLite: {e}"))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::{EntryReader, PAGE};
    use crate::audit::records::{EntryLines, EntryRecord};

    /// A file holding the columns the reader reads: `count` entries of contoso and three of
    /// fabrikam, interleaved.
    fn database(count: i64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("entries.db");
        let db = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
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
        (dir, path)
    }

    fn reader(url: &str) -> EntryReader {
        let options: SqliteConnectOptions = url.parse().unwrap_or_else(|e| panic!("{e}"));
        EntryReader::new(&options, std::time::Duration::from_secs(1))
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
        ] {
            let rows: Vec<EntryRecord> = reader
                .entry_range("contoso", first, last)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
            assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
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
        let fabrikam: Vec<EntryRecord> = reader
            .entry_range("fabrikam", 1, count)
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fabrikam.len(), 3);
    }

    #[tokio::test]
    async fn a_reader_slower_than_the_reading_holds_no_read_open_between_pages() {
        let (_dir, path) = database(0);
        let db = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
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
        // The reading thread fills the pages ahead of the caller and waits for room.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (busy, _, _): (i64, i64, i64) = db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            busy, 0,
            "a read held open kept the WAL from being checkpointed"
        );
        let rest: Vec<EntryRecord> = entries
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest.len() as i64, 6 * PAGE - 1);
    }

    #[tokio::test]
    async fn a_copy_opened_read_only_and_immutable_is_read_and_left_alone() {
        let (dir, path) = database(5);
        let url = crate::store::sqlite::read_only_url(&path).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<EntryRecord> = reader(&url)
            .entry_range("contoso", 1, 5)
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
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
            "UPDATE audit_entries SET time = NULL, hash = 42 WHERE seq = 2",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<EntryRecord> = reader(&format!("sqlite://{}", path.display()))
            .entry_range("contoso", 2, 2)
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows[0].time.as_str(), rows[0].hash.as_str()), ("", "42"));
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
