//! The console's sign-in: the authorization-code flow with PKCE (S256) and a nonce, started by
//! [`OidcProvider::login`] and completed by [`OidcProvider::finish`] when the browser comes back.

use std::sync::PoisonError;
use std::time::Instant;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
    CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, CsrfToken, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};
use url::Url;

use super::claims::{Claims, authorized_party, identity};
use super::discovery::{Discovered, Keys};
use super::{LEEWAY_SECS, LOGIN_TTL, OidcError, OidcProvider};

/// Where to send the browser to sign in, and what the callback needs to finish: the caller
/// keeps `pending` (sealed in a cookie) until then.
pub struct LoginRedirect {
    pub url: Url,
    pub pending: PendingLogin,
}

/// A sign-in in progress: its state, nonce and PKCE verifier, and when it started (Unix
/// seconds). Secret until the callback: seal it before it leaves the server.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PendingLogin {
    pub state: String,
    nonce: String,
    verifier: String,
    pub started: i64,
}

impl PendingLogin {
    /// Whether the sign-in is older than [`LOGIN_TTL`] (or from the future).
    pub fn expired(&self, now: i64) -> bool {
        let age = now - self.started;
        !(0..=LOGIN_TTL.as_secs() as i64).contains(&age)
    }
}

impl OidcProvider {
    /// Starts a sign-in: the provider's authorization URL (code flow, PKCE S256, nonce), and
    /// the sign-in to keep until the callback.
    pub async fn login(&self) -> Result<LoginRedirect, OidcError> {
        let found = self.discovered().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = found
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()));
        if self.identity_claim != "email" {
            request = request.add_scope(Scope::new("profile".to_owned()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(LoginRedirect {
            url,
            pending: PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                started: chrono::Utc::now().timestamp(),
            },
        })
    }

    /// Completes a sign-in the caller kept: exchanges the code (with the PKCE verifier and the
    /// client secret) and verifies the ID token: signature by a published key, issuer,
    /// audience and authorized party, expiry, the nonce of this sign-in, and the identity claim.
    /// The caller has checked that `pending` is this browser's and not expired.
    pub async fn finish(&self, code: &str, pending: PendingLogin) -> Result<String, OidcError> {
        if self.completed_before(&pending.state) {
            return Err(OidcError::UnknownState);
        }
        let found = self.discovered().await?;
        let response = self.exchange_code(&found, code, pending.verifier).await?;
        self.remember_completed(pending.state);
        let id_token = response.id_token().ok_or_else(|| {
            OidcError::Unverified("the provider's token response has no ID token".to_owned())
        })?;
        self.verify_id_token(&found, id_token, &Nonce::new(pending.nonce))
            .await?;
        // Verified above; read again as plain JSON for the claims the checks below name.
        let claims = payload_claims(&id_token.to_string())
            .map_err(|unreadable| OidcError::Unverified(unreadable.to_string()))?;
        authorized_party(&claims, &self.client_id).map_err(OidcError::Refused)?;
        identity(&claims, &self.identity_claim).map_err(OidcError::Refused)
    }

    /// Trades the code for tokens at the provider's token endpoint. A code the provider
    /// refuses vouches for nobody; a provider that cannot answer is unavailable.
    async fn exchange_code(
        &self,
        found: &Discovered,
        code: &str,
        verifier: String,
    ) -> Result<CoreTokenResponse, OidcError> {
        found
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| {
                OidcError::Unavailable("the provider advertises no token endpoint".to_owned())
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => OidcError::Unverified(format!(
                    "the provider refused the authorization code: {}",
                    answer.error()
                )),
                RequestTokenError::Request(e) => OidcError::Unavailable(e.to_string()),
                RequestTokenError::Parse(e, _) => {
                    OidcError::Unavailable(format!("the token response cannot be read: {e}"))
                }
                RequestTokenError::Other(e) => OidcError::Unavailable(e),
            })
    }

    /// Checks the ID token against the published keys, fetching the key set again once if the
    /// token was signed by a key not seen yet (the provider rotated its keys).
    async fn verify_id_token(
        &self,
        found: &Discovered,
        id_token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<(), OidcError> {
        let mut keys = found.keys();
        let mut refetched = false;
        loop {
            let verifier = self.id_token_verifier(found, &keys);
            match id_token.claims(&verifier, nonce) {
                Ok(_) => return Ok(()),
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refetched => {
                    refetched = true;
                    keys = self.refresh_keys(found).await?;
                }
                Err(e) => {
                    return Err(OidcError::Unverified(format!(
                        "the ID token was refused: {e}"
                    )));
                }
            }
        }
    }

    fn id_token_verifier(&self, found: &Discovered, keys: &Keys) -> CoreIdTokenVerifier<'static> {
        let extra: Vec<String> = self.audiences[1..].to_vec();
        let advertised = found
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| asymmetric_oidc(alg))
            .cloned()
            .collect::<Vec<_>>();
        let algs = if advertised.is_empty() {
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
        } else {
            advertised
        };
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.client_id.clone()),
            found.metadata.issuer().clone(),
            keys.oidc.clone(),
        )
        .set_allowed_algs(algs)
        .set_other_audience_verifier_fn(move |aud| extra.iter().any(|a| a == aud.as_str()))
        .set_time_fn(|| chrono::Utc::now() - chrono::Duration::seconds(LEEWAY_SECS as i64))
    }

    fn completed_before(&self, state: &str) -> bool {
        self.completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(state)
    }

    fn remember_completed(&self, state: String) {
        let mut completed = self
            .completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        completed.retain(|_, at| at.elapsed() < LOGIN_TTL);
        completed.insert(state, Instant::now());
    }
}

/// Why the claims of an ID token that verified cannot be read again as JSON.
#[derive(Debug, thiserror::Error)]
enum UnreadableIdToken {
    #[error("the ID token is not a JWT")]
    NotAJwt,
    #[error("the ID token's claims cannot be read")]
    Claims,
}

/// The claims of a JWT whose signature has been verified already.
fn payload_claims(jwt: &str) -> Result<Claims, UnreadableIdToken> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).ok_or(UnreadableIdToken::NotAJwt)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| UnreadableIdToken::Claims)?;
    serde_json::from_slice(&bytes).map_err(|_| UnreadableIdToken::Claims)
}

fn asymmetric_oidc(alg: &CoreJwsSigningAlgorithm) -> bool {
    !matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
            | CoreJwsSigningAlgorithm::None
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::PoisonError;

    use serde_json::json;

    use super::super::test_provider::*;

    #[tokio::test]
    async fn a_sign_in_carries_pkce_and_a_nonce_and_keeps_nothing_here() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let login = oidc.login().await.unwrap_or_else(|e| panic!("{e}"));
        let query: HashMap<String, String> = login.url.query_pairs().into_owned().collect();
        assert_eq!(query.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(
            query.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert_eq!(query.get("nonce"), Some(&login.pending.nonce));
        assert!(query.contains_key("code_challenge"));
        assert_eq!(query.get("state"), Some(&login.pending.state));
        assert_eq!(
            query.get("redirect_uri").map(String::as_str),
            Some("https://killswitch.example/auth/callback")
        );
        assert!(
            query
                .get("scope")
                .is_some_and(|s| s.contains("openid") && s.contains("email"))
        );
        // Ten thousand sign-ins started and never finished leave nothing behind.
        for _ in 0..10_000 {
            let _ = oidc.login().await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            oidc.completed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
        assert!(!login.pending.expired(login.pending.started + 599));
        assert!(login.pending.expired(login.pending.started + 601));
    }
}
