//! The audit log over the API: per-customer exports, streamed, and the public key customers
//! verify them with.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::customers::in_scope;
use super::input::QueryParams;
use super::openapi::schemas;
use super::problem::Problem;
use crate::auth::Permission;
use crate::reports::export::{self, ExportRequest, Format};

type ApiResult<T = Response> = Result<T, Problem>;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start of the period, inclusive (RFC 3339 time or a UTC date). Default: the beginning.
    pub from: Option<String>,
    /// End of the period, exclusive (RFC 3339 time or a UTC date). Default: now.
    pub to: Option<String>,
    #[param(schema_with = schemas::export_format)]
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/customers/{customer}/audit/export", tag = "audit",
    summary = "Export a customer's audit log for a period (role auditor or admin; the export is itself audited)",
    params(("customer" = String, Path, description = "customer slug"), ExportQuery),
    responses(
        (status = 200, description = "the export, streamed: application/x-ndjson (jsonl, ocsf), text/csv or text/html",
            content((String = "application/x-ndjson"), (String = "text/csv"), (String = "text/html"))),
        (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 404, body = Problem, description = "customer-not-found"),
        (status = 422, body = Problem, description = "invalid-input"),
        (status = 503, body = Problem, description = "audit-unavailable")),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    query: Result<QueryParams<ExportQuery>, Problem>,
) -> ApiResult {
    caller.require(Permission::ExportAudit)?;
    in_scope(&state, &caller, &customer).await?;
    let QueryParams(query) = query?;
    export_download(&state, &caller, &customer, &query).await
}

/// The export as a download, for the API and the console alike: the role, the scope, the
/// period and format asked for; the export is itself audited.
pub(crate) async fn export_download(
    state: &AppState,
    caller: &Caller,
    customer: &str,
    query: &ExportQuery,
) -> ApiResult {
    caller.require(Permission::ExportAudit)?;
    let customer = in_scope(state, caller, customer).await?;
    let format: Format = query
        .format
        .as_deref()
        .unwrap_or("jsonl")
        .parse()
        .map_err(Problem::invalid_input)?;
    let request = ExportRequest {
        customer: customer.slug.clone(),
        from: query
            .from
            .as_deref()
            .map(export::parse_bound)
            .transpose()
            .map_err(Problem::invalid_input)?,
        to: query
            .to
            .as_deref()
            .map(export::parse_bound)
            .transpose()
            .map_err(Problem::invalid_input)?,
        format,
        actor: caller.actor(),
    };
    let started = export::start(state.store.clone(), state.audit_key.clone(), request)
        .await
        .map_err(Problem::from)?;
    let filename = format!(
        "killswitch-audit-{}-{}.{}",
        customer.slug,
        started
            .window
            .exported_at
            .as_datetime()
            .format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let mut response = Body::from_stream(started.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-killswitch-export-entries",
        HeaderValue::from(started.window.entry_count()),
    );
    Ok(response)
}

/// The key exports and checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyView {
    /// The first 8 bytes of SHA-256 over the raw public key, hex: the `key_id` in exports.
    pub key_id: String,
    pub algorithm: String,
    /// The 32-byte Ed25519 public key (RFC 8032), standard base64.
    pub public_key: String,
    /// The same key as SubjectPublicKeyInfo PEM.
    pub pem: String,
}

#[utoipa::path(get, path = "/api/v1/audit/public-key", tag = "audit",
    summary = "The public key audit exports verify with (no authentication: it is public)",
    responses((status = 200, body = PublicKeyView, description = "the public keys that sign audit checkpoints")))]
pub async fn public_key(State(state): State<AppState>) -> ApiResult {
    let key = state.audit_key.public_key();
    Ok(Json(PublicKeyView {
        key_id: key.key_id.to_string(),
        algorithm: "Ed25519".to_owned(),
        public_key: key.to_base64(),
        pem: key.to_pem().map_err(Problem::from)?,
    })
    .into_response())
}
