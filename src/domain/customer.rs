//! Customers: one Entra tenant each, and the policy that bounds what may be done in it.

use serde::{Deserialize, Serialize};

use super::detection::{Severity, SignedString};
use super::{AccountRef, CustomerSlug, TenantId};
use crate::time::Timestamp;

/// Default ceiling on actions per customer per hour: enough for a real incident, too few for a
/// stolen session or a runaway workflow to lock a whole company out.
pub const DEFAULT_MAX_ACTIONS_PER_HOUR: u32 = 20;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub slug: CustomerSlug,
    pub name: String,
    pub domain: String,
    pub tenant_id: TenantId,
    pub policy: Policy,
    pub created_at: Timestamp,
    /// The last connection test, if any.
    pub connection: Option<Connection>,
}

/// Whether killswitch can act in the customer's tenant, as the last test found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    pub ready: bool,
    /// "ready", or the exact reason it is not.
    pub detail: String,
    pub checked_at: Timestamp,
    pub last_ready_at: Option<Timestamp>,
}

/// Severity from which Falcon detections disable an account without waiting for an analyst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AutoDisable {
    #[default]
    Off,
    High,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Break-glass and service accounts: never touched, every attempt recorded as denied.
    pub protected: Vec<AccountRef>,
    pub max_actions_per_hour: u32,
    /// Revoke sign-in sessions with every disable unless the request says otherwise.
    pub revoke_sessions: bool,
    pub auto_disable: AutoDisable,
    /// The customer's security contact address(es), comma-separated.
    pub contact: Option<String>,
    /// Which string the customer's Falcon webhook signs (public receivers disagree).
    pub webhook_signature: SignedString,
    /// How the contact hears of actions on the tenant.
    pub notify: NotifyMode,
    /// The customer's own HTTPS endpoint for action notices (Standard Webhooks, signed with a
    /// secret killswitch derives for this customer), if any. Recorded in the audit log with
    /// every policy change: it must not carry a credential of its own.
    pub webhook_url: Option<String>,
}

/// How a customer's contact hears of the actions on its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NotifyMode {
    /// A notice for each action, as it ends.
    #[default]
    Immediate,
    /// One message a day listing the day's actions, with the last witness.
    Digest,
    Off,
}

impl NotifyMode {
    pub const ALL: [NotifyMode; 3] = [NotifyMode::Immediate, NotifyMode::Digest, NotifyMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyMode::Immediate => "immediate",
            NotifyMode::Digest => "digest",
            NotifyMode::Off => "off",
        }
    }
}

impl std::str::FromStr for NotifyMode {
    type Err = super::InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NotifyMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| {
                super::InvalidValue::Input(format!("`{text}` is not immediate, digest or off"))
            })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            protected: Vec::new(),
            max_actions_per_hour: DEFAULT_MAX_ACTIONS_PER_HOUR,
            revoke_sessions: false,
            auto_disable: AutoDisable::Off,
            contact: None,
            webhook_signature: Default::default(),
            notify: NotifyMode::Immediate,
            webhook_url: None,
        }
    }
}

impl AutoDisable {
    pub const ALL: [AutoDisable; 3] = [AutoDisable::Off, AutoDisable::High, AutoDisable::Critical];

    /// Whether a detection of `severity` is disabled at once under this setting.
    pub fn covers(self, severity: Severity) -> bool {
        match self {
            AutoDisable::Off => false,
            AutoDisable::High => severity >= Severity::High,
            AutoDisable::Critical => severity >= Severity::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AutoDisable::Off => "off",
            AutoDisable::High => "high",
            AutoDisable::Critical => "critical",
        }
    }
}

impl std::str::FromStr for AutoDisable {
    type Err = super::InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AutoDisable::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .ok_or_else(|| {
                super::InvalidValue::Input(format!("`{text}` is not off, high or critical"))
            })
    }
}

/// A customer's notice webhook: `https://…`, or plain `http://` to a loopback host only.
pub fn check_webhook_url(text: &str) -> Result<String, super::InvalidValue> {
    let bad = |why: &str| super::InvalidValue::Input(format!("the webhook URL {why}"));
    let url = url::Url::parse(text.trim()).map_err(|_| bad("is not a URL"))?;
    let Some(host) = url.host() else {
        return Err(bad("names no host"));
    };
    let loopback = super::is_loopback_host(&host);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(bad("must use https (plain http only to a loopback host)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry a user or password (it is recorded in the audit log)",
        ));
    }
    if url.as_str().len() > 2000 {
        return Err(bad("is longer than 2000 characters"));
    }
    Ok(url.to_string())
}

impl Policy {
    /// The contact addresses, each as stored (normalised when set).
    pub fn contact_addresses(&self) -> Vec<String> {
        self.contact
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the account as requested is on the protected list (no Graph call needed).
    pub fn protects(&self, account: &AccountRef) -> bool {
        self.protected.contains(account)
    }

    /// Whether the account Graph resolved (by id and UPN) is on the protected list, whichever
    /// way it was listed and requested.
    pub fn protects_user(&self, id: &str, upn: &str) -> bool {
        self.protected.iter().any(|p| p.matches(id, upn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_matches_by_upn_or_object_id_whichever_was_listed() {
        let policy = Policy {
            protected: vec![
                "breakglass@contoso.onmicrosoft.com".parse().unwrap(),
                "6f1c2e1b-0b5b-4c1e-9c43-2f4f7a3c9d10".parse().unwrap(),
            ],
            ..Policy::default()
        };
        assert!(policy.protects(&"BreakGlass@contoso.onmicrosoft.com".parse().unwrap()));
        assert!(!policy.protects(&"alice@contoso.onmicrosoft.com".parse().unwrap()));
        assert!(policy.protects_user(
            "00000000-0000-0000-0000-000000000001",
            "breakglass@CONTOSO.onmicrosoft.com"
        ));
        assert!(policy.protects_user(
            "6f1c2e1b-0b5b-4c1e-9c43-2f4f7a3c9d10",
            "svc-sync@contoso.onmicrosoft.com"
        ));
        assert!(!policy.protects_user(
            "00000000-0000-0000-0000-000000000001",
            "alice@contoso.onmicrosoft.com"
        ));
    }

    #[test]
    fn policies_stored_before_a_field_existed_take_its_default() {
        let policy: Policy = serde_json::from_str(r#"{"protected":[]}"#).unwrap();
        assert_eq!(policy.max_actions_per_hour, DEFAULT_MAX_ACTIONS_PER_HOUR);
    }
}
