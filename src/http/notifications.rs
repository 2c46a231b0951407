//! `GET /api/v1/notifications`: every message killswitch made, where it stands, and each
//! attempt to deliver it, within the caller's customers (the SOC's own messages, which belong
//! to no customer, only for analysts of every customer).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::input::{PageLimit, QueryParams};
use super::openapi::schemas;
use super::problem::Problem;
use crate::auth::roles::Permission;
use crate::notify::{Attempt, Notification, NotificationFilter};

type ApiResult<T = Response> = Result<T, Problem>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    /// Only this customer's messages.
    #[param(schema_with = schemas::customer_slug)]
    pub customer: Option<String>,
    #[param(schema_with = schemas::notification_state)]
    pub state: Option<String>,
    #[param(schema_with = schemas::page_limit)]
    pub limit: Option<PageLimit>,
}

/// One message and its delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    /// What it tells of: `action_outcome`, `detection_pending`, `detection_reminder`,
    /// `consent_granted`, `consent_failed`, `connection_failed`, `analyst_locked_out`, `digest`.
    pub kind: String,
    /// `soc` or `customer`.
    pub audience: String,
    pub customer: Option<String>,
    /// `email`, `slack`, `teams` or `webhook`.
    pub channel: String,
    /// The e-mail addresses, or which webhook (never its URL).
    pub destination: String,
    pub subject: String,
    /// `pending` (another attempt is due at `next_attempt_at`), `sent` or `failed` (given up).
    pub state: String,
    /// The audit entry it tells of (chain and seq), if one.
    pub chain: Option<String>,
    pub seq: Option<i64>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    pub ok: bool,
    /// What the other side answered, or why it could not be reached.
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<NotificationView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    summary = "List notifications, newest first, with every delivery attempt",
    params(NotificationsQuery),
    responses(
        (status = 200, body = NotificationList, description = "the notifications, newest first"),
        (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 422, body = Problem, description = "invalid-input"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<NotificationsQuery>,
) -> ApiResult {
    caller.require(Permission::ReadActions)?;
    let filter = NotificationFilter {
        customers: caller.customer_filter(query.customer.as_deref())?,
        state: query
            .state
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(Problem::invalid_input)?,
        before: None,
        limit: PageLimit::or_default(query.limit),
    };
    let notifications = state
        .store
        .notifications(&filter)
        .await
        .map_err(Problem::from)?;
    let ids: Vec<uuid::Uuid> = notifications.iter().map(|n| n.id).collect();
    let attempts = state
        .store
        .notification_attempts(&ids)
        .await
        .map_err(Problem::from)?;
    let views = notifications
        .into_iter()
        .map(|n| view(n, &attempts))
        .collect();
    Ok(Json(NotificationList {
        notifications: views,
    })
    .into_response())
}

fn view(n: Notification, attempts: &[Attempt]) -> NotificationView {
    let id = n.id.to_string();
    let pending = n.state == crate::notify::NotificationState::Pending;
    NotificationView {
        attempts: attempts
            .iter()
            .filter(|a| a.notification_id == id)
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: a.at.clone(),
                ok: a.ok,
                detail: a.detail.clone(),
            })
            .collect(),
        id,
        kind: n.kind.as_str().to_owned(),
        audience: n.audience.as_str().to_owned(),
        customer: n.customer.map(|c| c.as_str().to_owned()),
        channel: n.channel.as_str().to_owned(),
        destination: n.destination,
        subject: n.subject,
        state: n.state.as_str().to_owned(),
        chain: n.chain,
        seq: n.seq,
        created_at: n.created_at.to_string(),
        next_attempt_at: pending.then(|| n.next_attempt_at.to_string()),
        finished_at: n.finished_at.map(|t| t.to_string()),
        last_error: n.last_error,
    }
}
