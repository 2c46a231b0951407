//! Falcon's webhook, and the detection queue analysts work from.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::input::{JsonBody, PageLimit, QueryParams};
use super::openapi::schemas;
use super::problem::{Problem, ProblemKind};
use super::views::{ActionView, DetectionView};
use crate::auth::Permission;
use crate::domain::Reason;
use crate::falcon::intake::Refusal;
use crate::falcon::records::{DetectionFilter, DetectionRecord, DetectionState};

type ApiResult<T = Response> = Result<T, Problem>;

/// The largest webhook body accepted, whatever `server.body_limit_bytes` says.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionList {
    pub detections: Vec<DetectionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovedView {
    pub detection: DetectionView,
    pub action: ActionView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissRequest {
    /// Why no action is needed (a false positive, a known test…); recorded in the audit log.
    #[schema(schema_with = schemas::reason)]
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetectionsQuery {
    #[param(schema_with = schemas::customer_slug)]
    pub customer: Option<String>,
    #[param(schema_with = schemas::detection_state)]
    pub state: Option<String>,
    #[param(schema_with = schemas::page_limit)]
    pub limit: Option<PageLimit>,
}

fn refused(status: u16) -> Problem {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    // No detail: the reason helps only someone probing; it is logged and counted instead.
    Problem::of(ProblemKind::WebhookRejected).status(status)
}

#[utoipa::path(post, path = "/api/v1/webhooks/falcon/{customer}", tag = "falcon",
    summary = "Receive a Falcon detection (HMAC-signed; no analyst authentication)",
    description = "Authenticated by the customer's webhook secret: the CrowdStrike Store Webhook scheme \
        (signature header and X-CS-Delivery-Timestamp), Standard Webhooks (webhook-id, webhook-timestamp, \
        webhook-signature), or Authorization: Bearer <secret> (lower assurance, never disables automatically). \
        The body follows the template in docs/falcon.md.",
    params(("customer" = String, Path, description = "customer slug")),
    responses(
        (status = 200, body = DetectionView, description = "a detection already received (same composite_id): nothing else was done"),
        (status = 202, body = DetectionView, description = "accepted: stored, and disabled at once when the customer's policy allows"),
        (status = 400, body = Problem, description = "webhook-rejected: malformed timestamp"),
        (status = 401, body = Problem, description = "webhook-rejected: missing, wrong or stale signature"),
        (status = 413, body = Problem, description = "body-too-large (256 KiB)"),
        (status = 422, body = Problem, description = "invalid-detection: names the missing or invalid field"),
        (status = 503, body = Problem, description = "audit-unavailable: the detection could not be stored; send it again"),
    ))]
pub async fn webhook(
    State(state): State<AppState>,
    Path(customer): Path<String>,
    sender: super::customers::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reject = |reason: &'static str, status: u16| {
        metrics::counter!("killswitch_webhooks_rejected_total", "reason" => reason).increment(1);
        tracing::warn!(customer = ?customer, reason, "Falcon webhook refused");
        refused(status).into_response()
    };
    let Ok(body) = to_bytes(body, WEBHOOK_BODY_LIMIT).await else {
        metrics::counter!("killswitch_webhooks_rejected_total", "reason" => "too_large")
            .increment(1);
        return Problem::of(ProblemKind::BodyTooLarge)
            .detail("a detection is at most 256 KiB")
            .into_response();
    };
    let received = match state
        .intake
        .receive(&customer, sender.0, &headers, &body)
        .await
    {
        Ok(received) => received,
        Err(Refusal::Rejected(rejection)) => return reject(rejection.label(), rejection.status()),
        Err(Refusal::Invalid(detail)) => {
            metrics::counter!("killswitch_webhooks_rejected_total", "reason" => "invalid_detection").increment(1);
            return Problem::of(ProblemKind::InvalidDetection)
                .detail(detail)
                .into_response();
        }
        Err(Refusal::Failed(e)) => return Problem::from(e).into_response(),
    };
    if !received.new {
        return (
            StatusCode::OK,
            Json(DetectionView::from(&received.detection)),
        )
            .into_response();
    }
    // Look-up and policy run to the end even if Falcon hangs up; Falcon hears back when they
    // are done or shortly before its request would time out.
    let intake = state.intake.clone();
    let detection = received.detection.clone();
    let processing = tokio::spawn(async move {
        crate::fault::point("intake.stored").await;
        intake.process(&received).await
    });
    let current = match tokio::time::timeout(super::answer_within(&state), processing).await {
        Ok(Ok(Ok(processed))) => processed,
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, detection = %detection.id, "processing a detection failed; it stays pending");
            detection
        }
        Ok(Err(_)) | Err(_) => detection,
    };
    (StatusCode::ACCEPTED, Json(DetectionView::from(&current))).into_response()
}

pub(crate) async fn detection_in_scope(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(uuid::Uuid, DetectionRecord)> {
    let not_found = || Problem::not_found().detail(format!("there is no detection {id}"));
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let detection = state
        .store
        .detection(id)
        .await
        .map_err(Problem::from)?
        .ok_or_else(not_found)?;
    if !caller.sees(detection.customer.as_str()) {
        return Err(not_found());
    }
    Ok((id, detection))
}

#[utoipa::path(get, path = "/api/v1/detections", tag = "falcon", operation_id = "list_detections", summary = "Detections within the caller's customers, newest first",
    params(DetectionsQuery),
    responses((status = 200, body = DetectionList, description = "the detections, newest first"), (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"), (status = 422, body = Problem, description = "invalid-input")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<DetectionsQuery>,
) -> ApiResult {
    caller.require(Permission::ReadDetections)?;
    let customers = caller.customer_filter(query.customer.as_deref())?;
    let state_filter = match query.state.as_deref() {
        None => None,
        Some(text) => Some(DetectionState::parse(text).ok_or_else(|| {
            Problem::invalid_input(format!(
                "`{text}` is not pending, auto_remediated, approved or dismissed"
            ))
        })?),
    };
    let filter = DetectionFilter {
        customers,
        state: state_filter,
        before: None,
        limit: PageLimit::or_default(query.limit),
    };
    let detections = state
        .store
        .detections(&filter)
        .await
        .map_err(Problem::from)?;
    let detections = detections.iter().map(DetectionView::from).collect();
    Ok(Json(DetectionList { detections }).into_response())
}

#[utoipa::path(get, path = "/api/v1/detections/{id}", tag = "falcon", operation_id = "get_detection", summary = "One detection",
    params(("id" = String, Path, description = "detection id")),
    responses((status = 200, body = DetectionView, description = "the detection"), (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden"), (status = 404, body = Problem, description = "not-found (also out of scope)")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Permission::ReadDetections)?;
    let (_, detection) = detection_in_scope(&state, &caller, &id).await?;
    Ok(Json(DetectionView::from(&detection)).into_response())
}

#[utoipa::path(post, path = "/api/v1/detections/{id}/approve", tag = "falcon",
    summary = "Approve a pending detection: disable its account (role analyst or lead; one-time code required)",
    params(("id" = String, Path, description = "detection id"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    responses((status = 200, body = ApprovedView, description = "approved: the detection and the action that disabled its account"), (status = 202, body = DetectionView, description = "still running: poll the detection (Location)"),
        (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden"), (status = 404, body = Problem, description = "not-found"),
        (status = 409, body = Problem, description = "detection-decided (with its `state`): approved, dismissed or disabled automatically already; conflict: the account cannot be found"),
        (status = 502, body = Problem, description = "upstream: the remediation app is not configured")),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    caller.require(Permission::DecideDetections)?;
    let found = detection_in_scope(&state, &caller, &id).await?;
    match approve_detection(&state, &caller, found, &headers).await? {
        Approval::Done(approved) => Ok(Json(ApprovedView {
            action: ActionView::from(approved.action.record()),
            detection: DetectionView::from(&approved.detection),
        })
        .into_response()),
        Approval::StillRunning(detection) => {
            let href = format!("/api/v1/detections/{}", detection.id);
            Ok((
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, href)],
                Json(DetectionView::from(detection.as_ref())),
            )
                .into_response())
        }
    }
}

/// What approving a detection came to within the time the analyst is answered in.
pub(crate) enum Approval {
    Done(Box<crate::falcon::intake::Approved>),
    /// The disable runs on to its outcome; the detection shows it when it ends.
    StillRunning(Box<DetectionRecord>),
}

/// Approves a pending detection found in the caller's scope, for the API and the console
/// alike: the role, the one-time code, then the disable.
pub(crate) async fn approve_detection(
    state: &AppState,
    caller: &Caller,
    (id, detection): (uuid::Uuid, DetectionRecord),
    headers: &HeaderMap,
) -> ApiResult<Approval> {
    caller.require(Permission::DecideDetections)?;
    let customer = still_pending(&detection)?;
    let mfa = caller
        .second_factor(state, headers, Some(&customer))
        .await?;
    // The disable runs to its outcome even if the request times out; the analyst is answered
    // shortly before that, with the detection to poll if it is still running.
    let intake = state.intake.clone();
    let (actor, context) = (caller.actor(), caller.context.clone());
    let running = tokio::spawn(async move { intake.approve(id, actor, mfa, context).await });
    match tokio::time::timeout(super::answer_within(state), running).await {
        Ok(Ok(approved)) => Ok(Approval::Done(Box::new(approved.map_err(Problem::from)?))),
        Ok(Err(join)) => Err(Problem::from(crate::Error::Internal(format!(
            "approval task failed: {join}"
        )))),
        Err(_) => Ok(Approval::StillRunning(Box::new(detection))),
    }
}

/// The detection's customer while it is pending; 409 with its state once it is decided.
fn still_pending(detection: &DetectionRecord) -> ApiResult<crate::domain::CustomerSlug> {
    match detection.state {
        DetectionState::Pending => Ok(detection.customer.clone()),
        decided => Err(Problem::from(crate::Error::DetectionDecided(decided))),
    }
}

#[utoipa::path(post, path = "/api/v1/detections/{id}/dismiss", tag = "falcon",
    summary = "Dismiss a pending detection: nothing is sent to Entra (role analyst or lead; one-time code required)",
    params(("id" = String, Path, description = "detection id"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    request_body = DismissRequest,
    responses((status = 200, body = DetectionView, description = "dismissed: the detection"), (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden"), (status = 404, body = Problem, description = "not-found"),
        (status = 409, body = Problem, description = "detection-decided (with its `state`): decided already"), (status = 422, body = Problem, description = "invalid-input, invalid-body")),
    security(("bearer" = [])))]
pub async fn dismiss(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<DismissRequest>, Problem>,
) -> ApiResult {
    caller.require(Permission::DecideDetections)?;
    let found = detection_in_scope(&state, &caller, &id).await?;
    let JsonBody(body) = body?;
    let dismissed = dismiss_detection(&state, &caller, found, &body.reason, &headers).await?;
    Ok(Json(DetectionView::from(&dismissed)).into_response())
}

/// Dismisses a pending detection found in the caller's scope, for the API and the console
/// alike: the role, the reason, the one-time code; nothing is sent to Entra.
pub(crate) async fn dismiss_detection(
    state: &AppState,
    caller: &Caller,
    (id, detection): (uuid::Uuid, DetectionRecord),
    reason: &str,
    headers: &HeaderMap,
) -> ApiResult<DetectionRecord> {
    caller.require(Permission::DecideDetections)?;
    if reason.trim().is_empty() {
        return Err(Problem::invalid_input(
            "`reason` is required: say why this detection needs no action",
        ));
    }
    let reason: Reason = reason
        .parse()
        .map_err(|e: crate::domain::InvalidValue| Problem::invalid_input(e))?;
    let customer = still_pending(&detection)?;
    caller
        .second_factor(state, headers, Some(&customer))
        .await?;
    state
        .intake
        .dismiss(id, caller.actor(), reason.as_str())
        .await
        .map_err(Problem::from)
}
