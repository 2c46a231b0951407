//! Who is calling (an active analyst, established by `authn`), what they may do, and the
//! second factor: the `X-Killswitch-OTP` code every state-changing request needs.

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::AppState;
use super::limiter::FailureKey;
use super::problem::{Problem, ProblemKind};
use crate::audit::event::{Actor, AuthMethod, MfaEvidence, RequestContext};
use crate::auth::analysts::{AnalystRecord, OtpFailure};
use crate::auth::gate::OtpAttempt;
use crate::auth::{Analyst, Permission};
use crate::domain::CustomerSlug;

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
#[derive(Clone)]
pub struct Caller {
    pub analyst: Analyst,
    pub record: AnalystRecord,
    pub method: AuthMethod,
    pub context: RequestContext,
    pub client: Option<IpAddr>,
    /// What this caller's failures (wrong or reused codes) count against: the credential it
    /// presented, so one analyst's mistakes never slow another down.
    pub credential: FailureKey,
    /// The console session the request came with; `None` for a bearer credential.
    pub session: Option<ConsoleSession>,
}

/// What a console page needs of its session: the CSRF token its forms carry, and when it ends
/// (shown on every page, so nobody is surprised mid-action).
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub csrf_token: String,
    pub expires_at: crate::time::Timestamp,
}

pub fn unauthenticated(detail: &str) -> Problem {
    Problem::of(ProblemKind::Unauthenticated).detail(detail)
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Analyst {
            id: self.analyst.id,
            email: self.analyst.email.clone(),
            auth: self.method,
            client_ip: self.client.map(|ip| ip.to_string()),
        }
    }

    /// 403 unless the analyst's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), Problem> {
        if self.analyst.role.allows(permission) {
            return Ok(());
        }
        Err(Problem::of(ProblemKind::Forbidden).detail(format!(
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
        match asked {
            Some(slug) => {
                let slug: CustomerSlug = slug.parse().map_err(Problem::invalid_input)?;
                self.require_customer(&slug)?;
                Ok(Some(vec![slug]))
            }
            None => Ok(self.analyst.customers.slugs()),
        }
    }

    /// 403 unless the customer is in the analyst's scope.
    pub fn require_customer(&self, customer: &CustomerSlug) -> Result<(), Problem> {
        if self.analyst.customers.covers(customer) {
            return Ok(());
        }
        Err(Problem::of(ProblemKind::OutOfScope)
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
        let actor = self.actor();
        let attempt = OtpAttempt {
            actor: &actor,
            request: Some(&self.context),
            customer,
        };
        let Some(code) = headers
            .get(OTP_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.trim().is_empty())
        else {
            // The caller passed the first factor, so the refusal is theirs to see (and the
            // customer's, when aimed at one). A missing code is no guess: it locks nobody out,
            // but counts against the credential like any refusal, so history cannot be flooded.
            state.failures.record_failure(self.credential);
            state
                .auth
                .audit_refusal(self.analyst.id, "one-time code refused: missing", &attempt)
                .await
                .map_err(|e| Problem::from(&e))?;
            return Err(Problem::of(ProblemKind::OtpRequired).detail(
                "send the current code from your authenticator app in the X-Killswitch-OTP header",
            ));
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
        state.failures.record_failure(self.credential);
        Err(match failure {
            OtpFailure::Wrong { .. } => Problem::of(ProblemKind::OtpInvalid).detail(
                "the code does not match; use the current code from your authenticator app",
            ),
            OtpFailure::Reused => Problem::of(ProblemKind::OtpReused)
                .detail("each code is good for one action; wait for the next code"),
            OtpFailure::Locked { until } => {
                let secs = (until.as_datetime() - chrono::Utc::now())
                    .num_seconds()
                    .max(1) as u64;
                Problem::of(ProblemKind::Locked)
                    .detail(format!("too many wrong one-time codes; try again after {until} or ask an admin to reset your MFA"))
                    .retry_after(secs)
            }
        })
    }
}
