//! Analysts as stored, and what the store reports when a one-time code is checked.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use uuid::Uuid;

use super::roles::{Role, Scope};
use crate::error::{Error, Result};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalystStatus {
    Active,
    Disabled,
}

impl AnalystStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalystStatus::Active => "active",
            AnalystStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for AnalystStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(AnalystStatus::Active),
            "disabled" => Ok(AnalystStatus::Disabled),
            other => Err(Error::Internal(format!("stored analyst status `{other}`"))),
        }
    }
}

/// An analyst, without secrets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analyst {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub customers: Scope,
    pub status: AnalystStatus,
    pub created_at: Timestamp,
}

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

impl AnalystRecord {
    pub fn analyst(&self) -> Result<Analyst> {
        let corrupt = |what: &str| {
            Error::Internal(format!("stored analyst {} has an invalid {what}", self.id))
        };
        Ok(Analyst {
            id: Uuid::parse_str(&self.id).map_err(|_| corrupt("id"))?,
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            role: self.role.parse().map_err(|_| corrupt("role"))?,
            customers: serde_json::from_str(&self.customers)
                .map_err(|_| corrupt("customer scope"))?,
            status: self.status.parse()?,
            created_at: self
                .created_at
                .parse()
                .map_err(|_| corrupt("creation time"))?,
        })
    }

    pub fn is_active(&self) -> bool {
        self.status == AnalystStatus::Active.as_str()
    }

    pub fn locked_until(&self) -> Option<Timestamp> {
        self.locked_until.as_deref().and_then(|t| t.parse().ok())
    }
}

/// An e-mail address as analysts are keyed: trimmed, lowercased, one `@`, no spaces.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1
        && !email.chars().any(char::is_whitespace)
        && crate::domain::one_line_text("e-mail", &email, 254).is_ok();
    if valid {
        Ok(email)
    } else {
        Err(Error::InvalidInput(format!(
            "`{}` is not an e-mail address",
            crate::domain::clean_line(&email, 100)
        )))
    }
}

/// What checking a one-time code against the store concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtpFailure {
    /// Wrong code; `failures` in a row so far.
    Wrong {
        failures: i64,
    },
    /// The code's time step was already used.
    Reused,
    Locked {
        until: Timestamp,
    },
}
