//! SQL shared by both backends. Both accept `$n` placeholders, so the statements that do not
//! differ are written once here, together with the row writes of an append plan.

use std::collections::HashMap;

use crate::audit::append::Appended;
use crate::audit::records::{EntryLines, EntryRecord, HeadRecord};
use crate::audit::signing::PublicKey;
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent, NoticeKind};
use crate::time::Timestamp;
use async_trait::async_trait;
use futures::stream::BoxStream;

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::domain_sql::ChainTx;
use super::engine::{Conn, Engine, Row};

use crate::audit::append::AppendPlan;
use crate::audit::records::CheckpointRecord;
use crate::error::Result;

/// The audit log: appends, checkpoints, signing keys and the reads that verify and export chains.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one event to a chain; returns once the entry is durably committed.
    async fn append(&self, chain: &ChainId, actor: &Actor, event: &AuditEvent) -> Result<Appended>;

    /// Signs the chain's current head unless it is empty or already covered by a checkpoint.
    async fn checkpoint(&self, chain: &ChainId) -> Result<Option<CheckpointRecord>>;

    /// Records a checkpoint signing key (once) with a `signing_key_registered` entry in the
    /// system chain; returns whether it was new.
    async fn register_signing_key(&self, key: &PublicKey) -> Result<bool>;

    async fn signing_keys(&self) -> Result<Vec<PublicKey>>;

    /// Every chain name that occurs in heads, entries or checkpoints, sorted.
    async fn chain_names(&self) -> Result<Vec<String>>;

    async fn head(&self, chain: &str) -> Result<Option<HeadRecord>>;

    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>>;

    /// Entries of a chain in `seq` order, streamed.
    fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>>;

    /// Entries `first..=last` of a chain in `seq` order, streamed.
    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>>;

    /// The JSON Lines export's lines for entries `first..=last` of a chain, in `seq` order, a
    /// run at a time.
    fn entry_lines<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryLines>>;

    /// The first and last seq of the chain's entries written in `[from, to)`, if any.
    async fn seq_window(
        &self,
        chain: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<(i64, i64)>>;
}

pub const ENSURE_HEAD: &str =
    "INSERT INTO audit_heads (chain, seq, hash) VALUES ($1, 0, '') ON CONFLICT (chain) DO NOTHING";
pub const SELECT_HEAD: &str = "SELECT chain, seq, hash FROM audit_heads WHERE chain = $1";
pub const LAST_CHECKPOINT_SEQ: &str = "SELECT MAX(seq) FROM audit_checkpoints WHERE chain = $1";
pub const SELECT_CHECKPOINTS: &str = "SELECT chain, seq, hash, time, key_id, signature \
     FROM audit_checkpoints WHERE chain = $1 ORDER BY seq";
pub const SELECT_ENTRIES: &str =
    "SELECT chain, seq, time, event, entry, hash FROM audit_entries WHERE chain = $1 ORDER BY seq";
pub const SELECT_ENTRY_RANGE: &str = "SELECT chain, seq, time, event, entry, hash FROM audit_entries \
     WHERE chain = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq";
/// The first and last seq of a chain inside a time window (`from` inclusive, `to` exclusive).
pub const SEQ_WINDOW: &str =
    "SELECT MIN(seq), MAX(seq) FROM audit_entries WHERE chain = $1 AND time >= $2 AND time < $3";
pub const CHAIN_NAMES: &str = "SELECT chain FROM audit_heads \
     UNION SELECT DISTINCT chain FROM audit_entries \
     UNION SELECT DISTINCT chain FROM audit_checkpoints ORDER BY 1";
pub const INSERT_SIGNING_KEY: &str = "INSERT INTO audit_signing_keys (key_id, public_key, registered_at) \
     VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING RETURNING key_id";
pub const SELECT_SIGNING_KEYS: &str =
    "SELECT key_id, public_key FROM audit_signing_keys ORDER BY registered_at";

pub(super) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (chain, seq, hash, time, key_id, signature) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Writes the rows of an append plan. The caller holds the chain's head (row lock or write
/// transaction).
pub async fn write_plan<DB>(conn: &mut DB::Connection, plan: &AppendPlan) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    write_plans::<DB>(conn, std::slice::from_ref(plan)).await
}

/// Rows per multi-row statement (at most 6 parameters each; with SQLite's entries, heads and
/// notices in one text, at most 1,664 in all: well under either database's parameter limit).
pub(super) const ROWS_PER_STATEMENT: usize = 128;
pub(super) const ENTRY_COLUMNS: usize = 6;
pub(super) const INSERT_ENTRIES: &str =
    "INSERT INTO audit_entries (chain, seq, time, event, entry, hash) VALUES ";
pub(super) const HEAD_COLUMNS: usize = 3;
pub(super) const UPSERT_HEADS: &str = "INSERT INTO audit_heads (chain, seq, hash) VALUES ";
pub(super) const UPSERT_HEADS_SUFFIX: &str =
    " ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";
pub(super) const NOTICE_COLUMNS: usize = 4;
/// The notices owed for entries, written in the entries' transaction.
pub(super) const INSERT_NOTICES: &str =
    "INSERT INTO notification_events (chain, seq, kind, created_at) VALUES ";

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments>;

/// Writes consecutive append plans in as few statements as they allow: the entries a multi-row
/// INSERT at a time, then each chain's newest head once, then the notices the same way, then
/// checkpoints. The caller holds every chain's head (row lock or write transaction).
pub async fn write_plans<DB>(conn: &mut DB::Connection, plans: &[AppendPlan]) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for chunk in plans.chunks(ROWS_PER_STATEMENT) {
        let sql = multi_row(INSERT_ENTRIES, ENTRY_COLUMNS, chunk.len(), 1, "");
        let query = bind_entries(sqlx::query::<DB>(sqlx::AssertSqlSafe(sql)), chunk);
        query.execute(&mut *conn).await?;
    }
    let heads = newest_heads(plans);
    for chunk in heads.chunks(ROWS_PER_STATEMENT) {
        let sql = multi_row(
            UPSERT_HEADS,
            HEAD_COLUMNS,
            chunk.len(),
            1,
            UPSERT_HEADS_SUFFIX,
        );
        let query = bind_heads(sqlx::query::<DB>(sqlx::AssertSqlSafe(sql)), chunk);
        query.execute(&mut *conn).await?;
    }
    let notices = notices(plans);
    for chunk in notices.chunks(ROWS_PER_STATEMENT) {
        let sql = multi_row(INSERT_NOTICES, NOTICE_COLUMNS, chunk.len(), 1, "");
        let query = bind_notices(sqlx::query::<DB>(sqlx::AssertSqlSafe(sql)), chunk);
        query.execute(&mut *conn).await?;
    }
    write_checkpoints::<DB>(conn, plans).await
}

/// `write_plans` for SQLite, whose connection runs several statements sent at once: the entries,
/// the heads and the notices of a batch that fits one statement each go in a single round trip
/// to the connection's worker thread instead of one each.
pub async fn write_plans_at_once(
    conn: &mut sqlx::SqliteConnection,
    plans: &[AppendPlan],
) -> Result<()> {
    // A chain has a head only where it has a plan, so the heads fit wherever the plans do.
    if plans.is_empty() || plans.len() > ROWS_PER_STATEMENT {
        return write_plans::<sqlx::Sqlite>(conn, plans).await;
    }
    let heads = newest_heads(plans);
    let notices = notices(plans);
    let mut sql = multi_row(INSERT_ENTRIES, ENTRY_COLUMNS, plans.len(), 1, "; ");
    // sqlx binds `$n` of every statement in the text to the n-th value of one argument list
    // (sqlx-sqlite's `SqliteArguments::bind`), so the heads' numbers go on from the entries',
    // and the notices' from the heads'. Were that to change, a later statement would bind NULL
    // and the batch fail: nothing half-written.
    let mut next = plans.len() * ENTRY_COLUMNS + 1;
    sql.push_str(&multi_row(
        UPSERT_HEADS,
        HEAD_COLUMNS,
        heads.len(),
        next,
        UPSERT_HEADS_SUFFIX,
    ));
    next += heads.len() * HEAD_COLUMNS;
    if !notices.is_empty() {
        sql.push_str("; ");
        sql.push_str(&multi_row(
            INSERT_NOTICES,
            NOTICE_COLUMNS,
            notices.len(),
            next,
            "",
        ));
    }
    let query = bind_entries(sqlx::query(sqlx::AssertSqlSafe(sql)), plans);
    let query = bind_heads(query, &heads);
    bind_notices(query, &notices).execute(&mut *conn).await?;
    write_checkpoints::<sqlx::Sqlite>(conn, plans).await
}

fn bind_entries<'q, DB>(mut query: Query<'q, DB>, plans: &'q [AppendPlan]) -> Query<'q, DB>
where
    DB: Database,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for plan in plans {
        let e = &plan.entry;
        query = query
            .bind(e.chain.as_str())
            .bind(e.seq)
            .bind(e.time.as_str())
            .bind(e.event.as_str())
            .bind(e.entry.as_str())
            .bind(e.hash.as_str());
    }
    query
}

fn bind_heads<'q, DB>(mut query: Query<'q, DB>, heads: &[&'q HeadRecord]) -> Query<'q, DB>
where
    DB: Database,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for head in heads {
        query = query
            .bind(head.chain.as_str())
            .bind(head.seq)
            .bind(head.hash.as_str());
    }
    query
}

/// Each chain's head after the last of its plans: one upsert per chain (an upsert, so SQLite's
/// writer, which holds the database lock, needs no statement to create a new chain's head;
/// PostgreSQL has created and locked it before).
pub(super) fn newest_heads(plans: &[AppendPlan]) -> Vec<&HeadRecord> {
    let mut newest: HashMap<&str, &HeadRecord> = HashMap::new();
    for plan in plans {
        newest.insert(plan.head.chain.as_str(), &plan.head);
    }
    newest.into_values().collect()
}

/// The plans whose entries call for a notice, with the notice each calls for.
pub(super) fn notices(plans: &[AppendPlan]) -> Vec<(&AppendPlan, NoticeKind)> {
    plans
        .iter()
        .filter_map(|plan| plan.notice.map(|kind| (plan, kind)))
        .collect()
}

fn bind_notices<'q, DB>(
    mut query: Query<'q, DB>,
    notices: &[(&'q AppendPlan, NoticeKind)],
) -> Query<'q, DB>
where
    DB: Database,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for (plan, kind) in notices {
        query = query
            .bind(plan.entry.chain.as_str())
            .bind(plan.entry.seq)
            .bind(kind.as_str())
            .bind(plan.entry.time.as_str());
    }
    query
}

async fn write_checkpoints<DB>(conn: &mut DB::Connection, plans: &[AppendPlan]) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for checkpoint in plans.iter().filter_map(|plan| plan.checkpoint.as_ref()) {
        write_checkpoint::<DB>(conn, checkpoint).await?;
    }
    Ok(())
}

/// `prefix ($first, $first+1, …), (…), … suffix` with `rows` groups of `columns` numbered
/// placeholders. Only numbers vary, never values, so the text is safe to build.
pub(super) fn multi_row(
    prefix: &str,
    columns: usize,
    rows: usize,
    first: usize,
    suffix: &str,
) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * columns * 6 + suffix.len());
    sql.push_str(prefix);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(first + row * columns + column).to_string());
        }
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

pub async fn write_checkpoint<DB>(conn: &mut DB::Connection, cp: &CheckpointRecord) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    sqlx::query::<DB>(INSERT_CHECKPOINT)
        .bind(cp.chain.as_str())
        .bind(cp.seq)
        .bind(cp.hash.as_str())
        .bind(cp.time.as_str())
        .bind(cp.key_id.as_str())
        .bind(cp.signature.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl<E> AuditStore for E
where
    E: Engine,
    Conn<E>: ChainTx,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    for<'c> &'c Pool<E::Db>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> &'t str: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> i64: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<i64>: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (Option<i64>,): FromRow<'r, Row<E>>,
    for<'r> (Option<i64>, Option<i64>): FromRow<'r, Row<E>>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> (String, String): FromRow<'r, Row<E>>,
    for<'r> HeadRecord: FromRow<'r, Row<E>>,
    for<'r> EntryRecord: FromRow<'r, Row<E>>,
    for<'r> CheckpointRecord: FromRow<'r, Row<E>>,
{
    async fn append(&self, chain: &ChainId, actor: &Actor, event: &AuditEvent) -> Result<Appended> {
        Engine::append(self, chain, actor, event).await
    }

    async fn checkpoint(&self, chain: &ChainId) -> Result<Option<CheckpointRecord>> {
        let sealer = self.sealer()?;
        let chain = chain.clone();
        self.write(move |conn| {
            Box::pin(async move {
                conn.lock_chain(&chain).await?;
                let head = sqlx::query_as::<E::Db, HeadRecord>(SELECT_HEAD)
                    .bind(chain.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                let (last,) = sqlx::query_as::<E::Db, (Option<i64>,)>(LAST_CHECKPOINT_SEQ)
                    .bind(chain.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                let checkpoint = sealer.checkpoint_head(&chain, head.as_ref(), last)?;
                if let Some(cp) = &checkpoint {
                    write_checkpoint::<E::Db>(conn, cp).await?;
                }
                Ok(checkpoint)
            })
        })
        .await
    }

    async fn register_signing_key(&self, key: &PublicKey) -> Result<bool> {
        let sealer = self.sealer()?;
        let key = key.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let inserted = sqlx::query_as::<E::Db, (String,)>(INSERT_SIGNING_KEY)
                    .bind(key.key_id.as_str())
                    .bind(key.to_base64())
                    .bind(Timestamp::now().to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_some();
                if inserted {
                    let event = AuditEvent::SigningKeyRegistered {
                        key_id: key.key_id.to_string(),
                        public_key: key.to_base64(),
                    };
                    conn.append(&sealer, &ChainId::System, &Actor::Service, &event)
                        .await?;
                }
                Ok(inserted)
            })
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<PublicKey>> {
        let rows = sqlx::query_as::<E::Db, (String, String)>(SELECT_SIGNING_KEYS)
            .fetch_all(self.pool())
            .await?;
        super::parse_signing_keys(rows)
    }

    async fn chain_names(&self) -> Result<Vec<String>> {
        let rows = sqlx::query_as::<E::Db, (String,)>(CHAIN_NAMES)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    async fn head(&self, chain: &str) -> Result<Option<HeadRecord>> {
        Ok(sqlx::query_as::<E::Db, HeadRecord>(SELECT_HEAD)
            .bind(chain)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>> {
        Ok(
            sqlx::query_as::<E::Db, CheckpointRecord>(SELECT_CHECKPOINTS)
                .bind(chain)
                .fetch_all(self.pool())
                .await?,
        )
    }

    fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>> {
        // Every row, including any whose seq could never have been written (a tampered one).
        Engine::entry_range(self, chain, i64::MIN, i64::MAX)
    }

    fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>> {
        Engine::entry_range(self, chain, first, last)
    }

    fn entry_lines<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryLines>> {
        Engine::entry_lines(self, chain, first, last)
    }

    async fn seq_window(
        &self,
        chain: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<(i64, i64)>> {
        let (first, last) = sqlx::query_as::<E::Db, (Option<i64>, Option<i64>)>(SEQ_WINDOW)
            .bind(chain)
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_one(self.pool())
            .await?;
        Ok(first.zip(last))
    }
}

#[cfg(test)]
mod tests {
    use super::multi_row;

    #[test]
    fn multi_row_numbers_placeholders_across_rows() {
        assert_eq!(
            multi_row("INSERT INTO t VALUES ", 2, 2, 1, " RETURNING 1"),
            "INSERT INTO t VALUES ($1, $2), ($3, $4) RETURNING 1"
        );
        // A second statement of the same text goes on from the first one's numbers.
        assert_eq!(
            multi_row("INSERT INTO u VALUES ", 3, 1, 5, ""),
            "INSERT INTO u VALUES ($5, $6, $7)"
        );
    }
}
