//! Finding a customer's tenant id from its primary domain, through the OpenID discovery
//! document Entra publishes for every tenant.

use serde::Deserialize;

use crate::domain::TenantId;
use crate::error::{Error, Result};

const WHERE_TO_FIND: &str = "the customer finds it in the Entra admin center under Overview → Primary domain, \
     and it always ends with .onmicrosoft.com";

/// Checks that `domain` is a tenant's `*.onmicrosoft.com` domain (the one Entra created and the
/// customer cannot change or lose), lowercased.
pub fn primary_domain(domain: &str) -> Result<String> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(name) = domain.strip_suffix(".onmicrosoft.com") else {
        return Err(Error::InvalidInput(format!(
            "`{domain}` is not the tenant's primary domain: {WHERE_TO_FIND}"
        )));
    };
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::InvalidInput(format!(
            "`{domain}` is not a valid tenant domain: {WHERE_TO_FIND}"
        )));
    }
    Ok(domain)
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
}

/// The tenant id in the `issuer` of `{authority}/{domain}/v2.0/.well-known/openid-configuration`.
pub async fn tenant_of(
    http: &reqwest::Client,
    authority: &url::Url,
    domain: &str,
) -> Result<TenantId> {
    let url = format!(
        "{}/{domain}/v2.0/.well-known/openid-configuration",
        authority.as_str().trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| {
            Error::Upstream(format!(
                "cannot reach Entra to look up {domain}: {}",
                e.without_url()
            ))
        })?;
    if response.status().as_u16() == 400 || response.status().as_u16() == 404 {
        return Err(Error::InvalidInput(format!(
            "Entra knows no tenant with the domain {domain}: {WHERE_TO_FIND}"
        )));
    }
    if !response.status().is_success() {
        return Err(Error::Upstream(format!(
            "Entra answered {} when looking up {domain}",
            response.status()
        )));
    }
    let discovery: Discovery = response.json().await.map_err(|e| {
        Error::InvalidInput(format!(
            "Entra's discovery document for {domain} is unreadable: {e}"
        ))
    })?;
    url::Url::parse(&discovery.issuer)
        .ok()
        .and_then(|issuer| {
            issuer
                .path_segments()?
                .find_map(|segment| segment.parse::<TenantId>().ok())
        })
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "Entra's discovery document for {domain} names no tenant id"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_onmicrosoft_domains_are_primary() {
        assert_eq!(
            primary_domain(" Contoso.onmicrosoft.com. ").unwrap(),
            "contoso.onmicrosoft.com"
        );
        for bad in [
            "contoso.com",
            "onmicrosoft.com",
            ".onmicrosoft.com",
            "con toso.onmicrosoft.com",
        ] {
            let error = primary_domain(bad).unwrap_err().to_string();
            assert!(error.contains("Primary domain"), "{bad}: {error}");
        }
    }
}
