//! The provider as discovered: its metadata, the openidconnect client built from it, and its
//! published signing keys, fetched again (rate-limited) when a token names a key not yet seen,
//! so a key rotation at the provider needs no restart here.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;
use openidconnect::core::{
    CoreClient, CoreClientAuthMethod, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, RedirectUrl,
};
use secrecy::ExposeSecret;
use url::Url;

use super::http::Http;
use super::{OidcProvider, ProviderError};
use crate::config::OidcSettings;
use crate::error::Result;

/// After a failed discovery, requests fail fast for this long before the next attempt.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// The key set is fetched again for an unknown `kid` at most this often.
pub(super) const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

pub(super) type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider's signing keys, in the forms both JWT libraries read.
pub(super) struct Keys {
    pub(super) oidc: CoreJsonWebKeySet,
    pub(super) jwt: Vec<(Jwk, DecodingKey)>,
}

/// What discovery found.
pub(super) struct Discovered {
    pub(super) metadata: CoreProviderMetadata,
    pub(super) client: Client,
    keys: RwLock<Arc<Keys>>,
    /// When the key set was last fetched (or tried); serialises refetches.
    keys_fetched: tokio::sync::Mutex<Instant>,
}

impl Discovered {
    pub(super) fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    pub(super) fn keys(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl OidcProvider {
    /// Fetches the provider's discovery document and key set. A provider that cannot be reached
    /// now is only a warning: discovery is retried when single sign-on is first used.
    pub async fn discover(
        settings: &OidcSettings,
        public_url: &Url,
        session_ttl: Duration,
    ) -> Result<OidcProvider> {
        let provider = OidcProvider::new(settings, public_url, session_ttl)?;
        match provider.fetch_discovery().await {
            Ok(found) => {
                provider.adopt(found);
            }
            Err(reason) => tracing::warn!(
                issuer = %provider.issuer_url,
                %reason,
                "single sign-on provider not reachable; will try again when it is first used"
            ),
        }
        Ok(provider)
    }

    /// The discovered provider, discovering it now if that has not happened yet.
    pub(super) async fn discovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        if let Some(found) = self.already_discovered() {
            return Ok(found);
        }
        let mut failed = self.discovery_failed.lock().await;
        // Another request may have discovered it while this one waited for the lock.
        if let Some(found) = self.already_discovered() {
            return Ok(found);
        }
        if let Some(at) = *failed
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(ProviderError::RecentlyFailed);
        }
        match self.fetch_discovery().await {
            Ok(found) => {
                let found = self.adopt(found);
                *failed = None;
                Ok(found)
            }
            Err(reason) => {
                // The message, quoted, as this log line has always carried it.
                tracing::warn!(issuer = %self.issuer_url, reason = ?reason.to_string(), "single sign-on discovery failed");
                *failed = Some(Instant::now());
                Err(reason)
            }
        }
    }

    fn already_discovered(&self) -> Option<Arc<Discovered>> {
        self.discovered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps what discovery found for every request from now on.
    fn adopt(&self, found: Discovered) -> Arc<Discovered> {
        tracing::info!(
            issuer = found.issuer(),
            "single sign-on provider discovered"
        );
        let found = Arc::new(found);
        *self
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(found.clone());
        found
    }

    async fn fetch_discovery(&self) -> Result<Discovered, ProviderError> {
        let metadata = self.fetch_metadata().await?;
        let keys = fetch_keys(&self.http, metadata.jwks_uri().url()).await?;
        Ok(Discovered {
            client: self.client_for(&metadata),
            metadata,
            keys: RwLock::new(Arc::new(keys)),
            keys_fetched: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    /// The discovery document, provided it names the configured issuer.
    async fn fetch_metadata(&self) -> Result<CoreProviderMetadata, ProviderError> {
        // The configured URL may have gained a trailing slash when parsed; the provider's own
        // spelling of its issuer is what its tokens carry, so that is what is checked later.
        let base = self.issuer_url.as_str().trim_end_matches('/');
        let url =
            Url::parse(&format!("{base}/.well-known/openid-configuration")).map_err(|cause| {
                ProviderError::IssuerUrl {
                    base: base.to_owned(),
                    cause,
                }
            })?;
        let body = self.http.get(&url).await?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|cause| ProviderError::InvalidDiscovery { url, cause })?;
        let issuer = metadata.issuer().as_str();
        if issuer.trim_end_matches('/') != base {
            return Err(ProviderError::IssuerMismatch {
                issuer: issuer.to_owned(),
                base: base.to_owned(),
            });
        }
        Ok(metadata)
    }

    /// The client for the code exchange. It sends the secret by HTTP Basic, the default of the
    /// specification, unless the provider says it only takes it in the request body.
    fn client_for(&self, metadata: &CoreProviderMetadata) -> Client {
        let methods = metadata.token_endpoint_auth_methods_supported();
        let basic = methods.is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
        let post = methods.is_some_and(|m| m.contains(&CoreClientAuthMethod::ClientSecretPost));
        CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(RedirectUrl::from_url(self.redirect_url.clone()))
        .set_auth_type(if !basic && post {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        })
    }

    /// Fetches the key set again, unless that happened moments ago (an unknown `kid` must not
    /// let anyone make killswitch hammer the provider).
    pub(super) async fn refresh_keys(
        &self,
        found: &Discovered,
    ) -> Result<Arc<Keys>, ProviderError> {
        let mut fetched = found.keys_fetched.lock().await;
        if fetched.elapsed() < self.jwks_min_refresh {
            return Ok(found.keys());
        }
        *fetched = Instant::now();
        let keys = Arc::new(fetch_keys(&self.http, found.metadata.jwks_uri().url()).await?);
        *found.keys.write().unwrap_or_else(PoisonError::into_inner) = keys.clone();
        tracing::info!(
            issuer = found.issuer(),
            keys = keys.jwt.len(),
            "single sign-on key set fetched again"
        );
        Ok(keys)
    }
}

async fn fetch_keys(http: &Http, url: &Url) -> Result<Keys, ProviderError> {
    let body = http.get(url).await?;
    let invalid = |cause| ProviderError::InvalidKeySet {
        url: url.clone(),
        cause,
    };
    let oidc: CoreJsonWebKeySet = serde_json::from_slice(&body).map_err(invalid)?;
    let raw: serde_json::Value = serde_json::from_slice(&body).map_err(invalid)?;
    // Keys of kinds jsonwebtoken does not know are skipped, not fatal.
    let jwt = raw
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter_map(|jwk| DecodingKey::from_jwk(&jwk).ok().map(|key| (jwk, key)))
        .collect();
    Ok(Keys { oidc, jwt })
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;
    use std::time::Duration;

    use serde_json::json;

    use super::super::OidcError;
    use super::super::test_provider::*;

    #[tokio::test]
    async fn an_unknown_kid_fetches_the_key_set_again_but_not_on_every_request() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let mut oidc = provider(&stub.issuer, None).await;
        oidc.jwks_min_refresh = Duration::ZERO;
        assert_eq!(stub.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

        // The provider rotates to a new key.
        *stub.jwks.lock().unwrap_or_else(PoisonError::into_inner) =
            json!({"keys": [jwk(PEM, "k1"), jwk(OTHER_PEM, "k2")]});
        let rotated = sign(&claims_for(&stub), "k2", OTHER_PEM);
        assert!(oidc.verify_bearer(&rotated).await.is_ok());
        assert_eq!(stub.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Unknown kids right after a fetch do not fetch again.
        oidc.jwks_min_refresh = Duration::from_secs(3600);
        for i in 0..5 {
            let unknown = sign(&claims_for(&stub), &format!("nope-{i}"), PEM);
            assert!(oidc.verify_bearer(&unknown).await.is_err());
        }
        assert_eq!(stub.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_discovered_later() {
        // A port nobody listens on: bind, note, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(listener);
        let oidc = provider(&format!("http://{address}"), None).await;
        let refused = oidc.verify_bearer(&sign(&claims(), "k1", PEM)).await;
        assert!(refused.is_err_and(|reason| reason.to_string().contains("unavailable")));
        assert!(matches!(oidc.login().await, Err(OidcError::Unavailable(_))));
    }
}
