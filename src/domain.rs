//! Domain values parsed once at the edge; the core never handles raw identifier strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The name of the chain that records events not tied to one customer.
pub const SYSTEM_CHAIN: &str = "system";

/// A customer's slug: `[a-z0-9-]{2,63}`, not starting or ending with `-`, and never `system`
/// (that name belongs to the service's own audit chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerSlug(String);

impl CustomerSlug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CustomerSlug {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !(2..=63).contains(&s.len()) || !valid_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(Error::InvalidInput(format!(
                "`{s}` is not a customer slug: use 2 to 63 characters from a-z, 0-9 and `-`, not starting or ending with `-`"
            )));
        }
        if s == SYSTEM_CHAIN {
            return Err(Error::InvalidInput(format!(
                "`{s}` is reserved for the service's own audit chain; choose another slug"
            )));
        }
        Ok(CustomerSlug(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for CustomerSlug {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CustomerSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which hash chain an audit entry belongs to: one per customer, plus the `system` chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainId {
    System,
    Customer(CustomerSlug),
}

impl ChainId {
    pub fn as_str(&self) -> &str {
        match self {
            ChainId::System => SYSTEM_CHAIN,
            ChainId::Customer(slug) => slug.as_str(),
        }
    }
}

impl FromStr for ChainId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == SYSTEM_CHAIN {
            Ok(ChainId::System)
        } else {
            s.parse().map(ChainId::Customer)
        }
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CustomerSlug> for ChainId {
    fn from(slug: CustomerSlug) -> Self {
        ChainId::Customer(slug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_contract_slugs() {
        for ok in ["contoso", "a1", "fabrikam-eu", &"x".repeat(63)] {
            assert!(ok.parse::<CustomerSlug>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_and_reserved_slugs() {
        for bad in [
            "",
            "a",
            "Contoso",
            "con toso",
            "-lead",
            "trail-",
            "système",
            "system",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<CustomerSlug>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_round_trip_through_text() {
        for name in ["system", "contoso"] {
            let id: ChainId = name.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(id.as_str(), name);
        }
    }
}
