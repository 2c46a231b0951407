//! Who is calling: the `Authorization: Bearer` token (an API token, or a JWT from the
//! configured OpenID provider) resolved to an active analyst, plus where the request came from.
//! And the second factor: the `X-Killswitch-OTP` code every state-changing action needs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;
use super::problem::Problem;
use crate::audit::AuditEvent;
use crate::audit::event::{Actor, AuthMethod, MfaEvidence, RequestContext};
use crate::auth::analysts::{AnalystRecord, OtpFailure};
use crate::auth::gate::OtpAttempt;
use crate::auth::{Analyst, Permission};
use crate::domain::{ChainId, CustomerSlug};

pub const OTP_HEADER: &str = "x-killswitch-otp";
/// The console's session cookie (set after single sign-on; HttpOnly, SameSite=Lax).
pub const SESSION_COOKIE: &str = "ks_session";
/// State-changing requests made with the session cookie must echo the session's CSRF token here.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// An authenticated analyst and the request's context.
pub struct Caller {
    pub analyst: Analyst,
    pub record: AnalystRecord,
    pub method: AuthMethod,
    pub context: RequestContext,
    pub client: Option<IpAddr>,
}

pub fn unauthenticated(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
    )
    .detail(detail)
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Analyst {
            id: self.analyst.id,
            email: self.analyst.email.clone(),
            auth: self.method,
        }
    }

    /// 403 unless the analyst's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), Problem> {
        if self.analyst.role.allows(permission) {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed for this role",
        )
        .detail(format!(
            "the {} role may not {}",
            self.analyst.role,
            permission.describe()
        )))
    }

    /// Whether the stored customer slug `customer` is in the analyst's scope; a record of any
    /// other customer is reported as absent, not forbidden (its existence is that customer's
    /// information).
    pub fn sees(&self, customer: &str) -> bool {
        customer
            .parse::<CustomerSlug>()
            .is_ok_and(|c| self.analyst.customers.covers(&c))
    }

    /// The customers a list may show: the one asked for (403 outside the scope), else the
    /// whole scope (`None`: every customer).
    pub fn customer_filter(
        &self,
        asked: Option<&str>,
    ) -> Result<Option<Vec<CustomerSlug>>, Problem> {
        match (asked, &self.analyst.customers) {
            (Some(slug), _) => {
                let slug: CustomerSlug = slug.parse().map_err(Problem::invalid_input)?;
                self.require_customer(&slug)?;
                Ok(Some(vec![slug]))
            }
            (None, crate::auth::Scope::All) => Ok(None),
            (None, crate::auth::Scope::Customers(set)) => Ok(Some(set.iter().cloned().collect())),
        }
    }

    /// 403 unless the customer is in the analyst's scope.
    pub fn require_customer(&self, customer: &CustomerSlug) -> Result<(), Problem> {
        if self.analyst.customers.covers(customer) {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "out-of-scope",
            "Customer out of scope",
        )
        .detail(format!("you are not assigned to customer `{customer}`")))
    }

    /// Checks and consumes the `X-Killswitch-OTP` code for a change to `customer` (or to the
    /// service itself); every refusal is a 401 with its own type, recorded in the system chain
    /// and in that customer's.
    pub async fn second_factor(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        customer: Option<&CustomerSlug>,
    ) -> Result<MfaEvidence, Problem> {
        let Some(code) = headers
            .get(OTP_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.trim().is_empty())
        else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "otp-required",
                "One-time code required",
            )
            .detail(
                "send the current code from your authenticator app in the X-Killswitch-OTP header",
            ));
        };
        let actor = self.actor();
        let attempt = OtpAttempt {
            actor: &actor,
            request: Some(&self.context),
            customer,
        };
        let verdict = state
            .auth
            .verify_otp(&self.record, code, &attempt)
            .await
            .map_err(|e| Problem::from(&e))?;
        let failure = match verdict {
            Ok(evidence) => return Ok(evidence),
            Err(failure) => failure,
        };
        if let Some(ip) = self.client {
            state.failures.record_failure(ip);
        }
        Err(match failure {
            OtpFailure::Wrong { .. } => Problem::new(
                StatusCode::UNAUTHORIZED,
                "otp-invalid",
                "Wrong one-time code",
            )
            .detail("the code does not match; use the current code from your authenticator app"),
            OtpFailure::Reused => Problem::new(
                StatusCode::UNAUTHORIZED,
                "otp-reused",
                "One-time code already used",
            )
            .detail("each code is good for one action; wait for the next code"),
            OtpFailure::Locked { until } => {
                let secs = (until.as_datetime() - chrono::Utc::now())
                    .num_seconds()
                    .max(1) as u64;
                Problem::new(StatusCode::UNAUTHORIZED, "locked", "Locked out after repeated wrong codes")
                    .detail(format!("too many wrong one-time codes; try again after {until} or ask an admin to reset your MFA"))
                    .retry_after(secs)
            }
        })
    }
}

fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn context(parts: &Parts, client: Option<IpAddr>) -> RequestContext {
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
        user_agent: header(USER_AGENT.as_str()).map(|ua| ua.chars().take(200).collect()),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Problem> {
        let client = client_ip(parts);
        if let Some(secs) = client.and_then(|ip| state.failures.blocked(ip)) {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "Too many failed authentications",
            )
            .detail("this client failed to authenticate too often; wait before trying again")
            .retry_after(secs));
        }
        let context = context(parts, client);
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            if let Some(session) = cookie(&parts.headers, SESSION_COOKIE) {
                return from_session(parts, state, session, context, client).await;
            }
            return Err(unauthenticated(
                "send `Authorization: Bearer <API token or single sign-on token>`",
            ));
        };
        let found = if crate::auth::tokens::looks_like_api_token(token) {
            state
                .auth
                .by_token(token)
                .await
                .map_err(|e| Problem::from(&e))?
                .map(|r| (r, AuthMethod::ApiToken))
        } else if let Some(oidc) = &state.oidc {
            match oidc.verify_bearer(token).await {
                Ok(email) => state
                    .auth
                    .by_email(&email)
                    .await
                    .map_err(|e| Problem::from(&e))?
                    .map(|r| (r, AuthMethod::Oidc)),
                Err(reason) => {
                    tracing::info!(%reason, "bearer JWT refused");
                    None
                }
            }
        } else {
            None
        };
        let Some((record, method)) = found else {
            if let Some(ip) = client {
                state.failures.record_failure(ip);
            }
            let event = AuditEvent::AuthenticationFailed {
                analyst_id: None,
                reason: "unknown, expired or revoked bearer token".to_owned(),
                request: Some(context.clone()),
            };
            let actor = Actor::Unauthenticated {
                client_ip: context.client_ip.clone(),
            };
            if let Err(e) = state.store.append(&ChainId::System, &actor, &event).await {
                tracing::error!(error = %e, "cannot record a failed authentication");
            }
            return Err(unauthenticated("the token is unknown, expired or revoked"));
        };
        let analyst = record.analyst().map_err(|e| Problem::from(&e))?;
        Ok(Caller {
            analyst,
            record,
            method,
            context,
            client,
        })
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
    use subtle::ConstantTimeEq;
    let expired = || unauthenticated("the session has ended; sign in again at /login");
    let now = crate::time::Timestamp::now();
    let session = state
        .store
        .session(&crate::auth::tokens::hash(value), now)
        .await
        .map_err(|e| Problem::from(&e))?
        .ok_or_else(expired)?;
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
            return Err(
                Problem::new(StatusCode::FORBIDDEN, "csrf", "Missing or wrong CSRF token").detail(
                    "requests made with the console session must carry the X-CSRF-Token header",
                ),
            );
        }
    }
    let id = uuid::Uuid::parse_str(&session.analyst_id).map_err(|_| expired())?;
    let record = state
        .store
        .analyst(id)
        .await
        .map_err(|e| Problem::from(&e))?
        .filter(|r| r.status == "active")
        .ok_or_else(expired)?;
    Ok(Caller {
        analyst: record.analyst().map_err(|e| Problem::from(&e))?,
        record,
        method: AuthMethod::Oidc,
        context,
        client,
    })
}
