//! RFC 9457 problem details: every error the API answers is `application/problem+json` with a
//! stable `type` clients can branch on.

use axum::body::to_bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Every problem the service answers: its stable `type` slug, usual status and title. Handlers,
/// the console and the README name problems from here, never as loose strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Unauthenticated,
    OtpRequired,
    OtpInvalid,
    OtpReused,
    Locked,
    Forbidden,
    OutOfScope,
    Csrf,
    CustomerNotFound,
    AccountNotFound,
    NotFound,
    ProtectedAccount,
    IdempotencyConflict,
    DetectionDecided,
    Conflict,
    RateLimited,
    TooManyFailures,
    GraphRefused,
    Upstream,
    AuditUnavailable,
    RemediationUnavailable,
    InvalidInput,
    InvalidBody,
    InvalidDetection,
    WebhookRejected,
    BadRequest,
    BodyTooLarge,
    MethodNotAllowed,
    Timeout,
    UnsupportedMediaType,
    Internal,
}

/// One row of the problem table.
#[derive(Debug, Clone, Copy)]
pub struct ProblemType {
    pub kind: ProblemKind,
    /// The stable `type` slug, `/problems/<slug>`.
    pub slug: &'static str,
    /// The status it usually comes with.
    pub status: StatusCode,
    pub title: &'static str,
}

impl ProblemType {
    const fn new(
        kind: ProblemKind,
        slug: &'static str,
        status: StatusCode,
        title: &'static str,
    ) -> Self {
        ProblemType {
            kind,
            slug,
            status,
            title,
        }
    }
}

/// Every problem type, in the order of [`ProblemKind`]'s variants (a test holds them so).
pub const PROBLEM_TYPES: [ProblemType; 31] = [
    ProblemType::new(
        ProblemKind::Unauthenticated,
        "unauthenticated",
        StatusCode::UNAUTHORIZED,
        "Authentication required",
    ),
    ProblemType::new(
        ProblemKind::OtpRequired,
        "otp-required",
        StatusCode::UNAUTHORIZED,
        "One-time code required",
    ),
    ProblemType::new(
        ProblemKind::OtpInvalid,
        "otp-invalid",
        StatusCode::UNAUTHORIZED,
        "Wrong one-time code",
    ),
    ProblemType::new(
        ProblemKind::OtpReused,
        "otp-reused",
        StatusCode::UNAUTHORIZED,
        "One-time code already used",
    ),
    ProblemType::new(
        ProblemKind::Locked,
        "locked",
        StatusCode::UNAUTHORIZED,
        "Locked out after repeated wrong codes",
    ),
    ProblemType::new(
        ProblemKind::Forbidden,
        "forbidden",
        StatusCode::FORBIDDEN,
        "Not allowed for this role",
    ),
    ProblemType::new(
        ProblemKind::OutOfScope,
        "out-of-scope",
        StatusCode::FORBIDDEN,
        "Customer out of scope",
    ),
    ProblemType::new(
        ProblemKind::Csrf,
        "csrf",
        StatusCode::FORBIDDEN,
        "Missing or wrong CSRF token",
    ),
    ProblemType::new(
        ProblemKind::CustomerNotFound,
        "customer-not-found",
        StatusCode::NOT_FOUND,
        "Unknown customer",
    ),
    ProblemType::new(
        ProblemKind::AccountNotFound,
        "account-not-found",
        StatusCode::NOT_FOUND,
        "Unknown account",
    ),
    ProblemType::new(
        ProblemKind::NotFound,
        "not-found",
        StatusCode::NOT_FOUND,
        "Not found",
    ),
    ProblemType::new(
        ProblemKind::ProtectedAccount,
        "protected-account",
        StatusCode::CONFLICT,
        "Protected account",
    ),
    ProblemType::new(
        ProblemKind::IdempotencyConflict,
        "idempotency-conflict",
        StatusCode::CONFLICT,
        "Idempotency-Key reused",
    ),
    ProblemType::new(
        ProblemKind::DetectionDecided,
        "detection-decided",
        StatusCode::CONFLICT,
        "Detection already decided",
    ),
    ProblemType::new(
        ProblemKind::Conflict,
        "conflict",
        StatusCode::CONFLICT,
        "Conflict",
    ),
    ProblemType::new(
        ProblemKind::RateLimited,
        "rate-limited",
        StatusCode::TOO_MANY_REQUESTS,
        "Customer's hourly limit reached",
    ),
    ProblemType::new(
        ProblemKind::TooManyFailures,
        "too-many-failures",
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed authentications",
    ),
    ProblemType::new(
        ProblemKind::GraphRefused,
        "graph-refused",
        StatusCode::BAD_GATEWAY,
        "Microsoft Graph refused or failed",
    ),
    ProblemType::new(
        ProblemKind::Upstream,
        "upstream",
        StatusCode::BAD_GATEWAY,
        "Microsoft Entra failed",
    ),
    ProblemType::new(
        ProblemKind::AuditUnavailable,
        "audit-unavailable",
        StatusCode::SERVICE_UNAVAILABLE,
        "Audit log unavailable",
    ),
    ProblemType::new(
        ProblemKind::RemediationUnavailable,
        "remediation-unavailable",
        StatusCode::SERVICE_UNAVAILABLE,
        "Remediation is not configured",
    ),
    ProblemType::new(
        ProblemKind::InvalidInput,
        "invalid-input",
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid input",
    ),
    ProblemType::new(
        ProblemKind::InvalidBody,
        "invalid-body",
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid request body",
    ),
    ProblemType::new(
        ProblemKind::InvalidDetection,
        "invalid-detection",
        StatusCode::UNPROCESSABLE_ENTITY,
        "Not a detection in the documented template",
    ),
    ProblemType::new(
        ProblemKind::WebhookRejected,
        "webhook-rejected",
        StatusCode::UNAUTHORIZED,
        "Webhook rejected",
    ),
    ProblemType::new(
        ProblemKind::BadRequest,
        "bad-request",
        StatusCode::BAD_REQUEST,
        "Bad request",
    ),
    ProblemType::new(
        ProblemKind::BodyTooLarge,
        "body-too-large",
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request body too large",
    ),
    ProblemType::new(
        ProblemKind::MethodNotAllowed,
        "method-not-allowed",
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    ),
    ProblemType::new(
        ProblemKind::Timeout,
        "timeout",
        StatusCode::REQUEST_TIMEOUT,
        "Request timed out",
    ),
    ProblemType::new(
        ProblemKind::UnsupportedMediaType,
        "unsupported-media-type",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported media type",
    ),
    ProblemType::new(
        ProblemKind::Internal,
        "internal",
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
    ),
];

impl ProblemKind {
    /// Every kind, in table order.
    pub fn all() -> impl Iterator<Item = ProblemKind> {
        PROBLEM_TYPES.iter().map(|row| row.kind)
    }

    pub fn row(self) -> &'static ProblemType {
        &PROBLEM_TYPES[self as usize]
    }

    /// The slug, the status it usually comes with, and the title.
    pub fn describe(self) -> (&'static str, StatusCode, &'static str) {
        let row = self.row();
        (row.slug, row.status, row.title)
    }

    pub fn slug(self) -> &'static str {
        self.row().slug
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier of the problem type, `/problems/<name>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (RFC 9457 §3.2), such as the `action` a failure belongs to.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    /// Sent as `Retry-After` (seconds) on 429 and on lockouts.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with its usual status; the `type` member is `/problems/{slug}`.
    pub fn of(kind: ProblemKind) -> Problem {
        let (slug, status, title) = kind.describe();
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
            retry_after: None,
        }
    }

    /// The same problem answered with another status (an invalid body is 400, 415 or 422).
    pub fn status(mut self, status: StatusCode) -> Problem {
        self.status = status.as_u16();
        self
    }

    pub fn with(mut self, name: &str, value: impl Serialize) -> Problem {
        self.extensions.insert(
            name.to_owned(),
            serde_json::to_value(value).unwrap_or_default(),
        );
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn not_found() -> Problem {
        Problem::of(ProblemKind::NotFound)
    }

    /// 422: a value in the request is not acceptable; the detail says which and why.
    pub fn invalid_input(detail: impl std::fmt::Display) -> Problem {
        Problem::of(ProblemKind::InvalidInput).detail(detail.to_string())
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Problem {
        Problem::from(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<&Error> for Problem {
    /// The answer for an error. The cause of a 5xx is logged here, once, inside the request's
    /// span (which carries its request id); the client gets an opaque answer.
    fn from(error: &Error) -> Problem {
        let problem = match error {
            Error::InvalidInput(msg) => Problem::invalid_input(msg),
            Error::NotFound(what) => Problem::not_found().detail(format!("{what} not found")),
            Error::Conflict(msg) => Problem::of(ProblemKind::Conflict).detail(msg),
            Error::DetectionDecided(state) => Problem::of(ProblemKind::DetectionDecided)
                .detail(error.to_string())
                .with("state", state.as_str()),
            Error::AuditUnavailable(_)
            | Error::DatabaseUnavailable(_)
            | Error::SchemaBehind { .. } => Problem::of(ProblemKind::AuditUnavailable)
                .detail("the audit log cannot be written, so nothing was done"),
            Error::Upstream(msg) => Problem::of(ProblemKind::Upstream).detail(msg),
            _ => Problem::of(ProblemKind::Internal),
        };
        if problem.status >= 500 {
            tracing::error!(error = %error, status = problem.status, "request failed");
        }
        problem
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(&self).into_response()
    }
}

/// Turns error responses produced outside our handlers (body limit, timeout, axum's extractor
/// rejections, unknown methods) into problem+json, keeping a short plain-text reason as detail.
pub async fn normalize(response: Response) -> Response {
    let status = response.status();
    // Only bodies nobody shaped on purpose: none at all, or plain text from a library.
    let unshaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !unshaped {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty() && !t.contains('<'));
    let kind = match status {
        StatusCode::NOT_FOUND => ProblemKind::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::BodyTooLarge,
        StatusCode::REQUEST_TIMEOUT => ProblemKind::Timeout,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
        s if s.is_server_error() => ProblemKind::Internal,
        _ => ProblemKind::BadRequest,
    };
    let mut problem = Problem::of(kind).status(status);
    if status.is_client_error() {
        problem.detail = text;
    }
    let mut rebuilt = problem.into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().append(name.clone(), value.clone());
        }
    }
    rebuilt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_problem_table_has_one_row_per_kind_in_the_enum_order_with_distinct_slugs() {
        for (index, row) in PROBLEM_TYPES.iter().enumerate() {
            assert_eq!(row.kind as usize, index, "{row:?}");
        }
        let slugs: std::collections::BTreeSet<_> =
            ProblemKind::all().map(ProblemKind::slug).collect();
        assert_eq!(slugs.len(), PROBLEM_TYPES.len());
    }
}
