//! RFC 9457 problem details: every error the API answers is `application/problem+json` with a
//! stable `type` clients can branch on.

use axum::body::to_bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

pub const CONTENT_TYPE: &str = "application/problem+json";

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
    /// `slug` names the problem type; the `type` member is `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Problem {
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
            retry_after: None,
        }
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
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    /// 422: a value in the request is not acceptable; the detail says which and why.
    pub fn invalid_input(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Invalid input",
        )
        .detail(detail.to_string())
    }

    /// 422: the request body is not the JSON document the route takes.
    pub fn invalid_body(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
        )
        .detail(detail.to_string())
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
    fn from(error: &Error) -> Problem {
        match error {
            Error::InvalidInput(msg) => Problem::invalid_input(msg),
            Error::NotFound(what) => Problem::not_found().detail(format!("{what} not found")),
            Error::Conflict(msg) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(msg)
            }
            Error::DetectionDecided(state) => Problem::new(
                StatusCode::CONFLICT,
                "detection-decided",
                "Detection already decided",
            )
            .detail(error.to_string())
            .with("state", state.as_str()),
            Error::AuditUnavailable(_)
            | Error::DatabaseUnavailable(_)
            | Error::SchemaBehind { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "Audit log unavailable",
            )
            .detail("the audit log cannot be written, so nothing was done"),
            Error::Upstream(msg) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                "Microsoft Entra failed",
            )
            .detail(msg),
            // The cause is logged where it happens; clients get an opaque answer.
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = Problem::from(&self);
        if problem.status >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        problem.into_response()
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
    let (slug, title) = match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "Request body too large"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timed out"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        s if s.is_server_error() => ("internal", "Internal error"),
        _ => ("bad-request", "Bad request"),
    };
    let mut problem = Problem::new(status, slug, title);
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
