//! Analysts as stored, and what the store reports when a one-time code is checked.

use serde::Serialize;
use uuid::Uuid;

use super::roles::{Role, Scope};
pub use crate::domain::analyst::AnalystStatus;
use crate::error::{Error, Result};
pub use crate::store::{ANALYST_COLUMNS, AnalystRecord};
use crate::time::Timestamp;

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

/// A customer's contact addresses, comma-separated, each normalised as [`normalize_email`];
/// an empty list is none.
pub fn normalize_contacts(text: &str) -> Result<Option<String>> {
    let addresses = text
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(normalize_email)
        .collect::<Result<Vec<_>>>()?;
    if addresses.len() > 20 {
        return Err(Error::InvalidInput(
            "at most 20 contact addresses".to_owned(),
        ));
    }
    Ok((!addresses.is_empty()).then(|| addresses.join(", ")))
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
