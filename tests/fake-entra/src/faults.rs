//! Injected failures: what a throttled or failing Entra/Graph answers.
//!
//! Faults are taken when a request is recorded (see `Shared::begin_call`) and applied before
//! any normal processing, so a faulted PATCH never changes state. `DropConnection` is not a
//! response at all: the server sees the [`DropConnectionMarker`] and makes hyper abort the
//! connection without writing a byte.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::Fault;
use crate::aad::AadCtx;
use crate::graph::GraphCtx;

/// Response extension asking the connection layer to close the socket instead of answering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnectionMarker;

pub(crate) fn drop_connection() -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    resp.extensions_mut().insert(DropConnectionMarker);
    resp
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A Graph answer for a `Throttle` or `Status` fault (`None` for the other kinds).
pub(crate) fn graph_response(fault: &Fault, ctx: &GraphCtx) -> Option<Response> {
    match fault {
        Fault::Throttle { retry_after_secs } => Some(with_retry_after(
            ctx.error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests",
            ),
            *retry_after_secs,
        )),
        Fault::Status(code) => {
            let status = status_of(*code);
            // Codes from Graph's documented error-code table.
            let (code, message) = match status.as_u16() {
                400 => ("invalidRequest", "The request is malformed or incorrect."),
                401 => ("unauthenticated", "The caller is not authenticated."),
                403 => (
                    "accessDenied",
                    "The caller doesn't have permission to perform the action.",
                ),
                404 => ("itemNotFound", "The resource could not be found."),
                429 => ("TooManyRequests", "Too many requests"),
                503 => (
                    "serviceNotAvailable",
                    "The service is temporarily unavailable for maintenance or is overloaded. You may repeat the request after a delay.",
                ),
                504 => (
                    "gatewayTimeout",
                    "The server, while acting as a proxy, did not receive a timely response from the upstream server.",
                ),
                _ => ("generalException", "An unspecified error has occurred."),
            };
            Some(ctx.error(status, code, message))
        }
        Fault::DropConnection | Fault::Hang => None,
    }
}

/// A login-endpoint answer for a `Throttle` or `Status` fault (`None` for the other kinds).
pub(crate) fn aad_response(fault: &Fault, ctx: &AadCtx) -> Option<Response> {
    match fault {
        Fault::Throttle { retry_after_secs } => Some(with_retry_after(
            ctx.error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                90055,
                "The number of requests from this client exceeded the throttling threshold. Please try again later.",
            ),
            *retry_after_secs,
        )),
        Fault::Status(code) => {
            let status = status_of(*code);
            Some(match status.as_u16() {
                503 | 504 => ctx.error(
                    status,
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.",
                ),
                s if s < 500 => ctx.error(status, "invalid_request", 90033, "The request could not be processed."),
                _ => ctx.error(
                    status,
                    "server_error",
                    50000,
                    "There was an error issuing a token or an issue with our sign-in service.",
                ),
            })
        }
        Fault::DropConnection | Fault::Hang => None,
    }
}
