//! The admin-consent link and the `state` that comes back with Entra's redirect.
//!
//! The state is signed (HMAC under the service's secret key), bound to one customer and its
//! tenant, single-use (its nonce is stored and consumed atomically) and expiring, so a link can
//! be neither forged, reused, nor redirected to another customer.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::domain::{CustomerSlug, TenantId};
use crate::error::{Error, Result};
use crate::graph::token::GRAPH_SCOPE;
use crate::secrets::{SecretCipher, random_bytes};
use crate::time::Timestamp;

const PURPOSE: &str = "consent-state";

/// What a consent state says, once its signature checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    /// Customer slug.
    pub c: String,
    /// The tenant the link was made for.
    pub t: String,
    /// Single-use nonce.
    pub n: String,
    /// Expiry, RFC 3339.
    pub e: String,
}

impl ConsentState {
    pub fn new(
        customer: &CustomerSlug,
        tenant: &TenantId,
        expires: Timestamp,
    ) -> Result<ConsentState> {
        Ok(ConsentState {
            c: customer.to_string(),
            t: tenant.to_string(),
            n: URL_SAFE_NO_PAD.encode(random_bytes::<16>()?),
            e: expires.to_string(),
        })
    }

    /// `base64url(json) . base64url(hmac)`.
    pub fn sign(&self, cipher: &SecretCipher) -> Result<String> {
        let payload = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        let tag = cipher.mac(PURPOSE, &payload);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The state if its signature is valid; expiry and single use are checked by the caller
    /// (the nonce against the store), with the reason to record.
    pub fn verify(text: &str, cipher: &SecretCipher) -> Option<ConsentState> {
        let (payload, tag) = text.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !cipher.verify_mac(PURPOSE, &payload, &tag) {
            return None;
        }
        serde_json::from_slice(&payload).ok()
    }

    pub fn expired(&self, now: Timestamp) -> bool {
        self.e
            .parse::<Timestamp>()
            .map(|e| e <= now)
            .unwrap_or(true)
    }
}

/// `{authority}/{tenant}/v2.0/adminconsent?client_id=…&scope=https://graph.microsoft.com/.default&redirect_uri=…&state=…`
pub fn link(
    authority: &url::Url,
    tenant: &TenantId,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> Result<String> {
    let mut url = url::Url::parse(&format!(
        "{}/{tenant}/v2.0/adminconsent",
        authority.as_str().trim_end_matches('/')
    ))
    .map_err(|e| Error::Internal(format!("consent URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("scope", GRAPH_SCOPE)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state);
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_verify_only_unaltered_and_under_our_key() {
        let cipher = SecretCipher::new(&[9u8; 32], &[]).unwrap();
        let customer: CustomerSlug = "contoso".parse().unwrap();
        let tenant: TenantId = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let state = ConsentState::new(&customer, &tenant, Timestamp::now()).unwrap();
        let signed = state.sign(&cipher).unwrap();
        assert_eq!(ConsentState::verify(&signed, &cipher), Some(state.clone()));

        let mut forged = state.clone();
        forged.c = "fabrikam".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tag = signed.split('.').nth(1).unwrap();
        assert_eq!(
            ConsentState::verify(&format!("{forged_payload}.{tag}"), &cipher),
            None
        );
        assert_eq!(
            ConsentState::verify(&signed, &SecretCipher::new(&[1u8; 32], &[]).unwrap()),
            None
        );
        assert_eq!(ConsentState::verify("garbage", &cipher), None);
    }

    #[test]
    fn the_link_carries_the_documented_parameters() {
        let tenant: TenantId = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let authority = url::Url::parse("https://login.microsoftonline.com").unwrap();
        let link = link(
            &authority,
            &tenant,
            "app-id",
            "https://ks.example/consent/callback",
            "s.t",
        )
        .unwrap();
        assert!(link.starts_with("https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0/adminconsent?"));
        assert!(link.contains("client_id=app-id"));
        assert!(link.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));
        assert!(link.contains("redirect_uri=https%3A%2F%2Fks.example%2Fconsent%2Fcallback"));
        assert!(link.contains("state=s.t"));
    }
}
