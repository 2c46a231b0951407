//! Every read, written once for both backends: the SQL and the row types are the same, only the
//! pool differs.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::action_rows::ActionRow;
use super::audit_sql as sql;
use super::detection_rows::{DETECTION_COLUMNS, DetectionRow};
use super::domain_sql::{self, CustomerRecord};
use super::onboarding_sql::{self, CustomerSecretRow, WebhookSecretRecord};
use super::{ActionFilter, SessionRecord};
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::PublicKey;
use crate::auth::analysts::{ANALYST_COLUMNS, AnalystRecord};
use crate::customers::Customer;
use crate::domain::CustomerSlug;
use crate::error::{Error, Result};
use crate::falcon::records::{DetectionFilter, DetectionRecord};
use crate::remediation::action::ActionRecord;
use crate::time::Timestamp;

pub struct Reads<DB: Database> {
    pool: Pool<DB>,
}

impl<DB> Reads<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (Option<i64>, Option<i64>): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> HeadRecord: FromRow<'r, DB::Row>,
    for<'r> EntryRecord: FromRow<'r, DB::Row>,
    for<'r> CheckpointRecord: FromRow<'r, DB::Row>,
    for<'r> CustomerRecord: FromRow<'r, DB::Row>,
    for<'r> CustomerSecretRow: FromRow<'r, DB::Row>,
    for<'r> ActionRow: FromRow<'r, DB::Row>,
    for<'r> AnalystRecord: FromRow<'r, DB::Row>,
    for<'r> SessionRecord: FromRow<'r, DB::Row>,
    for<'r> WebhookSecretRecord: FromRow<'r, DB::Row>,
    for<'r> DetectionRow: FromRow<'r, DB::Row>,
{
    pub fn new(pool: Pool<DB>) -> Reads<DB> {
        Reads { pool }
    }

    pub async fn ping(&self) -> Result<()> {
        // A plain execute: PostgreSQL's `1` is an INT4, which a typed fetch would have to match.
        sqlx::query::<DB>("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn signing_keys(&self) -> Result<Vec<PublicKey>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as::<DB, (String, String)>(sql::SELECT_SIGNING_KEYS)
                .fetch_all(&self.pool)
                .await?;
        super::parse_signing_keys(rows)
    }

    pub async fn chain_names(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(sql::CHAIN_NAMES)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub async fn head(&self, chain: &str) -> Result<Option<HeadRecord>> {
        Ok(sqlx::query_as::<DB, HeadRecord>(sql::SELECT_HEAD)
            .bind(chain)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRecord>> {
        Ok(
            sqlx::query_as::<DB, CheckpointRecord>(sql::SELECT_CHECKPOINTS)
                .bind(chain)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub fn entries<'a>(&'a self, chain: &'a str) -> BoxStream<'a, Result<EntryRecord>> {
        sqlx::query_as::<DB, EntryRecord>(sql::SELECT_ENTRIES)
            .bind(chain)
            .fetch(&self.pool)
            .map_err(Error::from)
            .boxed()
    }

    pub fn entry_range<'a>(
        &'a self,
        chain: &'a str,
        first: i64,
        last: i64,
    ) -> BoxStream<'a, Result<EntryRecord>> {
        sqlx::query_as::<DB, EntryRecord>(sql::SELECT_ENTRY_RANGE)
            .bind(chain)
            .bind(first)
            .bind(last)
            .fetch(&self.pool)
            .map_err(Error::from)
            .boxed()
    }

    pub async fn seq_window(
        &self,
        chain: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<(i64, i64)>> {
        let (first, last): (Option<i64>, Option<i64>) =
            sqlx::query_as::<DB, (Option<i64>, Option<i64>)>(sql::SEQ_WINDOW)
                .bind(chain)
                .bind(from)
                .bind(to)
                .fetch_one(&self.pool)
                .await?;
        Ok(first.zip(last))
    }

    pub async fn customer(&self, slug: &CustomerSlug) -> Result<Option<Customer>> {
        let row = sqlx::query_as::<DB, CustomerRecord>(domain_sql::SELECT_CUSTOMER)
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(CustomerRecord::parse).transpose()
    }

    pub async fn customers(&self) -> Result<Vec<Customer>> {
        let rows = sqlx::query_as::<DB, CustomerRecord>(domain_sql::SELECT_CUSTOMERS)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(CustomerRecord::parse).collect()
    }

    pub async fn action(&self, id: uuid::Uuid) -> Result<Option<ActionRecord>> {
        sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(domain_sql::select_action_sql()))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(ActionRecord::try_from)
            .transpose()
    }

    pub async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>> {
        let mut query = sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(filter.sql()));
        for value in filter.binds() {
            query = query.bind(value);
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(ActionRecord::try_from).collect()
    }

    pub async fn action_by_key(
        &self,
        customer: &CustomerSlug,
        key: &str,
    ) -> Result<Option<ActionRecord>> {
        let sql = format!(
            "SELECT {} FROM actions WHERE customer = $1 AND idempotency_key = $2",
            domain_sql::ACTION_COLUMNS
        );
        sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(sql))
            .bind(customer.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(ActionRecord::try_from)
            .transpose()
    }

    pub async fn stale_actions(&self, now: Timestamp) -> Result<Vec<ActionRecord>> {
        let rows =
            sqlx::query_as::<DB, ActionRow>(sqlx::AssertSqlSafe(domain_sql::stale_actions_sql()))
                .bind(now.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(ActionRecord::try_from).collect()
    }

    /// The analyst whose `column` (id, email or token_hash) equals `value`.
    pub async fn analyst_where(
        &self,
        column: AnalystKey,
        value: &str,
    ) -> Result<Option<AnalystRecord>> {
        let sql = format!(
            "SELECT {ANALYST_COLUMNS} FROM analysts WHERE {} = $1",
            column.column()
        );
        Ok(
            sqlx::query_as::<DB, AnalystRecord>(sqlx::AssertSqlSafe(sql))
                .bind(value)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn analysts(&self) -> Result<Vec<AnalystRecord>> {
        let sql = format!("SELECT {ANALYST_COLUMNS} FROM analysts ORDER BY email");
        Ok(
            sqlx::query_as::<DB, AnalystRecord>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>> {
        Ok(sqlx::query_as::<DB, SessionRecord>(super::SELECT_SESSION)
            .bind(id_hash)
            .bind(now.to_string())
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn detection(&self, id: uuid::Uuid) -> Result<Option<DetectionRecord>> {
        let sql = format!("SELECT {DETECTION_COLUMNS} FROM detections WHERE id = $1");
        sqlx::query_as::<DB, DetectionRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(DetectionRecord::try_from)
            .transpose()
    }

    pub async fn detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>> {
        let mut query = sqlx::query_as::<DB, DetectionRow>(sqlx::AssertSqlSafe(filter.sql()));
        for value in filter.binds() {
            query = query.bind(value);
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(DetectionRecord::try_from).collect()
    }

    pub async fn pending_detections(&self) -> Result<i64> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM detections WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }

    pub async fn customer_with_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Option<(Customer, Vec<WebhookSecretRecord>)>> {
        let rows = sqlx::query_as::<DB, CustomerSecretRow>(onboarding_sql::CUSTOMER_WITH_SECRETS)
            .bind(customer.as_str())
            .bind(now.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut secrets = Vec::with_capacity(rows.len());
        let mut found = None;
        for row in rows {
            if let (Some(id), Some(secret), Some(created_at)) =
                (row.secret_id, row.secret, row.secret_created_at)
            {
                secrets.push(WebhookSecretRecord {
                    id,
                    customer: row.customer.slug.clone(),
                    secret,
                    created_at,
                    expires_at: row.secret_expires_at,
                });
            }
            found.get_or_insert(row.customer);
        }
        found
            .map(|record| Ok((record.parse()?, secrets)))
            .transpose()
    }

    pub async fn webhook_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecretRecord>> {
        Ok(
            sqlx::query_as::<DB, WebhookSecretRecord>(onboarding_sql::VALID_WEBHOOK_SECRETS)
                .bind(customer.as_str())
                .bind(now.to_string())
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// The unique columns an analyst is looked up by.
#[derive(Debug, Clone, Copy)]
pub enum AnalystKey {
    Id,
    Email,
    TokenHash,
}

impl AnalystKey {
    fn column(self) -> &'static str {
        match self {
            AnalystKey::Id => "id",
            AnalystKey::Email => "email",
            AnalystKey::TokenHash => "token_hash",
        }
    }
}
