//! Onboarding writes, once for both backends: consent states, connection checks, webhook
//! secrets.

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::domain_sql::ChainTx;
use super::engine::{Conn, Engine, Row};
use crate::audit::append::Sealer;
use crate::domain::customer::Customer;
use crate::domain::event::{Actor, AuditEvent};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::Result;
use crate::time::Timestamp;

/// Onboarding: consent links, connection checks and webhook secrets.
#[async_trait]
pub trait OnboardingStore: Send + Sync {
    async fn create_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        expires: Timestamp,
    ) -> Result<()>;

    /// Spends a consent state on its first use; `false` when it is unknown, for another customer,
    /// or used already. Expiry is the caller's to check (it is signed into the state).
    async fn use_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<bool>;

    async fn record_connection_check(
        &self,
        customer: &CustomerSlug,
        ready: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;

    /// Issues a webhook secret (sealed); see `add_webhook_secret`.
    async fn add_webhook_secret(&self, new: &NewWebhookSecret) -> Result<bool>;

    /// Stores secrets sealed again under the current key (see `reseal`).
    async fn reseal(&self, reseal: &Reseal) -> Result<(u64, u64)>;

    /// A customer and its webhook secrets valid at `now` (newest first), in one read.
    async fn customer_with_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Option<(Customer, Vec<WebhookSecretRecord>)>>;

    /// The customer's webhook secrets valid at `now`, newest first.
    async fn webhook_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecretRecord>>;
}

/// A stored webhook secret (sealed), valid until `expires_at` when it has been replaced.
#[derive(Clone, sqlx::FromRow)]
pub struct WebhookSecretRecord {
    pub id: String,
    pub customer: String,
    pub secret: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for WebhookSecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecretRecord")
            .field("id", &self.id)
            .field("customer", &self.customer)
            .finish_non_exhaustive()
    }
}

pub const INSERT_CONSENT_STATE: &str =
    "INSERT INTO consent_states (nonce, customer, created_at, expires_at) VALUES ($1, $2, $3, $4)";
/// Spends a consent state on its first use, expired or not (the signed state carries the expiry
/// the callback checks): only that first use may be recorded in the customer's chain.
pub const USE_CONSENT_STATE: &str = "UPDATE consent_states SET used_at = $3 \
     WHERE nonce = $1 AND customer = $2 AND used_at IS NULL RETURNING nonce";
pub const RECORD_CONNECTION: &str = "UPDATE customers SET connection_ready = $2, connection_detail = $3, \
     connection_checked_at = $4, connection_ok_at = CASE WHEN $2 THEN $4 ELSE connection_ok_at END WHERE slug = $1";
/// A customer and one of its webhook secrets valid at `$2` (all NULL when it has none): one
/// row per secret, newest first. The webhook intake reads both in one round trip per delivery.
#[derive(sqlx::FromRow)]
pub struct CustomerSecretRow {
    #[sqlx(flatten)]
    pub customer: super::domain_sql::CustomerRecord,
    pub secret_id: Option<String>,
    pub secret: Option<String>,
    pub secret_created_at: Option<String>,
    pub secret_expires_at: Option<String>,
}

pub const CUSTOMER_WITH_SECRETS: &str = "SELECT c.slug, c.name, c.domain, c.tenant_id, c.policy, c.created_at, \
     c.connection_ready, c.connection_detail, c.connection_checked_at, c.connection_ok_at, \
     w.id AS secret_id, w.secret AS secret, w.created_at AS secret_created_at, w.expires_at AS secret_expires_at \
     FROM customers c LEFT JOIN webhook_secrets w ON w.customer = c.slug AND (w.expires_at IS NULL OR w.expires_at > $2) \
     WHERE c.slug = $1 ORDER BY w.created_at DESC";
pub const VALID_WEBHOOK_SECRETS: &str = "SELECT id, customer, secret, created_at, expires_at FROM webhook_secrets \
     WHERE customer = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at DESC";

/// A webhook secret to store (sealed).
#[derive(Clone)]
pub struct NewWebhookSecret {
    pub customer: CustomerSlug,
    pub id: String,
    pub sealed: String,
    pub now: Timestamp,
    /// Until when the secret it replaces stays valid (`now` to revoke it at once).
    pub previous_until: Timestamp,
    pub actor: Actor,
}

impl std::fmt::Debug for NewWebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhookSecret")
            .field("customer", &self.customer)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Stores a new webhook secret. The current one (if any) stays valid until `previous_until`;
/// any older one still in its grace period stops now, so at most two secrets are ever valid.
/// Audited without the secret. Returns whether a previous secret was replaced.
pub async fn add_webhook_secret<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    new: &NewWebhookSecret,
) -> Result<bool>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let chain = ChainId::Customer(new.customer.clone());
    conn.lock_chain(&chain).await?;
    let now = new.now.to_string();
    sqlx::query::<DB>(
        "UPDATE webhook_secrets SET expires_at = $2 WHERE customer = $1 AND expires_at IS NOT NULL AND expires_at > $2",
    )
    .bind(new.customer.as_str())
    .bind(now.clone())
    .execute(&mut *conn)
    .await?;
    let replaced: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(
        "UPDATE webhook_secrets SET expires_at = $2 WHERE customer = $1 AND expires_at IS NULL RETURNING id",
    )
    .bind(new.customer.as_str())
    .bind(new.previous_until.to_string())
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query::<DB>(
        "INSERT INTO webhook_secrets (id, customer, secret, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(new.id.as_str())
    .bind(new.customer.as_str())
    .bind(new.sealed.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let rotated = !replaced.is_empty();
    let event = AuditEvent::WebhookSecretIssued {
        secret_id: new.id.clone(),
        previous_valid_until: rotated.then_some(new.previous_until),
    };
    conn.append(sealer, &chain, &new.actor, &event).await?;
    Ok(rotated)
}

/// A secret sealed again under the current key; stored only if the row still holds `old`.
#[derive(Clone)]
pub struct Resealed {
    pub id: String,
    pub old: String,
    pub new: String,
}

/// Every secret `killswitch secrets reseal` moves to the current key, in one transaction.
#[derive(Clone)]
pub struct Reseal {
    pub key_id: String,
    pub totp: Vec<Resealed>,
    pub webhook: Vec<Resealed>,
    pub actor: Actor,
}

impl std::fmt::Debug for Reseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reseal")
            .field("key_id", &self.key_id)
            .field("totp", &self.totp.len())
            .field("webhook", &self.webhook.len())
            .finish()
    }
}

/// Stores the resealed secrets (each only if unchanged since it was read) and records how many
/// in the system chain; returns how many TOTP and webhook secrets were replaced.
pub async fn reseal<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    r: &Reseal,
) -> Result<(u64, u64)>
where
    DB: Database,
    DB::Connection: ChainTx,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let mut counts = [0u64; 2];
    let tables = [
        (
            "UPDATE analysts SET totp_secret = $2 WHERE id = $1 AND totp_secret = $3 RETURNING id",
            &r.totp,
        ),
        (
            "UPDATE webhook_secrets SET secret = $2 WHERE id = $1 AND secret = $3 RETURNING id",
            &r.webhook,
        ),
    ];
    for (count, (sql, secrets)) in counts.iter_mut().zip(tables) {
        for secret in secrets {
            let replaced: Option<(String,)> = sqlx::query_as::<DB, (String,)>(sql)
                .bind(secret.id.as_str())
                .bind(secret.new.as_str())
                .bind(secret.old.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            *count += u64::from(replaced.is_some());
        }
    }
    let event = AuditEvent::SecretsResealed {
        key_id: r.key_id.clone(),
        totp_secrets: counts[0],
        webhook_secrets: counts[1],
    };
    conn.append(sealer, &ChainId::System, &r.actor, &event)
        .await?;
    Ok((counts[0], counts[1]))
}

#[async_trait]
impl<E> OnboardingStore for E
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
    for<'t> bool: Encode<'t, E::Db> + Type<E::Db>,
    for<'r> (String,): FromRow<'r, Row<E>>,
    for<'r> (String, String): FromRow<'r, Row<E>>,
    for<'r> CustomerSecretRow: FromRow<'r, Row<E>>,
    for<'r> WebhookSecretRecord: FromRow<'r, Row<E>>,
{
    async fn create_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        expires: Timestamp,
    ) -> Result<()> {
        let (nonce, customer) = (nonce.to_owned(), customer.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(INSERT_CONSENT_STATE)
                    .bind(nonce)
                    .bind(customer)
                    .bind(Timestamp::now().to_string())
                    .bind(expires.to_string())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn use_consent_state(
        &self,
        nonce: &str,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<bool> {
        let (nonce, customer) = (nonce.to_owned(), customer.to_string());
        self.write_statement(move |conn| {
            Box::pin(async move {
                let used = sqlx::query_as::<E::Db, (String,)>(USE_CONSENT_STATE)
                    .bind(nonce)
                    .bind(customer)
                    .bind(now.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(used.is_some())
            })
        })
        .await
    }

    async fn record_connection_check(
        &self,
        customer: &CustomerSlug,
        ready: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let (customer, detail) = (customer.to_string(), detail.to_owned());
        self.write_statement(move |conn| {
            Box::pin(async move {
                sqlx::query::<E::Db>(RECORD_CONNECTION)
                    .bind(customer)
                    .bind(ready)
                    .bind(detail)
                    .bind(now.to_string())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn add_webhook_secret(&self, new: &NewWebhookSecret) -> Result<bool> {
        let sealer = self.sealer()?;
        let new = new.clone();
        self.write(move |conn| {
            Box::pin(async move { add_webhook_secret::<E::Db>(conn, &sealer, &new).await })
        })
        .await
    }

    async fn reseal(&self, reseal: &Reseal) -> Result<(u64, u64)> {
        let sealer = self.sealer()?;
        let reseal = reseal.clone();
        self.write(move |conn| {
            Box::pin(async move { self::reseal::<E::Db>(conn, &sealer, &reseal).await })
        })
        .await
    }

    async fn customer_with_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Option<(Customer, Vec<WebhookSecretRecord>)>> {
        let rows = self
            .customer_secret_rows(customer.as_str(), now.to_string())
            .await?;
        Ok(customer_and_secrets(rows)?)
    }

    async fn webhook_secrets(
        &self,
        customer: &CustomerSlug,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecretRecord>> {
        Ok(
            sqlx::query_as::<E::Db, WebhookSecretRecord>(VALID_WEBHOOK_SECRETS)
                .bind(customer.as_str())
                .bind(now.to_string())
                .fetch_all(self.pool())
                .await?,
        )
    }
}

/// The customer and its valid secrets from the rows of one joined read (a customer without
/// valid secrets comes as one row without a secret).
fn customer_and_secrets(
    rows: Vec<CustomerSecretRow>,
) -> Result<Option<(Customer, Vec<WebhookSecretRecord>)>> {
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
