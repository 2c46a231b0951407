//! Reading a chain's entries from SQLite in pages, for verification and exports of millions.
//!
//! sqlx hands each SQLite row from its worker thread to the reader through a channel, and the
//! two threads wake each other for every row: on a million entries that hand-over, not SQLite
//! or the verifier, took most of the time. Here SQLite packs a page of entries into one value,
//! each column as `<byte length>:<bytes>` (so no content, however edited, can be mistaken for
//! a boundary), and the next page is read while the caller works on this one.

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::SqlitePool;
use tokio::sync::mpsc;

use crate::audit::records::{EntryLines, EntryRecord};
use crate::error::{Error, Result};

/// Entries per page: about 2.5 MB of text for typical entries.
const PAGE: i64 = 4096;
/// Pages read ahead of the caller.
const READ_AHEAD: usize = 2;

/// A page of `first..=last` of one chain: the row count, the last seq, then per column its
/// values' byte lengths (comma-separated) and the values themselves run together. Each column
/// is one plain concatenation (the cheapest thing SQLite can build); a NULL reads as empty
/// text, so the verifier reports the row where it stands rather than as missing.
const SELECT_PAGE: &str = "SELECT count(*) AS count, max(seq) AS last, \
     group_concat(seq, ',') AS seqs, \
     group_concat(octet_length(ifnull(time, '')), ',') AS time_lengths, \
     group_concat(ifnull(time, ''), '') AS times, \
     group_concat(octet_length(ifnull(event, '')), ',') AS event_lengths, \
     group_concat(ifnull(event, ''), '') AS events, \
     group_concat(octet_length(ifnull(entry, '')), ',') AS entry_lengths, \
     group_concat(ifnull(entry, ''), '') AS entries, \
     group_concat(octet_length(ifnull(hash, '')), ',') AS hash_lengths, \
     group_concat(ifnull(hash, ''), '') AS hashes \
     FROM (SELECT seq, time, event, entry, hash FROM audit_entries \
     WHERE chain = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4)";

/// The JSON Lines export's entry lines, built by SQLite a page at a time exactly as
/// [`EntryLines::push`] builds them. SQLite feeds an aggregate the rows in the inner query's
/// order, but does not promise it; the seqs are concatenated by the same pass, and a page whose
/// seqs do not ascend is refused rather than exported out of order (an ordered aggregate,
/// `ORDER BY` inside `group_concat`, sorts every page again and made the export 2.5 times
/// slower). The hash is the last entry's: with a single `max()` in the query, SQLite takes bare
/// columns from its row. A NULL reads as empty text, as in the packed pages.
const SELECT_LINES: &str = "SELECT count(*) AS count, max(seq) AS last, \
     ifnull(hash, '') AS last_hash, group_concat(seq, ',') AS seqs, \
     group_concat('{\"entry\":' || ifnull(entry, '') || ',\"hash\":\"' || ifnull(hash, '') \
     || '\",\"type\":\"entry\"}' || char(10), '') AS text \
     FROM (SELECT seq, entry, hash FROM audit_entries \
     WHERE chain = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4)";
/// Entries per page of export lines: about 4 MB, a chunk of the export's output each.
const LINES_PAGE: i64 = 4096;

/// Entries `first..=last` of `chain`, streamed in seq order.
pub fn entry_range(
    pool: &SqlitePool,
    chain: &str,
    first: i64,
    last: i64,
) -> BoxStream<'static, Result<EntryRecord>> {
    let (pool, chain) = (pool.clone(), chain.to_owned());
    let read = move |from| {
        let (pool, chain) = (pool.clone(), chain.clone());
        async move {
            let (entries, max) = read_page(&pool, &chain, from, last).await?;
            Ok((entries.len() as i64 == PAGE, max, entries))
        }
    };
    paged(first, last, read)
        .flat_map(|page| match page {
            Ok(entries) => futures::stream::iter(entries.into_iter().map(Ok)).left_stream(),
            Err(e) => futures::stream::once(async { Err(e) }).right_stream(),
        })
        .boxed()
}

/// The export's lines for entries `first..=last` of `chain`, a page at a time, in seq order.
pub fn entry_lines(
    pool: &SqlitePool,
    chain: &str,
    first: i64,
    last: i64,
) -> BoxStream<'static, Result<EntryLines>> {
    let (pool, chain) = (pool.clone(), chain.to_owned());
    let read = move |from| {
        let (pool, chain) = (pool.clone(), chain.clone());
        async move {
            let page: Lines = sqlx::query_as(SELECT_LINES)
                .bind(&chain)
                .bind(from)
                .bind(last)
                .bind(LINES_PAGE)
                .fetch_one(&pool)
                .await?;
            if !ascending(page.seqs.as_deref().unwrap_or_default()) {
                return Err(unreadable("SQLite gave a page of lines out of seq order"));
            }
            let lines = EntryLines {
                text: page.text.unwrap_or_default(),
                count: u64::try_from(page.count).unwrap_or(0),
                last: page
                    .last
                    .map(|seq| (seq, page.last_hash.unwrap_or_default())),
            };
            Ok((page.count == LINES_PAGE, page.last, lines))
        }
    };
    paged(first, last, read).boxed()
}

/// One page of export lines as SQLite built it.
#[derive(sqlx::FromRow)]
struct Lines {
    count: i64,
    last: Option<i64>,
    last_hash: Option<String>,
    seqs: Option<String>,
    text: Option<String>,
}

/// Whether comma-separated seqs strictly ascend (none, or one, do).
fn ascending(seqs: &str) -> bool {
    let mut previous = None;
    for seq in seqs.split(',').filter(|s| !s.is_empty()) {
        let Ok(seq) = seq.parse::<i64>() else {
            return false;
        };
        if previous.is_some_and(|p| p >= seq) {
            return false;
        }
        previous = Some(seq);
    }
    true
}

/// Pages from `read` (from a seq on: whether the page is full, its last seq, the page), read
/// ahead of the caller by a task of its own, until the range ends or an error, sent on as the
/// last item.
fn paged<T, F, Fut>(first: i64, last: i64, read: F) -> impl futures::Stream<Item = Result<T>>
where
    T: Send + 'static,
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(bool, Option<i64>, T)>> + Send + 'static,
{
    let (pages, arriving) = mpsc::channel(READ_AHEAD);
    tokio::spawn(read_pages(first, last, pages, read));
    futures::stream::unfold(arriving, |mut arriving| async move {
        let page = arriving.recv().await?;
        Some((page, arriving))
    })
}

/// Reads pages until the range ends, an error (sent on as the last item), or the reader leaves.
async fn read_pages<T, F, Fut>(mut first: i64, last: i64, pages: mpsc::Sender<Result<T>>, read: F)
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(bool, Option<i64>, T)>>,
{
    while first <= last {
        let page = read(first).await;
        let next = match &page {
            Ok((true, Some(max), _)) => max.checked_add(1),
            _ => None,
        };
        if pages.send(page.map(|(_, _, page)| page)).await.is_err() {
            return;
        }
        match next {
            Some(next) => first = next,
            None => return,
        }
    }
}

/// One page as SQLite packed it.
#[derive(sqlx::FromRow)]
struct Packed {
    count: i64,
    last: Option<i64>,
    seqs: Option<String>,
    time_lengths: Option<String>,
    times: Option<String>,
    event_lengths: Option<String>,
    events: Option<String>,
    entry_lengths: Option<String>,
    entries: Option<String>,
    hash_lengths: Option<String>,
    hashes: Option<String>,
}

async fn read_page(
    pool: &SqlitePool,
    chain: &str,
    first: i64,
    last: i64,
) -> Result<(Vec<EntryRecord>, Option<i64>)> {
    let packed: Packed = sqlx::query_as(SELECT_PAGE)
        .bind(chain)
        .bind(first)
        .bind(last)
        .bind(PAGE)
        .fetch_one(pool)
        .await?;
    let entries = unpack(chain, &packed)?;
    if entries.len() as i64 != packed.count {
        return Err(unreadable(
            "the page holds another number of entries than it counts",
        ));
    }
    Ok((entries, packed.last))
}

/// Splits a packed page back into its rows, in seq order.
fn unpack(chain: &str, packed: &Packed) -> Result<Vec<EntryRecord>> {
    fn text(column: &Option<String>) -> &str {
        column.as_deref().unwrap_or("")
    }
    let mut seqs = text(&packed.seqs).split(',').filter(|s| !s.is_empty());
    let mut times = Column::new(text(&packed.time_lengths), text(&packed.times));
    let mut events = Column::new(text(&packed.event_lengths), text(&packed.events));
    let mut bodies = Column::new(text(&packed.entry_lengths), text(&packed.entries));
    let mut hashes = Column::new(text(&packed.hash_lengths), text(&packed.hashes));
    let mut entries = Vec::with_capacity(usize::try_from(packed.count).unwrap_or(0));
    for seq in seqs.by_ref() {
        entries.push(EntryRecord {
            chain: chain.to_owned(),
            seq: seq
                .parse()
                .map_err(|_| unreadable("a seq is not a whole number"))?,
            time: times.next_value()?.to_owned(),
            event: events.next_value()?.to_owned(),
            entry: bodies.next_value()?.to_owned(),
            hash: hashes.next_value()?.to_owned(),
        });
    }
    if [times, events, bodies, hashes].iter().any(|c| !c.is_done()) {
        return Err(unreadable(
            "a column holds more values than the page has rows",
        ));
    }
    // SQLite aggregates the rows in the order the inner query gives them, which is seq order;
    // sorting (a no-op then) keeps the reading correct without relying on it.
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

/// One column of a page: its values' lengths and the values run together.
struct Column<'p> {
    lengths: std::str::Split<'p, char>,
    values: &'p str,
}

impl<'p> Column<'p> {
    fn new(lengths: &'p str, values: &'p str) -> Column<'p> {
        let mut lengths = lengths.split(',');
        if lengths.clone().next() == Some("") {
            // No rows: `split` would still yield one empty length.
            lengths.next();
        }
        Column { lengths, values }
    }

    fn next_value(&mut self) -> Result<&'p str> {
        let length: usize = self
            .lengths
            .next()
            .ok_or_else(|| unreadable("a column holds fewer values than the page has rows"))?
            .parse()
            .map_err(|_| unreadable("a value's length is not a number"))?;
        let value = self
            .values
            .get(..length)
            .ok_or_else(|| unreadable("a column is shorter than its values' lengths"))?;
        self.values = &self.values[length..];
        Ok(value)
    }

    fn is_done(&self) -> bool {
        self.lengths.clone().next().is_none() && self.values.is_empty()
    }
}

fn unreadable(why: &str) -> Error {
    Error::Internal(format!("cannot read audit entries from SQLite: {why}"))
}

#[cfg(test)]
mod tests {
    use super::{Packed, unpack};

    #[test]
    fn a_page_of_lines_is_taken_only_in_ascending_seq_order() {
        assert!(super::ascending(""));
        assert!(super::ascending("7"));
        assert!(super::ascending("1,2,10,11"));
        assert!(!super::ascending("1,3,2"));
        assert!(!super::ascending("4,4"));
        assert!(!super::ascending("1,x"));
    }

    #[test]
    fn unpacks_columns_by_length_whatever_they_contain() {
        let some = |s: &str| Some(s.to_owned());
        let packed = Packed {
            count: 2,
            last: Some(10),
            seqs: some("10,7"),
            time_lengths: some("1,9"),
            times: some("btime:with"),
            event_lengths: some("0,5"),
            events: some("a:b:c"),
            entry_lengths: some("2,11"),
            entries: some("{}{\"x\":\"1,2\"}"),
            hash_lengths: some("0,0"),
            hashes: some(""),
        };
        let entries = unpack("contoso", &packed).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<_> = entries
            .iter()
            .map(|e| (e.seq, e.time.as_str(), e.event.as_str(), e.entry.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (7, "time:with", "a:b:c", "{\"x\":\"1,2\"}"),
                (10, "b", "", "{}")
            ]
        );
        let short = Packed {
            entries: some("{}"),
            ..packed
        };
        assert!(unpack("contoso", &short).is_err());
    }
}
