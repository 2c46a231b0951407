//! Single sign-on with the configured OpenID provider: bearer JWTs it issued, and the
//! authorization-code login for the console.
//!
//! Discovery, the authorization request (PKCE S256 and a nonce), the code exchange and the ID
//! token checks use the `openidconnect` crate, over the service's own reqwest client (no
//! redirects followed, bounded bodies, timeouts). Bearer JWTs (the provider's ID tokens or JWT
//! access tokens) are checked with `jsonwebtoken` against the same published key set. Only
//! asymmetric signatures by a key the provider publishes are accepted: never `alg: none`, never
//! HMAC (whose "key" would be the client secret, or a public key misused as one).
//!
//! The provider may be unreachable when killswitch starts: discovery is then retried on first
//! use (at most every few seconds), and the service runs meanwhile.
//!
//! Who a token names is one claim, `oidc.identity_claim`: `email` (the default) only when the
//! provider marks it `email_verified: true`, or another claim the provider vouches for as it
//! sends it (Entra: `preferred_username`). The subject is never taken for an e-mail address. A
//! token meant for several audiences must name killswitch as its authorized party (`azp`).
//!
//! A sign-in in progress (state, nonce, PKCE verifier) is not kept here: the caller seals it
//! into the browser's `ks_login` cookie, so anonymous `/login` requests cannot fill memory.
//! Only sign-ins that completed are remembered, to refuse a replayed callback.
//!
//! The parts: `discovery` (the provider's metadata and key set, fetched and refreshed),
//! `login` (the console's authorization-code flow), `bearer` (JWTs sent to the API),
//! `claims` (whom a verified token names), `http` (the bounded HTTP client under all) and
//! `error` (why none of it vouched for anyone).

mod bearer;
mod claims;
mod discovery;
mod error;
mod http;
mod login;
#[cfg(test)]
mod test_provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use url::Url;

use crate::config::OidcSettings;
use crate::error::{Error, Result};

pub use error::{OidcError, ProviderError, TokenRefusal};
pub use http::HttpError;
pub use login::{LoginRedirect, PendingLogin};

/// How long a started sign-in may take before its callback is refused.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// The configured OpenID provider.
pub struct OidcProvider {
    issuer_url: Url,
    client_id: String,
    client_secret: SecretString,
    /// Accepted `aud` values of bearer JWTs: the client id, and `oidc.audience` if set.
    audiences: Vec<String>,
    redirect_url: Url,
    session_ttl: Duration,
    http: http::Http,
    discovered: RwLock<Option<Arc<discovery::Discovered>>>,
    /// When discovery last failed; held while discovering so only one request tries.
    discovery_failed: tokio::sync::Mutex<Option<Instant>>,
    /// States of sign-ins that completed, until they expire: a replayed callback is refused
    /// before the code is tried. Bounded by the sign-ins that reached the provider and back.
    completed: Mutex<HashMap<String, Instant>>,
    jwks_min_refresh: Duration,
    identity_claim: String,
}

/// `{public_url}/auth/callback`, keeping any path prefix of the public URL.
pub fn redirect_url(public_url: &Url) -> Result<Url> {
    let base = public_url.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/auth/callback"))
        .map_err(|e| Error::Config(vec![format!("server.public_url: {e}")]))
}

/// The three settings single sign-on cannot do without.
struct Registration {
    issuer_url: Url,
    client_id: String,
    client_secret: SecretString,
}

impl Registration {
    /// One missing setting is a configuration error naming it, whichever of the three it is.
    fn from_settings(settings: &OidcSettings) -> Result<Registration> {
        let missing = |key: &str| {
            Error::Config(vec![format!(
                "{key}: required for single sign-on (oidc.issuer_url, oidc.client_id and oidc.client_secret go together)"
            )])
        };
        Ok(Registration {
            issuer_url: settings
                .issuer_url
                .clone()
                .ok_or_else(|| missing("oidc.issuer_url"))?,
            client_id: settings
                .client_id
                .clone()
                .ok_or_else(|| missing("oidc.client_id"))?,
            client_secret: settings
                .client_secret
                .clone()
                .ok_or_else(|| missing("oidc.client_secret"))?,
        })
    }
}

/// The client id first (the ID token's audience), then `oidc.audience` unless it repeats it.
fn accepted_audiences(client_id: &str, audience: Option<&str>) -> Vec<String> {
    let mut audiences = vec![client_id.to_owned()];
    audiences.extend(audience.filter(|a| *a != client_id).map(str::to_owned));
    audiences
}

impl OidcProvider {
    fn new(
        settings: &OidcSettings,
        public_url: &Url,
        session_ttl: Duration,
    ) -> Result<OidcProvider> {
        let Registration {
            issuer_url,
            client_id,
            client_secret,
        } = Registration::from_settings(settings)?;
        Ok(OidcProvider {
            audiences: accepted_audiences(&client_id, settings.audience.as_deref()),
            issuer_url,
            client_id,
            client_secret,
            redirect_url: redirect_url(public_url)?,
            session_ttl,
            http: http::Http::new()?,
            discovered: RwLock::new(None),
            discovery_failed: tokio::sync::Mutex::new(None),
            completed: Mutex::new(HashMap::new()),
            jwks_min_refresh: discovery::JWKS_MIN_REFRESH,
            identity_claim: settings.identity_claim.clone(),
        })
    }

    /// How long a console session lasts after signing in.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// The redirect URI registered at the provider: `{server.public_url}/auth/callback`.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_uri_follows_the_public_url() {
        let at = |u: &str| {
            redirect_url(&Url::parse(u).unwrap_or_else(|e| panic!("{e}")))
                .map(|u| u.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            at("http://localhost:8080"),
            "http://localhost:8080/auth/callback"
        );
        assert_eq!(
            at("https://soc.example/ks/"),
            "https://soc.example/ks/auth/callback"
        );
    }
}
