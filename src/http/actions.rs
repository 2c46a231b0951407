//! `/api/v1`: an account's live state, disable and enable (TOTP-gated), and actions.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::AppState;
use super::caller::Caller;
use super::input::{JsonBody, PageLimit, QueryParams};
use super::problem::{Problem, ProblemKind};
use super::views::{
    AccountView, ActionList, ActionView, ActionsQuery, DisableRequest, EnableRequest,
};
use crate::audit::event::Operation;
use crate::auth::Permission;
use crate::domain::{AccountRef, IdempotencyKey, Reason, Ticket};
use crate::graph::GraphError;
use crate::remediation::action::{ActionRecord, ActionState, Denial};
use crate::remediation::engine::fingerprint;
use crate::remediation::{ActionRequest, Decision, Executed, Remediator};
use crate::store::ActionFilter;

type ApiResult<T = Response> = Result<T, Problem>;

fn remediator(state: &AppState) -> ApiResult<Arc<Remediator>> {
    state.remediator.clone().ok_or_else(|| {
        Problem::of(ProblemKind::RemediationUnavailable).detail(
            "the remediation app's credentials are not set (see /readyz); nothing was sent to Entra",
        )
    })
}

fn graph_problem(error: &GraphError, account: &AccountRef) -> Problem {
    match error {
        GraphError::NotFound { .. } => Problem::of(ProblemKind::AccountNotFound).detail(format!(
            "there is no account {account} in the customer's tenant"
        )),
        other => Problem::of(ProblemKind::GraphRefused)
            .detail(other.to_string())
            .with("graph", other.evidence()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/customers/{customer}/accounts/{account}",
    tag = "accounts",
    summary = "Read an account's live state from Entra",
    params(("customer" = String, Path, description = "customer slug"), ("account" = String, Path, description = "userPrincipalName or object id")),
    responses(
        (status = 200, body = AccountView, description = "the account as Entra shows it now, with killswitch's actions on it"),
        (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 404, body = Problem, description = "customer-not-found, account-not-found"),
        (status = 502, body = Problem, description = "graph-refused"),
        (status = 503, body = Problem, description = "remediation-unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path((customer, account)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Permission::ReadAccounts)?;
    let customer = super::customers::in_scope(&state, &caller, &customer).await?;
    let account: AccountRef = account.parse().map_err(Problem::invalid_input)?;
    let (user, protected) = live_account(&state, &customer, &account).await?;
    Ok(Json(AccountView::new(customer.slug.as_str(), user, protected)).into_response())
}

/// The account as Entra shows it now, and whether the customer's policy protects it.
pub(super) async fn live_account(
    state: &AppState,
    customer: &crate::customers::Customer,
    account: &AccountRef,
) -> ApiResult<(crate::graph::GraphUser, bool)> {
    let engine = remediator(state)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let user = engine
        .graph()
        .get_user(customer.tenant_id, account, deadline)
        .await
        .map_err(|e| graph_problem(&e, account))?
        .value;
    let protected = customer.policy.protects(account)
        || customer
            .policy
            .protects_user(&user.id, &user.user_principal_name);
    Ok((user, protected))
}

#[utoipa::path(
    post,
    path = "/api/v1/customers/{customer}/accounts/{account}/disable",
    tag = "actions",
    summary = "Disable an account (role analyst or lead; one-time code required)",
    params(
        ("customer" = String, Path, description = "customer slug"),
        ("account" = String, Path, description = "userPrincipalName or object id"),
        ("X-Killswitch-OTP" = String, Header, description = "the current code from the analyst's authenticator app"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key and request return the same action"),
    ),
    request_body = DisableRequest,
    responses(
        (status = 200, body = ActionView, description = "done: succeeded, or noop when already disabled"),
        (status = 202, body = ActionView, description = "still running: poll href"),
        (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 404, body = Problem, description = "customer-not-found, account-not-found"),
        (status = 409, body = Problem, description = "protected-account, idempotency-conflict"),
        (status = 422, body = Problem, description = "invalid-input"),
        (status = 429, body = Problem, description = "rate-limited, too-many-failures"),
        (status = 502, body = Problem, description = "graph-refused: recorded as failed with Graph's code and request-id"),
        (status = 503, body = Problem, description = "audit-unavailable (nothing was sent to Graph), remediation-unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path((customer, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<JsonBody<DisableRequest>, Problem>,
) -> ApiResult {
    caller.require(Permission::Disable)?;
    let JsonBody(body) = body?;
    let asked = Asked {
        operation: Operation::Disable,
        customer,
        account,
        reason: body.reason,
        ticket: body.ticket,
        revoke_sessions: body.revoke_sessions,
    };
    act(state, caller, asked, headers).await
}

#[utoipa::path(
    post,
    path = "/api/v1/customers/{customer}/accounts/{account}/enable",
    tag = "actions",
    summary = "Enable an account again (role lead; one-time code required)",
    params(
        ("customer" = String, Path, description = "customer slug"),
        ("account" = String, Path, description = "userPrincipalName or object id"),
        ("X-Killswitch-OTP" = String, Header, description = "the current code from the analyst's authenticator app"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key and request return the same action"),
    ),
    request_body = EnableRequest,
    responses(
        (status = 200, body = ActionView, description = "done: succeeded, or noop when already enabled"),
        (status = 202, body = ActionView, description = "still running: poll href"),
        (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 404, body = Problem, description = "customer-not-found, account-not-found"),
        (status = 409, body = Problem, description = "protected-account, idempotency-conflict"),
        (status = 422, body = Problem, description = "invalid-input"),
        (status = 429, body = Problem, description = "rate-limited, too-many-failures"),
        (status = 502, body = Problem, description = "graph-refused"),
        (status = 503, body = Problem, description = "audit-unavailable, remediation-unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path((customer, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<JsonBody<EnableRequest>, Problem>,
) -> ApiResult {
    caller.require(Permission::Enable)?;
    let JsonBody(body) = body?;
    let asked = Asked {
        operation: Operation::Enable,
        customer,
        account,
        reason: body.reason,
        ticket: body.ticket,
        revoke_sessions: None,
    };
    act(state, caller, asked, headers).await
}

/// What a disable or enable request asks, as sent.
pub(super) struct Asked {
    pub operation: Operation,
    pub customer: String,
    pub account: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub revoke_sessions: Option<bool>,
}

/// The request's `Idempotency-Key`, validated, and scoped to the caller.
fn idempotency_key(headers: &HeaderMap, caller: &Caller) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Problem::invalid_input("`Idempotency-Key` is 1 to 255 visible ASCII characters")
    })?;
    let key = IdempotencyKey::from_client(text).map_err(Problem::invalid_input)?;
    Ok(Some(key.scoped_to(caller.analyst.id)))
}

async fn act(state: AppState, caller: Caller, asked: Asked, headers: HeaderMap) -> ApiResult {
    respond(&run_action(state, caller, asked, headers).await?)
}

/// Admits the request (with its one-time code) and runs it, waiting for the outcome until
/// shortly before the client's own request would time out: the action as recorded then.
pub(super) async fn run_action(
    state: AppState,
    caller: Caller,
    asked: Asked,
    headers: HeaderMap,
) -> ApiResult<ActionRecord> {
    let customer = super::customers::in_scope(&state, &caller, &asked.customer).await?;
    let request = ActionRequest {
        customer: customer.slug.clone(),
        operation: asked.operation,
        account: asked.account.parse().map_err(Problem::invalid_input)?,
        reason: asked
            .reason
            .parse::<Reason>()
            .map_err(Problem::invalid_input)?,
        ticket: asked
            .ticket
            .map(|t| t.parse::<Ticket>())
            .transpose()
            .map_err(Problem::invalid_input)?,
        revoke_sessions: asked.revoke_sessions,
        idempotency_key: idempotency_key(&headers, &caller)?,
        actor: caller.actor(),
        mfa: None,
        context: Some(caller.context.clone()),
    };
    let engine = remediator(&state)?;

    // A retry of the same request (same key, same analyst) gets the recorded action without a
    // new code: the code it was sent with has been used already, and nothing new is done. A
    // different request under the key is answered only after a fresh code.
    if let Some(key) = &request.idempotency_key
        && let Some(existing) = state
            .store
            .action_by_key(&customer.slug, key.as_str())
            .await
            .map_err(Problem::from)?
    {
        if existing.request_hash == fingerprint(&request).map_err(Problem::from)? {
            return Ok(existing);
        }
        caller
            .second_factor(&state, &headers, Some(&customer.slug))
            .await?;
        return Err(idempotency_conflict());
    }

    let mfa = caller
        .second_factor(&state, &headers, Some(&customer.slug))
        .await?;
    let request = ActionRequest {
        mfa: Some(mfa),
        ..request
    };
    let pending = match engine.admit(request).await {
        Ok(Decision::Pending(pending)) => pending,
        Ok(Decision::Done(Executed::Ran(record) | Executed::Replayed(record))) => {
            return Ok(record);
        }
        Err(crate::Error::Conflict(_)) => return Err(idempotency_conflict()),
        Err(e) => return Err(Problem::from(e)),
    };
    let admitted = pending.record().clone();
    // The action runs to its outcome even if the client goes away; the client waits for it
    // until shortly before its own request would time out, then gets 202 and polls.
    let running = tokio::spawn(async move { engine.complete(pending).await });
    match tokio::time::timeout(super::answer_within(&state), running).await {
        Ok(Ok(record)) => Ok(record),
        // Past admission Graph may have been called: never answer "nothing was done". The
        // action is recorded; reconciliation gives it its outcome, and the client polls.
        Ok(Err(join)) => {
            tracing::error!(action = %admitted.id, error = %join, "the action's task failed; reconciliation will record its outcome");
            Ok(admitted)
        }
        Err(_) => Ok(admitted),
    }
}

fn idempotency_conflict() -> Problem {
    Problem::of(ProblemKind::IdempotencyConflict)
        .detail("this Idempotency-Key was already used for a different request")
}

/// The HTTP answer for an action in its current state.
fn respond(record: &ActionRecord) -> ApiResult {
    let view = ActionView::from(record);
    let href = view.href.clone();
    let detail = record.detail.clone().unwrap_or_default();
    let with_action = |p: Problem| p.detail(detail.clone()).with("action", &view);
    match (record.state, record.denial) {
        (ActionState::Succeeded | ActionState::Noop, _) => {
            Ok((StatusCode::OK, Json(&view)).into_response())
        }
        (ActionState::Requested, _) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, href)],
            Json(&view),
        )
            .into_response()),
        (ActionState::Denied, Some(Denial::HourlyLimit)) => {
            Err(with_action(Problem::of(ProblemKind::RateLimited)).retry_after(300))
        }
        (ActionState::Denied, _) => Err(with_action(Problem::of(ProblemKind::ProtectedAccount))),
        (ActionState::Failed, _) if graph_says_not_found(record) => {
            Err(with_action(Problem::of(ProblemKind::AccountNotFound)))
        }
        (ActionState::Failed, _) => Err(with_action(Problem::of(ProblemKind::GraphRefused))),
    }
}

fn graph_says_not_found(record: &ActionRecord) -> bool {
    record.graph.as_ref().and_then(|g| g.error_code.as_deref()) == Some("Request_ResourceNotFound")
}

#[utoipa::path(
    get,
    path = "/api/v1/actions/{id}",
    tag = "actions",
    summary = "Read one action",
    params(("id" = String, Path, description = "action id")),
    responses(
        (status = 200, body = ActionView, description = "the action"),
        (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden"),
        (status = 404, body = Problem, description = "not-found (also for actions of customers out of scope)"),
    ),
    security(("bearer" = []))
)]
pub async fn get_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Permission::ReadActions)?;
    let not_found = || Problem::not_found().detail(format!("there is no action {id}"));
    let id = uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    let record = state
        .store
        .action(id)
        .await
        .map_err(Problem::from)?
        .ok_or_else(not_found)?;
    // Another customer's action is reported as absent, not as forbidden: its existence is
    // itself that customer's information.
    if !caller.sees(record.customer.as_str()) {
        return Err(not_found());
    }
    Ok(Json(ActionView::from(&record)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/actions",
    tag = "actions",
    summary = "List actions, newest first, within the caller's customers",
    params(ActionsQuery),
    responses(
        (status = 200, body = ActionList, description = "the actions, newest first"),
        (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 422, body = Problem, description = "invalid-input"),
    ),
    security(("bearer" = []))
)]
pub async fn list_actions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ActionsQuery>,
) -> ApiResult {
    caller.require(Permission::ReadActions)?;
    let customers = caller.customer_filter(query.customer.as_deref())?;
    let filter = ActionFilter {
        customers,
        state: query
            .state
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(Problem::invalid_input)?,
        limit: PageLimit::or_default(query.limit),
        ..ActionFilter::default()
    };
    let records = state.store.actions(&filter).await.map_err(Problem::from)?;
    Ok(Json(ActionList {
        actions: records.iter().map(ActionView::from).collect(),
    })
    .into_response())
}
