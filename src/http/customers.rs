//! Customers over the API: readiness, the consent link, the connection test, the policy; and the
//! page the customer's administrator lands on after granting consent.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::input::JsonBody;
use super::limiter::FailureKey;
use super::openapi::schemas;
use super::problem::{Problem, ProblemKind};
use crate::audit::event::Actor;
use crate::auth::Permission;
use crate::customers::onboarding::{CallbackParams, ConsentResult, SecretIssue};
use crate::customers::{AutoDisable, Customer, Policy};
use crate::domain::customer::NotifyMode;
use crate::domain::{AccountRef, CustomerSlug};
use crate::falcon::signature::SignedString;

type ApiResult<T = Response> = Result<T, Problem>;

/// A customer as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    pub slug: String,
    pub name: String,
    pub domain: String,
    pub tenant_id: String,
    /// `true` when the last connection test passed.
    pub ready: Option<bool>,
    /// "ready", or the exact reason it is not.
    pub connection_detail: Option<String>,
    pub connection_checked_at: Option<String>,
    pub last_ready_at: Option<String>,
}

impl From<&Customer> for CustomerView {
    fn from(c: &Customer) -> Self {
        CustomerView {
            slug: c.slug.to_string(),
            name: c.name.clone(),
            domain: c.domain.clone(),
            tenant_id: c.tenant_id.to_string(),
            ready: c.connection.as_ref().map(|c| c.ready),
            connection_detail: c.connection.as_ref().map(|c| c.detail.clone()),
            connection_checked_at: c.connection.as_ref().map(|c| c.checked_at.to_string()),
            last_ready_at: c
                .connection
                .as_ref()
                .and_then(|c| c.last_ready_at.map(|t| t.to_string())),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerList {
    pub customers: Vec<CustomerView>,
}

/// A customer's guard rails.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyView {
    #[schema(schema_with = schemas::account_list)]
    pub protected: Vec<String>,
    /// At most this many actions per hour for the customer.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_actions_per_hour: u32,
    /// Revoke sign-in sessions with every disable unless the request says otherwise.
    pub revoke_sessions: bool,
    #[schema(schema_with = schemas::auto_disable)]
    pub auto_disable: String,
    #[schema(schema_with = schemas::contact)]
    pub contact: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schemas::webhook_signature)]
    pub webhook_signature: Option<String>,
    /// How the contact hears of actions: a notice each (`immediate`, the default), a daily
    /// `digest`, or `off`.
    #[serde(default)]
    #[schema(schema_with = schemas::notify_mode)]
    pub notify: Option<String>,
    /// The customer's own HTTPS endpoint for action notices (Standard Webhooks); the signing
    /// secret is shown by `killswitch customer policy S --webhook-url U`.
    #[serde(default)]
    #[schema(schema_with = schemas::webhook_url)]
    pub webhook_url: Option<String>,
}

impl From<&Policy> for PolicyView {
    fn from(p: &Policy) -> Self {
        PolicyView {
            protected: p.protected.iter().map(ToString::to_string).collect(),
            max_actions_per_hour: p.max_actions_per_hour,
            revoke_sessions: p.revoke_sessions,
            auto_disable: p.auto_disable.as_str().to_owned(),
            contact: p.contact.clone(),
            webhook_signature: Some(p.webhook_signature.as_str().to_owned()),
            notify: Some(p.notify.as_str().to_owned()),
            webhook_url: p.webhook_url.clone(),
        }
    }
}

impl PolicyView {
    fn parse(self) -> Result<Policy, crate::Error> {
        let invalid = crate::Error::InvalidInput;
        if self.max_actions_per_hour == 0 || self.max_actions_per_hour > 10_000 {
            return Err(invalid("max_actions_per_hour takes 1 to 10000".to_owned()));
        }
        Ok(Policy {
            protected: self
                .protected
                .iter()
                .map(|a| a.parse::<AccountRef>())
                .collect::<Result<_, _>>()?,
            max_actions_per_hour: self.max_actions_per_hour,
            revoke_sessions: self.revoke_sessions,
            auto_disable: self.auto_disable.parse::<AutoDisable>()?,
            contact: match self.contact {
                Some(c) => crate::auth::analysts::normalize_contacts(&c)?,
                None => None,
            },
            notify: self
                .notify
                .as_deref()
                .map(str::parse::<NotifyMode>)
                .transpose()?
                .unwrap_or_default(),
            webhook_signature: self
                .webhook_signature
                .as_deref()
                .map(str::parse::<SignedString>)
                .transpose()?
                .unwrap_or_default(),
            webhook_url: self
                .webhook_url
                .as_deref()
                .filter(|u| !u.trim().is_empty())
                .map(crate::domain::customer::check_webhook_url)
                .transpose()?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentLinkView {
    pub customer: String,
    /// Send to the customer's global administrator; it works once.
    pub url: String,
    pub expires_at: String,
}

pub(super) async fn in_scope(state: &AppState, caller: &Caller, slug: &str) -> ApiResult<Customer> {
    let unknown = || {
        Problem::of(ProblemKind::CustomerNotFound).detail(format!("there is no customer `{slug}`"))
    };
    let parsed: CustomerSlug = slug.parse().map_err(|_| unknown())?;
    caller.require_customer(&parsed)?;
    state
        .store
        .customer(&parsed)
        .await
        .map_err(Problem::from)?
        .ok_or_else(unknown)
}

#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", operation_id = "list_customers", summary = "Customers in the caller's scope, with their readiness",
    responses((status = 200, body = CustomerList, description = "the customers in the caller's scope"), (status = 401, body = Problem, description = "unauthenticated")),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult {
    let customers = state.store.customers().await.map_err(Problem::from)?;
    let visible = customers
        .iter()
        .filter(|c| caller.analyst.customers.covers(&c.slug))
        .map(CustomerView::from)
        .collect();
    Ok(Json(CustomerList { customers: visible }).into_response())
}

#[utoipa::path(get, path = "/api/v1/customers/{customer}", tag = "customers", operation_id = "get_customer", summary = "One customer and its readiness",
    params(("customer" = String, Path, description = "customer slug")),
    responses((status = 200, body = CustomerView, description = "the customer"), (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "out-of-scope"), (status = 404, body = Problem, description = "customer-not-found")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
) -> ApiResult {
    let customer = in_scope(&state, &caller, &customer).await?;
    Ok(Json(CustomerView::from(&customer)).into_response())
}

#[utoipa::path(post, path = "/api/v1/customers/{customer}/consent-link", tag = "customers",
    summary = "Create the admin-consent link (role admin; one-time code required)",
    params(("customer" = String, Path, description = "customer slug"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    responses((status = 200, body = ConsentLinkView, description = "a signed, single-use admin-consent link"), (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"), (status = 404, body = Problem, description = "customer-not-found"),
        (status = 422, body = Problem, description = "invalid-input: the remediation app is not configured")),
    security(("bearer" = [])))]
pub async fn consent_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let link = issue_consent_link(&state, &caller, &customer, &headers).await?;
    Ok(Json(ConsentLinkView {
        customer: link.customer,
        url: link.url,
        expires_at: link.expires_at.to_string(),
    })
    .into_response())
}

/// A consent link for the customer, for the API and the console alike.
pub(crate) async fn issue_consent_link(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    headers: &HeaderMap,
) -> ApiResult<crate::customers::onboarding::ConsentLink> {
    caller.require(Permission::ManageCustomers)?;
    let customer = in_scope(state, caller, slug).await?;
    caller
        .second_factor(state, headers, Some(&customer.slug))
        .await?;
    state
        .onboarding
        .consent_link(&customer)
        .await
        .map_err(Problem::from)
}

#[utoipa::path(post, path = "/api/v1/customers/{customer}/test", tag = "customers",
    summary = "Test the connection: token, permissions, one Graph read (role admin; one-time code required)",
    params(("customer" = String, Path, description = "customer slug"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    responses((status = 200, body = CustomerView, description = "the customer with the new result; `ready` says whether it passed"),
        (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"), (status = 403, body = Problem, description = "forbidden, out-of-scope"),
        (status = 404, body = Problem, description = "customer-not-found")),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let customer = test_connection(&state, &caller, &customer, &headers).await?;
    Ok(Json(CustomerView::from(&customer)).into_response())
}

/// Runs the customer's connection test, for the API and the console alike; the customer with
/// its new result.
pub(crate) async fn test_connection(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    headers: &HeaderMap,
) -> ApiResult<Customer> {
    caller.require(Permission::ManageCustomers)?;
    let mut customer = in_scope(state, caller, slug).await?;
    caller
        .second_factor(state, headers, Some(&customer.slug))
        .await?;
    customer.connection = Some(
        state
            .onboarding
            .test_connection(&customer, &caller.actor())
            .await
            .map_err(Problem::from)?,
    );
    Ok(customer)
}

#[utoipa::path(get, path = "/api/v1/customers/{customer}/policy", tag = "customers", summary = "A customer's guard rails",
    params(("customer" = String, Path, description = "customer slug")),
    responses((status = 200, body = PolicyView, description = "the customer's policy"), (status = 401, body = Problem, description = "unauthenticated"),
        (status = 403, body = Problem, description = "out-of-scope"), (status = 404, body = Problem, description = "customer-not-found")),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
) -> ApiResult {
    let customer = in_scope(&state, &caller, &customer).await?;
    Ok(Json(PolicyView::from(&customer.policy)).into_response())
}

#[utoipa::path(put, path = "/api/v1/customers/{customer}/policy", tag = "customers",
    summary = "Replace a customer's guard rails (role lead or admin; one-time code required; audited)",
    params(("customer" = String, Path, description = "customer slug"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    request_body = PolicyView,
    responses((status = 200, body = PolicyView, description = "the policy as changed"), (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"), (status = 404, body = Problem, description = "customer-not-found"),
        (status = 422, body = Problem, description = "invalid-input, invalid-body")),
    security(("bearer" = [])))]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<PolicyView>, Problem>,
) -> ApiResult {
    caller.require(Permission::ManagePolicy)?;
    let customer = in_scope(&state, &caller, &customer).await?;
    let JsonBody(body) = body?;
    let policy = change_policy(&state, &caller, &customer, body, &headers).await?;
    Ok(Json(PolicyView::from(&policy)).into_response())
}

/// Replaces the policy of `customer` (in the caller's scope), for the API and the console
/// alike.
pub(crate) async fn change_policy(
    state: &AppState,
    caller: &Caller,
    customer: &Customer,
    asked: PolicyView,
    headers: &HeaderMap,
) -> ApiResult<Policy> {
    caller.require(Permission::ManagePolicy)?;
    let policy = asked.parse().map_err(Problem::invalid_input)?;
    caller
        .second_factor(state, headers, Some(&customer.slug))
        .await?;
    if policy != customer.policy {
        state
            .store
            .update_policy(customer, &policy, &caller.actor())
            .await
            .map_err(Problem::from)?;
    }
    Ok(policy)
}

/// Body of `POST /api/v1/customers/{customer}/webhook-secret`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecretRequest {
    /// Replace the current secret; it keeps working for `falcon.secret_grace_hours`, and every
    /// secret before it stops at once.
    #[serde(default)]
    pub rotate: bool,
    /// Replace the current secret and stop every earlier one at once (a leaked secret).
    #[serde(default)]
    pub revoke: bool,
}

/// A freshly issued webhook secret, shown once, and where it goes in the Falcon Webhook app.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecretView {
    pub customer: String,
    /// The webhook URL to configure in Falcon.
    pub url: String,
    /// The secret, `whsec_` and the base64 of its key bytes (the Standard Webhooks form); the
    /// CrowdStrike app and bearer senders use it whole, as pasted. It is never shown again.
    pub secret: String,
    /// The header Falcon signs in.
    pub header: String,
    pub algorithm: String,
    /// Until when the replaced secret keeps working (rotation), or when it stopped (revocation).
    pub previous_valid_until: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/customers/{customer}/webhook-secret", tag = "customers",
    summary = "Issue, rotate or revoke the customer's Falcon webhook secret (role admin; one-time code required)",
    params(("customer" = String, Path, description = "customer slug"), ("X-Killswitch-OTP" = String, Header, description = "current one-time code")),
    request_body(content = Option<WebhookSecretRequest>, description = "empty for the first secret"),
    responses((status = 200, body = WebhookSecretView, description = "the new secret, shown once"),
        (status = 401, body = Problem, description = "unauthenticated, otp-required, otp-invalid, otp-reused, locked"),
        (status = 403, body = Problem, description = "forbidden, out-of-scope"), (status = 404, body = Problem, description = "customer-not-found"),
        (status = 409, body = Problem, description = "conflict: a secret exists; rotate or revoke it"),
        (status = 422, body = Problem, description = "invalid-body")),
    security(("bearer" = [])))]
pub async fn webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    caller.require(Permission::ManageCustomers)?;
    let customer = in_scope(&state, &caller, &customer).await?;
    let asked: WebhookSecretRequest = super::input::optional_json(&headers, &body)?;
    let issue = SecretIssue::from_flags(asked.rotate, asked.revoke);
    caller
        .second_factor(&state, &headers, Some(&customer.slug))
        .await?;
    let issued = state
        .onboarding
        .issue_webhook_secret(&customer, issue, &caller.actor())
        .await
        .map_err(Problem::from)?;
    Ok(Json(WebhookSecretView {
        customer: customer.slug.to_string(),
        url: issued.url,
        secret: secrecy::ExposeSecret::expose_secret(&issued.secret).to_owned(),
        header: issued.header,
        algorithm: "hmac-sha256".to_owned(),
        previous_valid_until: issued.previous_valid_until.map(|t| t.to_string()),
    })
    .into_response())
}

/// Where Entra sends the customer's administrator after the consent prompt. Anyone can call
/// it, so each client may call it only `onboarding.callbacks_per_minute` times a minute.
pub async fn callback(
    State(state): State<AppState>,
    visitor: ClientAddress,
    Query(params): Query<CallbackParams>,
) -> Response {
    if let Some(ip) = visitor.0 {
        let key = FailureKey::Client(ip);
        if let Some(secs) = state.callbacks.blocked(key) {
            metrics::counter!("killswitch_consent_callbacks_unrecorded_total", "reason" => "rate_limited").increment(1);
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                "Please wait",
                "Too many attempts from this address. Please use the link again in a minute.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
            return response;
        }
        state.callbacks.record_failure(key);
    }
    let actor = Actor::Unauthenticated {
        client_ip: visitor.0.map(|ip| ip.to_string()),
    };
    match state.onboarding.callback(&params, &actor).await {
        Ok(ConsentResult::Granted { customer }) => page(
            StatusCode::OK,
            "Consent recorded",
            &format!(
                "Thank you. The permissions for {customer} are in place and were verified. You can close this page."
            ),
        ),
        Ok(ConsentResult::Failed {
            customer,
            reason,
            advice,
        }) => {
            let who = customer.map(|c| format!(" for {c}")).unwrap_or_default();
            page(
                StatusCode::BAD_REQUEST,
                "Consent not completed",
                &format!("The consent{who} did not complete: {reason}. {advice}"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "consent callback failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "The consent could not be recorded right now. Please use the link again in a few minutes.",
            )
        }
    }
}

/// The client's address (behind trusted proxies, the one they name).
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<ClientAddress, Self::Rejection> {
        Ok(ClientAddress(super::client::client_ip(
            parts,
            &state.settings.server.trusted_proxies,
        )))
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1><p>{m}</p></body></html>",
        t = crate::html::escape(title),
        m = crate::html::escape(message)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
