//! The `analysts` table's row as stored. Its secrets stay sealed or hashed here; `auth` turns a
//! row into an `Analyst`.

use std::fmt;

/// An analyst row. `totp_secret` is sealed (see `secrets`), `token_hash` a SHA-256.
#[derive(Clone, sqlx::FromRow)]
pub struct AnalystRecord {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub customers: String,
    pub status: String,
    pub token_hash: String,
    pub totp_secret: String,
    pub totp_last_step: Option<i64>,
    pub failed_otp: i64,
    pub locked_until: Option<String>,
    pub created_at: String,
}

impl fmt::Debug for AnalystRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnalystRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

pub const ANALYST_COLUMNS: &str = "id, email, display_name, role, customers, status, token_hash, totp_secret, \
     totp_last_step, failed_otp, locked_until, created_at";
