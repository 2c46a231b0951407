//! The HTTP surface: routers, middleware (request ids, tracing, limits, metrics) and the
//! problem+json error mapping.

mod actions;
mod audit;
mod authn;
pub mod caller;
pub mod client;
mod console;
mod customers;
mod falcon;
mod health;
mod input;
pub mod limiter;
mod notifications;
pub mod openapi;
pub mod problem;
pub mod serve;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::audit::AuditKey;
use crate::config::Settings;
use crate::store::Store;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub audit_key: Arc<AuditKey>,
    pub auth: Arc<crate::auth::gate::Authenticator>,
    /// Present when single sign-on is configured.
    pub oidc: Option<Arc<crate::auth::oidc::OidcProvider>>,
    pub failures: Arc<limiter::FailureLimiter>,
    /// Consent callbacks per client per minute (anyone can call that route).
    pub callbacks: Arc<limiter::FailureLimiter>,
    /// Present when the remediation app is configured.
    pub remediator: Option<Arc<crate::remediation::Remediator>>,
    pub onboarding: Arc<crate::customers::onboarding::Onboarding>,
    pub intake: Arc<crate::falcon::intake::Intake>,
    pub cipher: Arc<crate::secrets::SecretCipher>,
    pub metrics: PrometheusHandle,
    /// Where background work reads the time (a test's clock, or the system's).
    pub clock: Arc<dyn crate::time::Clock>,
}

/// How long a handler waits for work that runs on to its end regardless (a disable, a
/// detection's processing) before answering 202: shortly before the client's own request
/// would time out.
fn answer_within(state: &AppState) -> std::time::Duration {
    state
        .settings
        .server
        .request_timeout
        .saturating_sub(std::time::Duration::from_secs(2))
        .max(std::time::Duration::from_secs(1))
}

pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/api/v1/customers/{customer}/accounts/{account}", get(actions::get_account))
        .route("/api/v1/customers/{customer}/accounts/{account}/disable", post(actions::disable))
        .route("/api/v1/customers/{customer}/accounts/{account}/enable", post(actions::enable))
        .route("/api/v1/actions", get(actions::list_actions))
        .route("/api/v1/notifications", get(notifications::list))
        .route("/api/v1/customers", get(customers::list))
        .route("/api/v1/customers/{customer}", get(customers::get))
        .route("/api/v1/customers/{customer}/consent-link", post(customers::consent_link))
        .route("/api/v1/customers/{customer}/test", post(customers::test))
        .route("/api/v1/customers/{customer}/policy", get(customers::get_policy).put(customers::put_policy))
        .route("/api/v1/customers/{customer}/webhook-secret", post(customers::webhook_secret))
        .route("/consent/callback", get(customers::callback))
        .route("/api/v1/webhooks/falcon/{customer}", post(falcon::webhook))
        .route("/api/v1/detections", get(falcon::list))
        .route("/api/v1/detections/{id}", get(falcon::get))
        .route("/api/v1/detections/{id}/approve", post(falcon::approve))
        .route("/api/v1/detections/{id}/dismiss", post(falcon::dismiss))
        .route("/api/v1/actions/{id}", get(actions::get_action))
        .route("/api/v1/customers/{customer}/audit/export", get(audit::export))
        .route("/api/v1/audit/public-key", get(audit::public_key))
        .merge(console::routes())
        .fallback(console::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_request(checked_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), path = ?request.uri().path(), request_id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.server.request_timeout))
                .layer(RequestBodyLimitLayer::new(settings.server.body_limit_bytes)),
        )
        // Outside the limits, so their bare 408/413 answers become problem+json too, and
        // metrics see the final status.
        .layer(middleware::map_response(problem::normalize))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

/// The longest `X-Request-Id` kept; it is logged and copied into audit entries.
pub const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `X-Request-Id` unless it is 1 to 128 visible ASCII characters, so the id
/// set next (a fresh UUID) replaces it: the value ends up in logs and audit entries.
async fn checked_request_id(mut request: Request) -> Request {
    let acceptable = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID && bytes.iter().all(u8::is_ascii_graphic)
    };
    let values = request.headers().get_all(REQUEST_ID);
    let keep = values.iter().count() == 1 && values.iter().all(acceptable);
    if !keep {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Counts requests and their latency by route template (never by raw path, which would carry
/// account names into metric labels).
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("killswitch_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("killswitch_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
