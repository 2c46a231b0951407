//! Customers: one Entra tenant each, and the policy that bounds what may be done in it. The
//! values are defined with the others every layer shares (`domain::customer`).

pub mod consent;
pub mod discovery;
pub mod onboarding;

pub use crate::domain::customer::*;

use crate::audit::event::Actor;
use crate::domain::{CustomerSlug, TenantId};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;

/// A customer as the provider names it: its slug, its name, its e-mail domain, and its tenant
/// when known (otherwise found from the domain).
pub struct NewCustomer<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub domain: &'a str,
    pub tenant_id: Option<&'a str>,
}

impl NewCustomer<'_> {
    /// Whether the fields are well formed, before anything is spent on them.
    pub fn check(&self, name_label: &str) -> Result<()> {
        self.checked(name_label).map(|_| ())
    }

    fn checked(&self, name_label: &str) -> Result<(CustomerSlug, String, String)> {
        let slug: CustomerSlug = self.slug.trim().parse()?;
        let name = crate::domain::one_line_text(name_label, self.name, 200)?;
        if name.is_empty() {
            return Err(Error::InvalidInput(format!("{name_label} is required")));
        }
        let domain = discovery::primary_domain(self.domain.trim())?;
        Ok((slug, name, domain))
    }
}

/// Adds a customer with the default policy, for the CLI and the console alike; `name_label` names
/// the name field as its user knows it (`--name`, `name`).
pub async fn register(
    store: &dyn Store,
    authority_url: &url::Url,
    asked: &NewCustomer<'_>,
    name_label: &str,
    actor: &Actor,
) -> Result<Customer> {
    let (slug, name, domain) = asked.checked(name_label)?;
    let tenant_id: TenantId = match asked.tenant_id {
        Some(id) => id.parse()?,
        None => {
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
            discovery::tenant_of(&http, authority_url, &domain).await?
        }
    };
    let customer = Customer {
        slug,
        name,
        domain,
        tenant_id,
        policy: Policy::default(),
        created_at: Timestamp::now(),
        connection: None,
    };
    store.add_customer(&customer, actor).await?;
    Ok(customer)
}

/// A typo in a slug would otherwise grant a scope that matches nothing, silently.
pub async fn require_known(store: &dyn Store, scope: &crate::auth::Scope) -> Result<()> {
    if let crate::auth::Scope::Customers(slugs) = scope {
        for slug in slugs {
            if store.customer(slug).await?.is_none() {
                return Err(Error::InvalidInput(format!(
                    "there is no customer `{slug}` (see `killswitch customer list`)"
                )));
            }
        }
    }
    Ok(())
}
