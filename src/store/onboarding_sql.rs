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
pub const USE_CONSENT_STATE: &str = "UPDATE consent_states SET used_at = $3 \
     WHERE nonce = $1 AND customer = $2 AND used_at IS NULL AND expires_at > $3 RETURNING nonce";
pub const RECORD_CONNECTION: &str = "UPDATE customers SET connection_ready = $2, connection_detail = $3, \
     connection_checked_at = $4, connection_ok_at = CASE WHEN $2 THEN $4 ELSE connection_ok_at END WHERE slug = $1";
pub const VALID_WEBHOOK_SECRETS: &str = "SELECT id, customer, secret, created_at, expires_at FROM webhook_secrets \
     WHERE customer = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at DESC";

/// Stores a new webhook secret; the current one (if any) stays valid until `grace_until`.
/// Audited without the secret. Returns whether a previous secret was replaced.
#[allow(clippy::too_many_arguments)]
pub async fn add_webhook_secret<DB>(
    conn: &mut DB::Connection,
    sealer: &Sealer,
    customer: &CustomerSlug,
    id: &str,
    sealed: &str,
    grace_until: Timestamp,
    actor: &Actor,
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
    let chain = ChainId::Customer(customer.clone());
    conn.lock_chain(&chain).await?;
    let replaced: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(
        "UPDATE webhook_secrets SET expires_at = $2 WHERE customer = $1 AND expires_at IS NULL RETURNING id",
    )
    .bind(customer.as_str())
    .bind(grace_until.to_string())
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query::<DB>(
        "INSERT INTO webhook_secrets (id, customer, secret, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(customer.as_str())
    .bind(sealed)
    .bind(Timestamp::now().to_string())
    .execute(&mut *conn)
    .await?;
    let rotated = !replaced.is_empty();
    let event = AuditEvent::WebhookSecretIssued {
        secret_id: id.to_owned(),
        previous_valid_until: rotated.then_some(grace_until),
    };
    conn.append(sealer, &chain, actor, &event).await?;
    Ok(rotated)
}
