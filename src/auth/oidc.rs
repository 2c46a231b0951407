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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdTokenVerifier,
    CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::OidcSettings;
use crate::error::{Error, Result};

/// How long a started sign-in may take before its callback is refused.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;
/// After a failed discovery, requests fail fast for this long before the next attempt.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// The key set is fetched again for an unknown `kid` at most this often.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Largest discovery document, key set or token response read from the provider.
const MAX_BODY: usize = 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in could not complete.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense; nothing the user did wrong.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The `state` is unknown, expired or was already used.
    #[error("this sign-in has expired or was already used; start again")]
    UnknownState,
    /// The code could not be exchanged, or the ID token failed a check: nobody is vouched for
    /// (anyone can send a made-up code), so this is logged and counted, never audited.
    #[error("{0}")]
    Unverified(String),
    /// The provider vouched for someone (a verified ID token) whom killswitch does not accept:
    /// no verified e-mail, no identity claim, issued to another party.
    #[error("{0}")]
    Refused(String),
}

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

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider's signing keys, in the forms both JWT libraries read.
struct Keys {
    oidc: CoreJsonWebKeySet,
    jwt: Vec<(Jwk, DecodingKey)>,
}

/// What discovery found.
struct Discovered {
    metadata: CoreProviderMetadata,
    client: Client,
    keys: RwLock<Arc<Keys>>,
    /// When the key set was last fetched (or tried); serialises refetches.
    keys_fetched: tokio::sync::Mutex<Instant>,
}

impl Discovered {
    fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The configured OpenID provider.
pub struct OidcProvider {
    issuer_url: Url,
    client_id: String,
    client_secret: SecretString,
    /// Accepted `aud` values of bearer JWTs: the client id, and `oidc.audience` if set.
    audiences: Vec<String>,
    redirect_url: Url,
    session_ttl: Duration,
    http: Http,
    discovered: RwLock<Option<Arc<Discovered>>>,
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
                tracing::info!(
                    issuer = found.issuer(),
                    "single sign-on provider discovered"
                );
                *provider
                    .discovered
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(found));
            }
            Err(reason) => tracing::warn!(
                issuer = %provider.issuer_url,
                %reason,
                "single sign-on provider not reachable; will try again when it is first used"
            ),
        }
        Ok(provider)
    }

    fn new(
        settings: &OidcSettings,
        public_url: &Url,
        session_ttl: Duration,
    ) -> Result<OidcProvider> {
        let missing = |key: &str| {
            Error::Config(vec![format!(
                "{key}: required for single sign-on (oidc.issuer_url, oidc.client_id and oidc.client_secret go together)"
            )])
        };
        let issuer_url = settings
            .issuer_url
            .clone()
            .ok_or_else(|| missing("oidc.issuer_url"))?;
        let client_id = settings
            .client_id
            .clone()
            .ok_or_else(|| missing("oidc.client_id"))?;
        let client_secret = settings
            .client_secret
            .clone()
            .ok_or_else(|| missing("oidc.client_secret"))?;
        let mut audiences = vec![client_id.clone()];
        audiences.extend(
            settings
                .audience
                .iter()
                .filter(|a| **a != client_id)
                .cloned(),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("killswitch/", env!("CARGO_PKG_VERSION")))
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(OidcProvider {
            issuer_url,
            client_id,
            client_secret,
            audiences,
            redirect_url: redirect_url(public_url)?,
            session_ttl,
            http: Http(http),
            discovered: RwLock::new(None),
            discovery_failed: tokio::sync::Mutex::new(None),
            completed: Mutex::new(HashMap::new()),
            jwks_min_refresh: JWKS_MIN_REFRESH,
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
        let response = found
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| {
                OidcError::Unavailable("the provider advertises no token endpoint".to_owned())
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
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
            })?;
        self.remember_completed(pending.state);
        let id_token = response.id_token().ok_or_else(|| {
            OidcError::Unverified("the provider's token response has no ID token".to_owned())
        })?;
        let nonce = Nonce::new(pending.nonce);
        let mut keys = found.keys();
        let mut refetched = false;
        loop {
            let verifier = self.id_token_verifier(&found, &keys);
            match id_token.claims(&verifier, &nonce) {
                Ok(_) => break,
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refetched => {
                    refetched = true;
                    keys = self
                        .refresh_keys(&found)
                        .await
                        .map_err(OidcError::Unavailable)?;
                }
                Err(e) => {
                    return Err(OidcError::Unverified(format!(
                        "the ID token was refused: {e}"
                    )));
                }
            }
        }
        // Verified above; read again as plain JSON for the claims the checks below name.
        let claims = payload_claims(&id_token.to_string()).map_err(OidcError::Unverified)?;
        authorized_party(&claims, &self.client_id).map_err(OidcError::Refused)?;
        identity(&claims, &self.identity_claim).map_err(OidcError::Refused)
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

    /// The identity (see the module documentation) of a bearer JWT this provider issued for
    /// killswitch: signed by a key it publishes (the key set is fetched again, rate-limited, for
    /// an unknown `kid`), `iss` the provider, `aud` the client id or `oidc.audience` (and with
    /// several audiences, `azp` the client id), and within `exp` and `nbf` give or take a minute.
    pub async fn verify_bearer(&self, token: &str) -> Result<String, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a signed JWT: {e}"))?;
        if !asymmetric(header.alg) {
            return Err(format!(
                "tokens signed with {:?} are not accepted (only the provider's published keys)",
                header.alg
            ));
        }
        if let Some(typ) = header.typ.as_deref()
            && !["jwt", "at+jwt", "application/jwt", "application/at+jwt"]
                .contains(&typ.to_ascii_lowercase().as_str())
        {
            return Err(format!("tokens of type `{typ}` are not accepted"));
        }
        let found = self.discovered().await.map_err(|e| e.to_string())?;
        let mut keys = found.keys();
        if candidates(&keys, &header).next().is_none() {
            keys = self.refresh_keys(&found).await?;
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[found.issuer()]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut refusal = format!(
            "no published key matches the token (kid {})",
            header.kid.as_deref().unwrap_or("absent")
        );
        for key in candidates(&keys, &header) {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    authorized_party(&data.claims, &self.client_id)?;
                    return identity(&data.claims, &self.identity_claim);
                }
                // Without a `kid`, several keys may fit; try the next.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    refusal = "the signature does not verify".to_owned();
                }
                Err(e) => return Err(describe(&e)),
            }
        }
        Err(refusal)
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

    /// The discovered provider, discovering it now if that has not happened yet.
    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        let ready = || {
            self.discovered
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        if let Some(found) = ready() {
            return Ok(found);
        }
        let mut failed = self.discovery_failed.lock().await;
        if let Some(found) = ready() {
            return Ok(found);
        }
        if let Some(at) = *failed
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(OidcError::Unavailable(
                "discovery failed moments ago; trying again shortly".to_owned(),
            ));
        }
        match self.fetch_discovery().await {
            Ok(found) => {
                tracing::info!(
                    issuer = found.issuer(),
                    "single sign-on provider discovered"
                );
                let found = Arc::new(found);
                *self
                    .discovered
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(found.clone());
                *failed = None;
                Ok(found)
            }
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer_url, reason = ?reason, "single sign-on discovery failed");
                *failed = Some(Instant::now());
                Err(OidcError::Unavailable(reason))
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovered, String> {
        // The configured URL may have gained a trailing slash when parsed; the provider's own
        // spelling of its issuer is what its tokens carry, so that is what is checked later.
        let base = self.issuer_url.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| format!("{base}: {e}"))?;
        let body = self.http.get(&url).await?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| format!("the discovery document at {url} is not valid: {e}"))?;
        let issuer = metadata.issuer().as_str();
        if issuer.trim_end_matches('/') != base {
            return Err(format!(
                "the discovery document names issuer `{issuer}`, not the configured `{base}`"
            ));
        }
        let keys = fetch_keys(&self.http, metadata.jwks_uri().url()).await?;
        let methods = metadata.token_endpoint_auth_methods_supported();
        let basic = methods.is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
        let post = methods.is_some_and(|m| m.contains(&CoreClientAuthMethod::ClientSecretPost));
        let client = CoreClient::from_provider_metadata(
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
        });
        Ok(Discovered {
            metadata,
            client,
            keys: RwLock::new(Arc::new(keys)),
            keys_fetched: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    /// Fetches the key set again, unless that happened moments ago (an unknown `kid` must not
    /// let anyone make killswitch hammer the provider).
    async fn refresh_keys(&self, found: &Discovered) -> Result<Arc<Keys>, String> {
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

/// A verified token's claims, as JSON.
type Claims = serde_json::Map<String, serde_json::Value>;

/// The claims of a JWT whose signature has been verified already.
fn payload_claims(jwt: &str) -> Result<Claims, String> {
    use base64::Engine;
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| "the ID token is not a JWT".to_owned())?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the ID token's claims cannot be read".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|_| "the ID token's claims cannot be read".to_owned())
}

fn truthy(value: &serde_json::Value) -> Option<bool> {
    match value {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A token meant for several audiences must have been issued to killswitch (`azp`), or any of
/// those audiences could replay it here (OpenID Connect Core 3.1.3.7, steps 4 and 5).
fn authorized_party(claims: &Claims, client_id: &str) -> Result<(), String> {
    let several = matches!(claims.get("aud"), Some(serde_json::Value::Array(a)) if a.len() > 1);
    if !several {
        return Ok(());
    }
    match claims.get("azp").and_then(serde_json::Value::as_str) {
        Some(azp) if azp == client_id => Ok(()),
        Some(_) => Err(
            "the token is meant for several audiences and was issued to another party (azp)"
                .to_owned(),
        ),
        None => Err(
            "the token is meant for several audiences and names no authorized party (azp)"
                .to_owned(),
        ),
    }
}

/// Who a verified token names: the `identity_claim`; `email` only when `email_verified` is
/// true. Never the subject in its place. Refusal reasons do not repeat the claim's value.
fn identity(claims: &Claims, identity_claim: &str) -> Result<String, String> {
    let value = claims
        .get(identity_claim)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("the token has no `{identity_claim}` claim"))?;
    if identity_claim == "email" {
        match claims.get("email_verified").and_then(truthy) {
            Some(true) => {}
            Some(false) => {
                return Err("the provider has not verified the e-mail address".to_owned());
            }
            None => {
                return Err("the e-mail address is not verified: the token has no `email_verified` claim (for a provider that never sends it, such as Entra, set oidc.identity_claim to preferred_username)".to_owned());
            }
        }
    }
    Ok(value.to_owned())
}

fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
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

/// Published keys that may have signed a token with this header: the same `kid` (when the token
/// names one), meant for signatures, of the algorithm's key type and, if the key names an
/// algorithm, that one.
fn candidates<'k>(
    keys: &'k Keys,
    header: &'k jsonwebtoken::Header,
) -> impl Iterator<Item = &'k DecodingKey> + 'k {
    let alg = format!("{:?}", header.alg);
    keys.jwt
        .iter()
        .filter(move |(jwk, _)| {
            let kid_fits = match &header.kid {
                Some(kid) => jwk.common.key_id.as_deref() == Some(kid.as_str()),
                None => true,
            };
            let use_fits = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
            let alg_fits = jwk
                .common
                .key_algorithm
                .is_none_or(|named| named.to_string() == alg);
            let type_fits = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => alg.starts_with("RS") || alg.starts_with("PS"),
                AlgorithmParameters::EllipticCurve(_) => alg.starts_with("ES"),
                AlgorithmParameters::OctetKeyPair(_) => alg == "EdDSA",
                _ => false,
            };
            kid_fits && use_fits && alg_fits && type_fits
        })
        .map(|(_, key)| key)
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "the token was issued by another issuer".to_owned(),
        ErrorKind::InvalidAudience => "the token is meant for another audience".to_owned(),
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => format!("the token is not valid: {error}"),
    }
}

async fn fetch_keys(http: &Http, url: &Url) -> Result<Keys, String> {
    let body = http.get(url).await?;
    let oidc: CoreJsonWebKeySet = serde_json::from_slice(&body)
        .map_err(|e| format!("the key set at {url} is not valid: {e}"))?;
    let raw: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the key set at {url} is not valid: {e}"))?;
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

/// openidconnect's HTTP client trait over the project's reqwest.
struct Http(reqwest::Client);

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("{0}")]
    Http(#[from] openidconnect::http::Error),
    #[error("the response is larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl Http {
    /// GETs a JSON document; any status but 200 is an error.
    async fn get(&self, url: &Url) -> Result<Vec<u8>, String> {
        let response = self
            .0
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("{url} answered {}", response.status()));
        }
        read_capped(response)
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.0.execute(reqwest::Request::try_from(request)?).await?;
            let mut builder = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_capped(response).await?;
            Ok(builder.body(body)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const ISSUER: &str = "https://login.example.com";
    const CLIENT: &str = "killswitch";
    const PEM: &[u8] = include_bytes!("../../tests/fake-entra/fixtures/remediation-app.pem");
    const OTHER_PEM: &[u8] = include_bytes!("../../tests/fake-entra/fixtures/other-app.pem");

    /// The fixtures hold a certificate and then its key; the key block is what signs.
    fn encoding_key(pem: &[u8]) -> EncodingKey {
        let text = String::from_utf8_lossy(pem);
        let start = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
        EncodingKey::from_rsa_pem(text[start..].as_bytes()).unwrap()
    }

    fn jwk(pem: &[u8], kid: &str) -> Value {
        let jwk = Jwk::from_encoding_key(&encoding_key(pem), Algorithm::RS256)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut value = serde_json::to_value(jwk).unwrap_or_else(|e| panic!("{e}"));
        value["kid"] = json!(kid);
        value["use"] = json!("sig");
        value
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": CLIENT,
            "sub": "subject-1",
            "email": "night.shift@provider.example",
            "email_verified": true,
            "iat": now(),
            "exp": now() + 300,
        })
    }

    fn sign(claims: &Value, kid: &str, pem: &[u8]) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &encoding_key(pem)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A stand-in provider on loopback: discovery document and a key set the test can swap.
    struct Stub {
        issuer: String,
        jwks: Arc<Mutex<Value>>,
        fetches: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn stub(keys: Value) -> Stub {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let issuer = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let jwks = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let (served, counter) = (jwks.clone(), fetches.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(
                        served
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone(),
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Stub {
            issuer,
            jwks,
            fetches,
        }
    }

    fn settings(issuer: &str, audience: Option<&str>) -> OidcSettings {
        OidcSettings {
            issuer_url: Some(Url::parse(issuer).unwrap_or_else(|e| panic!("{e}"))),
            client_id: Some(CLIENT.to_owned()),
            client_secret: Some(SecretString::from("s3cret")),
            audience: audience.map(str::to_owned),
            identity_claim: "email".to_owned(),
            session_ttl: Duration::from_secs(3600),
        }
    }

    async fn provider(issuer: &str, audience: Option<&str>) -> OidcProvider {
        let public = Url::parse("https://killswitch.example").unwrap_or_else(|e| panic!("{e}"));
        OidcProvider::discover(
            &settings(issuer, audience),
            &public,
            Duration::from_secs(3600),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims_for(stub: &Stub) -> Value {
        let mut claims = claims();
        claims["iss"] = json!(stub.issuer);
        claims
    }

    #[tokio::test]
    async fn a_token_signed_by_a_published_key_yields_its_verified_email_and_never_the_subject() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let token = sign(&claims_for(&stub), "k1", PEM);
        assert_eq!(
            oidc.verify_bearer(&token).await,
            Ok("night.shift@provider.example".to_owned())
        );
        // Without an e-mail, nothing: an e-mail-shaped subject is not taken for one.
        let mut claims = claims_for(&stub);
        claims.as_object_mut().map(|c| c.remove("email"));
        claims["sub"] = json!("night.shift@provider.example");
        let refused = oidc.verify_bearer(&sign(&claims, "k1", PEM)).await;
        assert!(refused.is_err_and(|r| r.contains("`email`")));
        // Without `email_verified`, the e-mail is not taken either.
        let mut claims = claims_for(&stub);
        claims.as_object_mut().map(|c| c.remove("email_verified"));
        let refused = oidc.verify_bearer(&sign(&claims, "k1", PEM)).await;
        assert!(refused.is_err_and(|r| r.contains("not verified")));
    }

    #[tokio::test]
    async fn another_identity_claim_is_trusted_as_the_provider_sends_it() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let mut settings = settings(&stub.issuer, None);
        settings.identity_claim = "preferred_username".to_owned();
        let public = Url::parse("https://killswitch.example").unwrap_or_else(|e| panic!("{e}"));
        let oidc = OidcProvider::discover(&settings, &public, Duration::from_secs(3600))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut claims = claims_for(&stub);
        let object = claims
            .as_object_mut()
            .unwrap_or_else(|| panic!("an object"));
        object.remove("email");
        object.remove("email_verified");
        object.insert(
            "preferred_username".into(),
            json!("night.shift@provider.example"),
        );
        assert_eq!(
            oidc.verify_bearer(&sign(&claims, "k1", PEM)).await,
            Ok("night.shift@provider.example".to_owned())
        );
        object_without(&mut claims, "preferred_username");
        assert!(oidc.verify_bearer(&sign(&claims, "k1", PEM)).await.is_err());
    }

    fn object_without(claims: &mut Value, name: &str) {
        claims.as_object_mut().map(|c| c.remove(name));
    }

    #[tokio::test]
    async fn expiry_and_not_before_allow_a_minute_of_skew() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let with = |field: &str, value: i64| {
            let mut claims = claims_for(&stub);
            claims[field] = json!(value);
            sign(&claims, "k1", PEM)
        };
        assert!(oidc.verify_bearer(&with("exp", now() - 30)).await.is_ok());
        let expired = oidc.verify_bearer(&with("exp", now() - 90)).await;
        assert_eq!(expired, Err("the token has expired".to_owned()));
        assert!(oidc.verify_bearer(&with("nbf", now() + 30)).await.is_ok());
        let early = oidc.verify_bearer(&with("nbf", now() + 90)).await;
        assert_eq!(early, Err("the token is not valid yet (nbf)".to_owned()));
    }

    #[tokio::test]
    async fn issuer_audience_and_required_claims_are_checked() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, Some("api://killswitch")).await;
        let with = |field: &str, value: Value| {
            let mut claims = claims_for(&stub);
            claims[field] = value;
            sign(&claims, "k1", PEM)
        };
        let refused = |r: Result<String, String>| r.err().unwrap_or_default();
        assert!(refused(oidc.verify_bearer(&with("iss", json!(ISSUER))).await).contains("issuer"));
        assert!(
            refused(oidc.verify_bearer(&with("aud", json!("other-app"))).await)
                .contains("audience")
        );
        // Several audiences: only when killswitch is the authorized party.
        let refused_azp = |r: Result<String, String>| r.is_err_and(|e| e.contains("azp"));
        assert!(refused_azp(
            oidc.verify_bearer(&with("aud", json!(["other-app", CLIENT])))
                .await
        ));
        let mut several = claims_for(&stub);
        several["aud"] = json!(["other-app", CLIENT]);
        several["azp"] = json!("other-app");
        assert!(refused_azp(
            oidc.verify_bearer(&sign(&several, "k1", PEM)).await
        ));
        several["azp"] = json!(CLIENT);
        assert!(oidc.verify_bearer(&sign(&several, "k1", PEM)).await.is_ok());
        assert!(
            oidc.verify_bearer(&with("aud", json!("api://killswitch")))
                .await
                .is_ok()
        );
        let mut no_exp = claims_for(&stub);
        no_exp.as_object_mut().map(|c| c.remove("exp"));
        assert!(refused(oidc.verify_bearer(&sign(&no_exp, "k1", PEM)).await).contains("exp"));
        let unverified = oidc
            .verify_bearer(&with("email_verified", json!(false)))
            .await;
        assert!(refused(unverified).contains("not verified"));
        assert!(
            oidc.verify_bearer(&with("email_verified", json!("true")))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn forged_tampered_unsigned_and_hmac_tokens_are_refused() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let claims = claims_for(&stub);
        let refused = |r: Result<String, String>| r.err().unwrap_or_default();

        // Signed with a key the provider does not publish, under a published kid.
        let forged = sign(&claims, "k1", OTHER_PEM);
        assert!(refused(oidc.verify_bearer(&forged).await).contains("signature"));

        // One character of the signature changed.
        let good = sign(&claims, "k1", PEM);
        let (head, signature) = good.rsplit_once('.').unwrap_or_default();
        let mut bytes = signature.as_bytes().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{}", String::from_utf8(bytes).unwrap_or_default());
        assert!(oidc.verify_bearer(&tampered).await.is_err());

        // The payload changed under the original signature.
        let (_, payload, _) = {
            let mut parts = good.split('.');
            (parts.next(), parts.next(), parts.next())
        };
        let mut other = claims.clone();
        other["email"] = json!("admin@provider.example");
        let forged_payload = sign(&other, "k1", PEM);
        let swapped = good.replace(
            payload.unwrap_or_default(),
            forged_payload.split('.').nth(1).unwrap_or_default(),
        );
        assert!(refused(oidc.verify_bearer(&swapped).await).contains("signature"));

        // alg: none, with and without a signature.
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert!(oidc.verify_bearer(&none).await.is_err());

        // HMAC, even with the client secret as the key.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".to_owned());
        let hmac = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s3cret"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(refused(oidc.verify_bearer(&hmac).await).contains("not accepted"));

        // Not a JWT at all, and a JWT of a type meant for something else.
        assert!(oidc.verify_bearer("not-a-jwt").await.is_err());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".to_owned());
        header.typ = Some("logout+jwt".to_owned());
        let logout = jsonwebtoken::encode(&header, &claims, &encoding_key(PEM))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(refused(oidc.verify_bearer(&logout).await).contains("type"));
    }

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
        assert!(refused.is_err_and(|reason| reason.contains("unavailable")));
        assert!(matches!(oidc.login().await, Err(OidcError::Unavailable(_))));
    }

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

    #[test]
    fn the_identity_is_the_configured_claim_and_a_verified_email_at_that() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let verified = claims(json!({"sub": "s", "email": "a@b.example", "email_verified": true}));
        assert_eq!(identity(&verified, "email"), Ok("a@b.example".to_owned()));
        for unverified in [
            json!({"sub": "s", "email": "a@b.example", "email_verified": false}),
            json!({"sub": "s", "email": "a@b.example"}),
            json!({"sub": "a@b.example"}),
        ] {
            assert!(identity(&claims(unverified), "email").is_err());
        }
        let entra = claims(json!({"sub": "s", "preferred_username": "a@b.example"}));
        assert_eq!(
            identity(&entra, "preferred_username"),
            Ok("a@b.example".to_owned())
        );
        let several = |azp: Option<&str>| {
            let mut c = claims(json!({"aud": ["killswitch", "other"]}));
            if let Some(azp) = azp {
                c.insert("azp".into(), json!(azp));
            }
            authorized_party(&c, "killswitch")
        };
        assert!(several(None).is_err());
        assert!(several(Some("other")).is_err());
        assert!(several(Some("killswitch")).is_ok());
        assert!(
            authorized_party(
                &claims(json!({"aud": "killswitch", "azp": "cli"})),
                "killswitch"
            )
            .is_ok()
        );
    }

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
