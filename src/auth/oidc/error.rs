//! Why single sign-on did not vouch for anyone: a sign-in that could not complete
//! ([`OidcError`]), a token that was refused ([`TokenRefusal`]) and a provider that could not
//! be used ([`ProviderError`]). The messages are what logs, audit entries and problem details
//! show; a cause already spelled out in a message is not repeated as its `source`.

use jsonwebtoken::Algorithm;
use url::Url;

use super::http::HttpError;

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
    Refused(TokenRefusal),
}

impl From<ProviderError> for OidcError {
    fn from(error: ProviderError) -> Self {
        OidcError::Unavailable(error.to_string())
    }
}

/// Why a token (a bearer JWT, or the claims of a verified ID token) names nobody killswitch
/// accepts.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("not a signed JWT: {0}")]
    NotAJwt(jsonwebtoken::errors::Error),
    /// HMAC: the "key" would be the client secret, or a public key misused as one.
    #[error("tokens signed with {0:?} are not accepted (only the provider's published keys)")]
    SharedSecretAlgorithm(Algorithm),
    /// A JWT the provider signs for another purpose (a logout token, say).
    #[error("tokens of type `{0}` are not accepted")]
    NotACredential(String),
    /// Discovery has not succeeded, so no key can vouch for the token.
    #[error("the identity provider is unavailable: {0}")]
    ProviderUnavailable(ProviderError),
    /// The token names a key not seen yet, and the key set could not be fetched again.
    #[error("{0}")]
    KeySetUnavailable(ProviderError),
    #[error("no published key matches the token (kid {})", .kid.as_deref().unwrap_or("absent"))]
    NoMatchingKey { kid: Option<String> },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    OtherIssuer,
    #[error("the token is meant for another audience")]
    OtherAudience,
    /// A claim the checks require is absent: a registered one, or the identity claim.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token is not valid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token is meant for several audiences and was issued to another party (azp)")]
    IssuedToAnotherParty,
    #[error("the token is meant for several audiences and names no authorized party (azp)")]
    NoAuthorizedParty,
    #[error("the provider has not verified the e-mail address")]
    EmailNotVerified,
    #[error(
        "the e-mail address is not verified: the token has no `email_verified` claim (for a provider that never sends it, such as Entra, set oidc.identity_claim to preferred_username)"
    )]
    EmailVerificationMissing,
}

/// Why the provider's discovery document or key set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Requests fail fast for a few seconds after a failed discovery.
    #[error("discovery failed moments ago; trying again shortly")]
    RecentlyFailed,
    /// `oidc.issuer_url` with the well-known path appended is not a URL.
    #[error("{base}: {cause}")]
    IssuerUrl {
        base: String,
        cause: url::ParseError,
    },
    #[error("cannot fetch {url}: {cause}")]
    Unreachable { url: Url, cause: reqwest::Error },
    #[error("{url} answered {status}")]
    Status {
        url: Url,
        status: reqwest::StatusCode,
    },
    #[error("cannot read {url}: {cause}")]
    Unreadable { url: Url, cause: HttpError },
    #[error("the discovery document at {url} is not valid: {cause}")]
    InvalidDiscovery { url: Url, cause: serde_json::Error },
    /// The document found under the configured issuer names another one.
    #[error("the discovery document names issuer `{issuer}`, not the configured `{base}`")]
    IssuerMismatch { issuer: String, base: String },
    #[error("the key set at {url} is not valid: {cause}")]
    InvalidKeySet { url: Url, cause: serde_json::Error },
}
