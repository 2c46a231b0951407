//! Roles, what each may do, and which customers an analyst may see.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::CustomerSlug;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Analyst,
    Lead,
    Auditor,
    Admin,
}

/// Everything a route can require. The matrix in [`Role::allows`] is the single source of truth
/// (the README's table is generated from the same cells by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadAccounts,
    ReadActions,
    Disable,
    Enable,
    ReadDetections,
    DecideDetections,
    ManagePolicy,
    ExportAudit,
    ManageCustomers,
    ManageAnalysts,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::ReadAccounts,
        Permission::ReadActions,
        Permission::Disable,
        Permission::Enable,
        Permission::ReadDetections,
        Permission::DecideDetections,
        Permission::ManagePolicy,
        Permission::ExportAudit,
        Permission::ManageCustomers,
        Permission::ManageAnalysts,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Permission::ReadAccounts => "read an account's live state",
            Permission::ReadActions => "read actions",
            Permission::Disable => "disable an account",
            Permission::Enable => "enable an account",
            Permission::ReadDetections => "read detections",
            Permission::DecideDetections => "approve or dismiss detections",
            Permission::ManagePolicy => "change customer policy",
            Permission::ExportAudit => "export the audit log",
            Permission::ManageCustomers => "manage customers",
            Permission::ManageAnalysts => "manage analysts",
        }
    }
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Analyst, Role::Lead, Role::Auditor, Role::Admin];

    /// `analyst`: read, disable, decide detections. `lead`: analyst + enable + customer policy.
    /// `auditor`: read + audit export. `admin`: customers, analysts, audit export.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Analyst => matches!(
                permission,
                ReadAccounts | ReadActions | Disable | ReadDetections | DecideDetections
            ),
            Role::Lead => matches!(
                permission,
                ReadAccounts
                    | ReadActions
                    | Disable
                    | Enable
                    | ReadDetections
                    | DecideDetections
                    | ManagePolicy
            ),
            Role::Auditor => matches!(
                permission,
                ReadAccounts | ReadActions | ReadDetections | ExportAudit
            ),
            Role::Admin => matches!(
                permission,
                ManagePolicy | ExportAudit | ManageCustomers | ManageAnalysts
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Lead => "lead",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "analyst" => Ok(Role::Analyst),
            "lead" => Ok(Role::Lead),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            other => Err(Error::InvalidInput(format!(
                "`{other}` is not a role (analyst, lead, auditor, admin)"
            ))),
        }
    }
}

/// Which customers an analyst may read and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Customers(BTreeSet<CustomerSlug>),
}

impl Scope {
    pub fn covers(&self, customer: &CustomerSlug) -> bool {
        match self {
            Scope::All => true,
            Scope::Customers(set) => set.contains(customer),
        }
    }

    /// The customers a listing is narrowed to: `None` for every customer.
    pub fn slugs(&self) -> Option<Vec<CustomerSlug>> {
        match self {
            Scope::All => None,
            Scope::Customers(set) => Some(set.iter().cloned().collect()),
        }
    }

    /// The slugs for audit entries and listings: `["all"]` or the customers.
    pub fn names(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["all".to_owned()],
            Scope::Customers(set) => set.iter().map(ToString::to_string).collect(),
        }
    }
}

impl FromStr for Scope {
    type Err = Error;

    /// `all` or a comma-separated list of customer slugs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "all" {
            return Ok(Scope::All);
        }
        let set = s
            .split(',')
            .map(|slug| slug.trim().parse())
            .collect::<Result<BTreeSet<CustomerSlug>, _>>()?;
        if set.is_empty() {
            return Err(Error::InvalidInput(
                "give `all` or at least one customer slug".to_owned(),
            ));
        }
        Ok(Scope::Customers(set))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Scope::All => serializer.serialize_str("all"),
            Scope::Customers(set) => set.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            All(String),
            Customers(BTreeSet<CustomerSlug>),
        }
        match Stored::deserialize(deserializer)? {
            Stored::All(s) if s == "all" => Ok(Scope::All),
            Stored::All(other) => Err(serde::de::Error::custom(format!("unknown scope `{other}`"))),
            Stored::Customers(set) => Ok(Scope::Customers(set)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_store_and_check() {
        let scope: Scope = "contoso, fabrikam".parse().unwrap();
        assert!(scope.covers(&"contoso".parse().unwrap()));
        assert!(!scope.covers(&"northwind".parse().unwrap()));
        let stored = serde_json::to_string(&scope).unwrap();
        assert_eq!(stored, r#"["contoso","fabrikam"]"#);
        assert_eq!(serde_json::from_str::<Scope>(&stored).unwrap(), scope);
        assert_eq!(
            serde_json::from_str::<Scope>(r#""all""#).unwrap(),
            Scope::All
        );
        assert!("".parse::<Scope>().is_err());
        assert!("contoso,Not Valid".parse::<Scope>().is_err());
    }
}
