//! Establishing who calls: the `Authorization: Bearer` credential (an API token, or a JWT from
//! the configured OpenID provider) or the console session cookie, resolved to an active analyst.
//!
//! A refusal is logged and counted (per client address and per credential, see `limiter`). It
//! is recorded in the audit log only when it can be attributed: a disabled analyst's credential,
//! or someone the OpenID provider vouched for who is not an active analyst. Then it goes to the
//! system chain and, for a request aimed at a customer's account, to that customer's chain. A
//! credential nobody can be tied to never writes history (invariant 9).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::AppState;
use super::caller::{CSRF_HEADER, Caller, ConsoleSession, SESSION_COOKIE, cookie, unauthenticated};
use super::limiter::FailureKey;
use super::problem::{Problem, ProblemKind};
use crate::audit::AuditEvent;
use crate::audit::event::{Actor, AuthMethod, RequestContext};
use crate::auth::analysts::{AnalystRecord, normalize_email};
use crate::domain::CustomerSlug;
use crate::store::refusal_chains;

/// What a request presented to prove who sends it.
enum Presented<'a> {
    Nothing,
    Bearer(&'a str),
    Session(&'a str),
}

fn presented(parts: &Parts) -> Presented<'_> {
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (bearer, cookie(&parts.headers, SESSION_COOKIE)) {
        (Some(token), _) => Presented::Bearer(token),
        (None, Some(session)) => Presented::Session(session),
        (None, None) => Presented::Nothing,
    }
}

/// What a presented bearer credential turned out to be.
enum Resolved {
    Active(Box<AnalystRecord>, AuthMethod),
    /// Attributable and refused: a disabled analyst's credential, or someone the provider
    /// vouched for who is not an active analyst. The reason is validated text.
    Refused {
        analyst: Option<Uuid>,
        reason: String,
    },
    /// Nobody's: unknown, expired, revoked or forged. The reason may echo the request, so it is
    /// only logged (with Debug formatting).
    Unknown(String),
}

/// Where a request came from, for audit entries: the client address (behind trusted proxies,
/// the one they name), the request id (already checked by the request-id middleware) and the
/// user agent, one clean line of at most 200 characters.
pub fn request_context(parts: &Parts, client: Option<IpAddr>) -> RequestContext {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestContext {
        request_id: header(super::REQUEST_ID.as_str()),
        client_ip: client.map(|ip| ip.to_string()),
        user_agent: header(USER_AGENT.as_str()).map(|ua| crate::domain::clean_line(&ua, 200)),
    }
}

fn too_many_failures(secs: u64) -> Problem {
    Problem::of(ProblemKind::TooManyFailures)
    .detail("too many failed authentications from this client or with this credential; wait before trying again")
    .retry_after(secs)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Problem> {
        let client = super::client::client_ip(parts, &state.settings.server.trusted_proxies);
        let context = request_context(parts, client);
        let token = match presented(parts) {
            Presented::Nothing => {
                if let Some(secs) = client_blocked(state, client) {
                    return Err(too_many_failures(secs));
                }
                return Err(unauthenticated(
                    "send `Authorization: Bearer <API token or single sign-on token>`",
                ));
            }
            Presented::Session(value) => {
                return from_session(parts, state, value, context, client).await;
            }
            Presented::Bearer(token) => token,
        };
        let credential = FailureKey::credential(token);
        let (reason, analyst, attributable) = match resolve(state, token).await? {
            Resolved::Active(record, method) => {
                if let Some(secs) = state.failures.blocked(credential) {
                    return Err(too_many_failures(secs));
                }
                return Ok(Caller {
                    analyst: record.analyst().map_err(|e| Problem::from(&e))?,
                    record: *record,
                    method,
                    context,
                    client,
                    credential,
                    session: None,
                });
            }
            Resolved::Refused { analyst, reason } => (reason, analyst, true),
            Resolved::Unknown(reason) => (reason, None, false),
        };
        if let Some(secs) = client_blocked(state, client).or(state.failures.blocked(credential)) {
            return Err(too_many_failures(secs));
        }
        count_failure(
            state,
            client,
            credential,
            if attributable { "refused" } else { "unknown" },
        );
        tracing::info!(reason = ?reason, client = ?client, "bearer credential refused");
        if attributable {
            let event = AuditEvent::AuthenticationFailed {
                analyst_id: analyst,
                reason,
                request: Some(context.clone()),
            };
            record_refusal(state, parts, &context, &event).await;
        }
        Err(unauthenticated("the token is unknown, expired or revoked"))
    }
}

fn client_blocked(state: &AppState, client: Option<IpAddr>) -> Option<u64> {
    client.and_then(|ip| state.failures.blocked(FailureKey::Client(ip)))
}

fn count_failure(
    state: &AppState,
    client: Option<IpAddr>,
    credential: FailureKey,
    kind: &'static str,
) {
    metrics::counter!("killswitch_authentication_failures_total", "kind" => kind).increment(1);
    if let Some(ip) = client {
        state.failures.record_failure(FailureKey::Client(ip));
    }
    state.failures.record_failure(credential);
}

/// Resolves a bearer credential; `Err` only when the store cannot answer.
async fn resolve(state: &AppState, token: &str) -> Result<Resolved, Problem> {
    if crate::auth::tokens::looks_like_api_token(token) {
        return Ok(
            match state
                .auth
                .by_token(token)
                .await
                .map_err(|e| Problem::from(&e))?
            {
                Some(record) if record.is_active() => {
                    Resolved::Active(Box::new(record), AuthMethod::ApiToken)
                }
                Some(record) => Resolved::Refused {
                    analyst: Uuid::parse_str(&record.id).ok(),
                    reason: "API token of a disabled analyst".to_owned(),
                },
                None => Resolved::Unknown("unknown, expired or revoked API token".to_owned()),
            },
        );
    }
    let Some(oidc) = &state.oidc else {
        return Ok(Resolved::Unknown(
            "not an API token, and single sign-on is off".to_owned(),
        ));
    };
    let identity = match oidc.verify_bearer(token).await {
        Ok(identity) => identity,
        Err(reason) => return Ok(Resolved::Unknown(format!("bearer JWT refused: {reason}"))),
    };
    Ok(
        match state
            .auth
            .by_email(&identity)
            .await
            .map_err(|e| Problem::from(&e))?
        {
            Some(record) if record.is_active() => {
                Resolved::Active(Box::new(record), AuthMethod::Oidc)
            }
            found => Resolved::Refused {
                analyst: found.and_then(|r| Uuid::parse_str(&r.id).ok()),
                reason: format!(
                    "single sign-on token for an unknown or disabled analyst: {}",
                    shown_identity(&identity)
                ),
            },
        },
    )
}

/// An identity the provider vouched for, as it may appear in an audit entry: an e-mail address
/// (validated, so bounded and one line), or a placeholder.
pub fn shown_identity(identity: &str) -> String {
    normalize_email(identity)
        .unwrap_or_else(|_| "an identity that is not an e-mail address".to_owned())
}

/// The customer a request is aimed at, when its path names one that exists.
async fn target_customer(state: &AppState, parts: &Parts) -> Option<CustomerSlug> {
    // The API's paths and the console's name the customer the same way.
    let path = parts.uri.path();
    let rest = path
        .strip_prefix("/api/v1/customers/")
        .or_else(|| path.strip_prefix("/customers/"))?;
    let slug: CustomerSlug = rest.split('/').next()?.parse().ok()?;
    match state.store.customer(&slug).await {
        Ok(Some(_)) => Some(slug),
        _ => None,
    }
}

/// Appends an attributable refusal to the system chain and the targeted customer's.
async fn record_refusal(
    state: &AppState,
    parts: &Parts,
    context: &RequestContext,
    event: &AuditEvent,
) {
    let actor = Actor::Unauthenticated {
        client_ip: context.client_ip.clone(),
    };
    let customer = target_customer(state, parts).await;
    for chain in refusal_chains(customer.as_ref()) {
        if let Err(e) = state.store.append(&chain, &actor, event).await {
            tracing::error!(error = %e, chain = %chain, "cannot record a refused authentication");
        }
    }
}

/// The analyst of a console session; a state-changing request must also carry the session's
/// CSRF token in a header, which a cross-site form cannot set.
async fn from_session(
    parts: &Parts,
    state: &AppState,
    value: &str,
    context: RequestContext,
    client: Option<IpAddr>,
) -> Result<Caller, Problem> {
    let credential = FailureKey::credential(value);
    let expired = || unauthenticated("the session has ended; sign in again at /login");
    let now = crate::time::Timestamp::now();
    let session = state
        .store
        .session(&crate::auth::tokens::hash(value), now)
        .await
        .map_err(|e| Problem::from(&e))?;
    let record = match &session {
        Some(session) => match Uuid::parse_str(&session.analyst_id) {
            Ok(id) => state
                .store
                .analyst(id)
                .await
                .map_err(|e| Problem::from(&e))?,
            Err(_) => None,
        },
        None => None,
    };
    // An ended session is what every browser sends the morning after: it counts against that
    // cookie only, never against the address others share.
    if let Some(secs) = state.failures.blocked(credential) {
        return Err(too_many_failures(secs));
    }
    let (Some(session), Some(record)) = (session, record) else {
        count_failure(state, None, credential, "session");
        return Err(expired());
    };
    if !record.is_active() {
        count_failure(state, None, credential, "refused");
        let event = AuditEvent::AuthenticationFailed {
            analyst_id: Uuid::parse_str(&record.id).ok(),
            reason: "console session of a disabled analyst".to_owned(),
            request: Some(context.clone()),
        };
        record_refusal(state, parts, &context, &event).await;
        return Err(expired());
    }
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
            return Err(Problem::of(ProblemKind::Csrf).detail(
                "requests made with the console session must carry the X-CSRF-Token header",
            ));
        }
    }
    Ok(Caller {
        analyst: record.analyst().map_err(|e| Problem::from(&e))?,
        record,
        method: session.method(),
        context,
        client,
        credential,
        session: Some(ConsoleSession {
            expires_at: session.expires_at.parse().map_err(|e| {
                Problem::from(&crate::error::Error::Internal(format!(
                    "stored session: {e}"
                )))
            })?,
            csrf_token: session.csrf_token,
        }),
    })
}
