//! Liveness, readiness and metrics endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// The process is up and serving; says nothing about its dependencies.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 200 when the audit log can be written (database reachable, signing key loaded); also names
/// what remediation still lacks, since the service is useful for onboarding before that.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "ok", "backend": state.store.backend().name()}),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            json!({"status": "unavailable", "backend": state.store.backend().name()})
        }
    };
    let database_ok = database["status"] == "ok";
    let missing = state.settings.entra.missing();
    let body = json!({
        "status": if database_ok { "ready" } else { "not_ready" },
        "checks": {
            "database": database,
            "audit_signing_key": {"status": "ok", "key_id": state.audit_key.key_id().as_str()},
        },
        "remediation": {
            "ready": missing.is_empty(),
            "missing": missing,
        },
    });
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    // Counted at scrape time: every instance reports the database's number.
    if let Ok(pending) = state.store.pending_detections().await {
        metrics::gauge!("killswitch_detections_pending").set(pending as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
