//! Onboarding writes, once for both backends: consent states, connection checks, webhook
//! secrets.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::domain_sql::ChainTx;
use crate::audit::append::Sealer;
use crate::audit::event::{Actor, AuditEvent};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::Result;
use crate::time::Timestamp;

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
