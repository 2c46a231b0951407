//! Analyst writes, once for both backends; each appends its audit entry to the `system` chain
//! in the same transaction.

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::analyst_rows::{ANALYST_COLUMNS, AnalystRecord};
use super::domain_sql::ChainTx;
use super::engine::{Conn, Engine, Row};
use super::{DELETE_SESSION, INSERT_SESSION, SELECT_SESSION, SessionRecord};
use crate::audit::append::Sealer;
use crate::domain::analyst::AnalystStatus;
use crate::domain::event::{Actor, AuditEvent, RequestContext};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Analysts, their console sessions and their one-time codes.
#[async_trait]
pub trait AnalystStore: Send + Sync {
    /// Adds an analyst, recorded as `analyst_added` in the system chain; a taken e-mail conflicts.
    async fn add_analyst(&self, record: &AnalystRecord, actor: &Actor) -> Result<()>;

    async fn update_analyst(
        &self,
        id: uuid::Uuid,
        change: &AnalystChange,
        actor: &Actor,
    ) -> Result<()>;

    async fn analyst(&self, id: uuid::Uuid) -> Result<Option<AnalystRecord>>;

    async fn analyst_by_email(&self, email: &str) -> Result<Option<AnalystRecord>>;

    async fn analyst_by_token(&self, token_hash: &str) -> Result<Option<AnalystRecord>>;

    async fn analysts(&self) -> Result<Vec<AnalystRecord>>;

    async fn create_session(&self, session: &SessionRecord) -> Result<()>;

    /// The session with this id hash, if it has not expired at `now`.
    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>>;

    async fn delete_session(&self, id_hash: &str) -> Result<()>;

    /// Accepts TOTP `step` for the analyst at most once (see `consume_step`).
    async fn consume_otp_step(&self, id: uuid::Uuid, step: u64, now: Timestamp) -> Result<bool>;

    /// Counts a wrong code (audited in the system chain and the target customer's), locking at
    /// `max_failures` (see `otp_failed`).
    async fn record_otp_failure(&self, failure: &OtpFailureRecord) -> Result<OtpFailureCount>;
}

/// Which change to an analyst, for [`update`].
#[derive(Debug, Clone)]
pub enum AnalystChange {
    Status(AnalystStatus),
    /// A new sealed TOTP secret; clears the used-step memory, failures and any lock.
    ResetMfa(String),
    /// A new API token hash.
    RotateToken(String),
}

pub async fn add<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    r: &AnalystRecord,
    actor: &Actor,
) -> Result<()>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    let inserted = sqlx::query::<DB>(
        "INSERT INTO analysts (id, email, display_name, role, customers, status, token_hash, totp_secret, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(r.id.as_str())
    .bind(r.email.as_str())
    .bind(r.display_name.as_str())
    .bind(r.role.as_str())
    .bind(r.customers.as_str())
    .bind(r.status.as_str())
    .bind(r.token_hash.as_str())
    .bind(r.totp_secret.as_str())
    .bind(r.created_at.as_str())
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            return Err(Error::Conflict(format!(
                "an analyst with e-mail {} already exists",
                r.email
            )));
        }
        other => other?,
    };
    let analyst = r.analyst()?;
    let event = AuditEvent::AnalystAdded {
        analyst_id: analyst.id,
        email: analyst.email,
        role: analyst.role.to_string(),
        customers: analyst.customers.names(),
    };
    conn.append(sealer, &ChainId::System, actor, &event).await?;
    Ok(())
}

pub async fn update<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    id: Uuid,
    change: &AnalystChange,
    actor: &Actor,
) -> Result<()>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let now = Timestamp::now().to_string();
    let (sql, value) = match change {
        AnalystChange::Status(status) => (
            "UPDATE analysts SET status = $2, updated_at = $3 WHERE id = $1 RETURNING email",
            status.as_str(),
        ),
        AnalystChange::ResetMfa(sealed) => (
            "UPDATE analysts SET totp_secret = $2, totp_last_step = NULL, failed_otp = 0, locked_until = NULL, \
             updated_at = $3 WHERE id = $1 RETURNING email",
            sealed.as_str(),
        ),
        AnalystChange::RotateToken(hash) => (
            "UPDATE analysts SET token_hash = $2, updated_at = $3 WHERE id = $1 RETURNING email",
            hash.as_str(),
        ),
    };
    let email: Option<(String,)> = sqlx::query_as::<DB, (String,)>(sql)
        .bind(id.to_string())
        .bind(value)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((email,)) = email else {
        return Err(Error::NotFound(format!("analyst {id}")));
    };
    // A new credential or a disabled analyst ends every console session opened before: one
    // signed in with a leaked token must not outlive the rotation meant to stop it.
    if !matches!(change, AnalystChange::Status(AnalystStatus::Active)) {
        sqlx::query::<DB>("DELETE FROM sessions WHERE analyst_id = $1")
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    let event = match change {
        AnalystChange::Status(AnalystStatus::Disabled) => AuditEvent::AnalystDisabled {
            analyst_id: id,
            email,
        },
        AnalystChange::Status(AnalystStatus::Active) => AuditEvent::AnalystEnabled {
            analyst_id: id,
            email,
        },
        AnalystChange::ResetMfa(_) => AuditEvent::AnalystMfaReset {
            analyst_id: id,
            email,
        },
        AnalystChange::RotateToken(_) => AuditEvent::AnalystTokenRotated {
            analyst_id: id,
            email,
        },
    };
    conn.append(sealer, &ChainId::System, actor, &event).await?;
    Ok(())
}

/// Marks step `$2` of analyst `$1` used if no later or equal step was, the analyst is active
/// and not locked at `$3`: the single statement that makes a code good for one action only.
pub const CONSUME_STEP: &str = "UPDATE analysts SET totp_last_step = $2, failed_otp = 0 \
     WHERE id = $1 AND status = 'active' AND (totp_last_step IS NULL OR totp_last_step < $2) \
     AND (locked_until IS NULL OR locked_until <= $3) RETURNING id";

/// A TOTP step as stored.
pub fn step_value(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// Marks `step` used if no later or equal step was, the analyst is active and not locked: the
/// single statement that makes a code good for one action only.
pub async fn consume_step<DB>(
    conn: &mut DB::Connection,
    id: Uuid,
    step: u64,
    now: Timestamp,
) -> Result<bool>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let accepted: Option<(String,)> = sqlx::query_as::<DB, (String,)>(CONSUME_STEP)
        .bind(id.to_string())
        .bind(step_value(step))
        .bind(now.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(accepted.is_some())
}

/// A wrong one-time code to count against an analyst.
#[derive(Debug, Clone)]
pub struct OtpFailureRecord {
    pub analyst: Uuid,
    pub max_failures: u32,
    pub now: Timestamp,
    /// The end of the lockout this failure starts, if it starts one.
    pub lock_until: Timestamp,
    pub actor: Actor,
    pub request: Option<RequestContext>,
    /// The customer whose account the request was aimed at: its chain records the failure too.
    pub customer: Option<CustomerSlug>,
}

/// What counting a wrong code concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpFailureCount {
    /// Wrong codes in a row, this one included.
    pub failures: i64,
    /// The lockout in force after this failure, if any.
    pub locked_until: Option<Timestamp>,
    /// Whether this failure started that lockout (also a new one after an earlier one ended).
    pub newly_locked: bool,
}

/// The chains an analyst's authentication event is recorded in: the system chain, and the
/// customer's when the request was aimed at one of its accounts (system first, the one lock
/// order every writer of both keeps).
pub fn refusal_chains(customer: Option<&CustomerSlug>) -> Vec<ChainId> {
    std::iter::once(ChainId::System)
        .chain(customer.map(|c| ChainId::Customer(c.clone())))
        .collect()
}

/// Counts a wrong code, locking the analyst out once `max_failures` are reached and no lockout
/// is in force (the count is cleared only by a right code, so after a lockout ends the next
/// wrong code locks again). Audited, never with the code.
pub async fn otp_failed<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    failure: &OtpFailureRecord,
) -> Result<OtpFailureCount>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> (i64, Option<String>): FromRow<'r, DB::Row>,
{
    let id = failure.analyst;
    let lock_until = failure.lock_until.to_string();
    let row: Option<(i64, Option<String>)> = sqlx::query_as::<DB, (i64, Option<String>)>(
        "UPDATE analysts SET failed_otp = failed_otp + 1, \
         locked_until = CASE WHEN failed_otp + 1 >= $2 AND (locked_until IS NULL OR locked_until <= $4) \
         THEN $3 ELSE locked_until END \
         WHERE id = $1 RETURNING failed_otp, locked_until",
    )
    .bind(id.to_string())
    .bind(i64::from(failure.max_failures))
    .bind(lock_until.clone())
    .bind(failure.now.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((failures, locked)) = row else {
        return Err(Error::NotFound(format!("analyst {id}")));
    };
    let newly_locked = locked.as_deref() == Some(lock_until.as_str());
    let locked_until = locked
        .and_then(|t| t.parse::<Timestamp>().ok())
        .filter(|until| *until > failure.now);
    let failed = AuditEvent::AuthenticationFailed {
        analyst_id: Some(id),
        reason: format!("wrong one-time code ({failures} in a row)"),
        request: failure.request.clone(),
    };
    let locked_out = AuditEvent::AnalystLockedOut {
        analyst_id: id,
        until: failure.lock_until,
    };
    for chain in refusal_chains(failure.customer.as_ref()) {
        conn.append(sealer, &chain, &failure.actor, &failed).await?;
        if newly_locked {
            conn.append(sealer, &chain, &failure.actor, &locked_out)
                .await?;
        }
    }
    Ok(OtpFailureCount {
        failures,
        locked_until,
        newly_locked,
    })
}

#[async_trait]
impl<E> AnalystStore for E
where
    E: Engine,
    Conn<E>: ChainTx,
    for<'c> &'c mut Conn<E>: Executor<'c, Database = E::Db>,
    for<'c> &'c Pool<E::Db>: Executor<'c, Database = E::Db>,
    <E::Db as Database>::Arguments: IntoArguments<E::Db>,
    for<'t> &'t str: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<&'t str>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> String: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> Option<String>: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> i64: Encode<'t, E::Db> + Type<E::Db>,
    for<'t> bool: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (i64,): FromRow<'r, Row<E>>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> AnalystRecord: FromRow<'r, Row<E>>,
    for<'r> SessionRecord: FromRow<'r, Row<E>>,
    for<'r> (i64, Option<String>): FromRow<'r, Row<E>>,
{
    async fn add_analyst(&self, record: &AnalystRecord, actor: &Actor) -> Result<()> {
        let sealer = self.sealer()?;
        let (record, actor) = (record.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move { add::<E::Db>(conn, &sealer, &record, &actor).await })
        })
        .await
    }

    async fn update_analyst(
        &self,
        id: uuid::Uuid,
        change: &AnalystChange,
        actor: &Actor,
    ) -> Result<()> {
        let sealer = self.sealer()?;
        let (change, actor) = (change.clone(), actor.clone());
        self.write(move |conn| {
            Box::pin(async move { update::<E::Db>(conn, &sealer, id, &change, &actor).await })
        })
        .await
    }

    async fn analyst(&self, id: uuid::Uuid) -> Result<Option<AnalystRecord>> {
        analyst_where::<E::Db>(self.pool(), "id", &id.to_string()).await
    }

    async fn analyst_by_email(&self, email: &str) -> Result<Option<AnalystRecord>> {
        analyst_where::<E::Db>(self.pool(), "email", email).await
    }

    async fn analyst_by_token(&self, token_hash: &str) -> Result<Option<AnalystRecord>> {
        analyst_where::<E::Db>(self.pool(), "token_hash", token_hash).await
    }

    async fn analysts(&self) -> Result<Vec<AnalystRecord>> {
        let sql = format!("SELECT {ANALYST_COLUMNS} FROM analysts ORDER BY email");
        Ok(
            sqlx::query_as::<E::Db, AnalystRecord>(sqlx::AssertSqlSafe(sql))
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let session = session.clone();
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(INSERT_SESSION)
                    .bind(session.id_hash)
                    .bind(session.analyst_id)
                    .bind(session.csrf_token)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .bind(session.auth_method)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>> {
        Ok(sqlx::query_as::<E::Db, SessionRecord>(SELECT_SESSION)
            .bind(id_hash)
            .bind(now.to_string())
            .fetch_optional(self.pool())
            .await?)
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id_hash = id_hash.to_owned();
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(DELETE_SESSION)
                    .bind(id_hash)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn consume_otp_step(&self, id: uuid::Uuid, step: u64, now: Timestamp) -> Result<bool> {
        Engine::consume_step(self, id, step, now).await
    }

    async fn record_otp_failure(&self, failure: &OtpFailureRecord) -> Result<OtpFailureCount> {
        let sealer = self.sealer()?;
        let failure = failure.clone();
        self.write(move |conn| {
            Box::pin(async move { otp_failed::<E::Db>(conn, &sealer, &failure).await })
        })
        .await
    }
}

/// The analyst whose unique `column` (id, email or token_hash) equals `value`.
async fn analyst_where<DB>(
    pool: &Pool<DB>,
    column: &'static str,
    value: &str,
) -> Result<Option<AnalystRecord>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> AnalystRecord: FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {ANALYST_COLUMNS} FROM analysts WHERE {column} = $1");
    Ok(
        sqlx::query_as::<DB, AnalystRecord>(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(pool)
            .await?,
    )
}
