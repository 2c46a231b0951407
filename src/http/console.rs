//! The browser side of single sign-on: `/login` sends the analyst to the OpenID provider,
//! `/auth/callback` turns the provider's answer into a console session (cookie `ks_session`,
//! HttpOnly, SameSite=Lax), `/logout` ends it, and `/` is a minimal, script-free console page.
//!
//! A sign-in is bound to the browser that started it: `/login` seals the sign-in (state, nonce,
//! PKCE verifier, start time) into a short-lived, HttpOnly `ks_login` cookie, and the callback
//! must bring it back with the same `state`, so nobody can plant their own sign-in in someone
//! else's browser, and no server memory is spent on sign-ins that never finish.

use std::net::IpAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use super::caller::{CSRF_HEADER, Caller, SESSION_COOKIE, cookie};
use super::limiter::FailureKey;
use super::problem::{Problem, ProblemKind};
use crate::audit::AuditEvent;
use crate::audit::event::{Actor, AuthMethod, RequestContext};
use crate::auth::analysts::AnalystRecord;
use crate::auth::oidc::{LOGIN_TTL, OidcError, PendingLogin};
use crate::auth::tokens;
use crate::domain::ChainId;
use crate::error::Error;
use crate::html::escape;
use crate::store::SessionRecord;
use crate::time::Timestamp;

/// Holds the `state` of the sign-in this browser started, for the callback to compare.
const LOGIN_COOKIE: &str = "ks_login";
const CALLBACK_PATH: &str = "/auth/callback";
/// The form field the sign-out form carries the CSRF token in (scripts use the header).
const CSRF_FIELD: &str = "csrf_token";

mod accounts;
mod actions;
mod admin;
mod audit;
mod customers;
mod detections;
mod forms;
mod frame;
mod home;
mod sign_in;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(sign_in::page).post(sign_in::submit))
        .route("/login/sso", get(login))
        .route(CALLBACK_PATH, get(callback))
        .route("/logout", post(logout))
        .route(STYLESHEET_PATH, get(stylesheet))
        .route(SCRIPT_PATH, get(script))
        .route("/customers/{customer}", get(customers::customer_page))
        .route(
            "/customers/{customer}/accounts",
            get(customers::find_account),
        )
        .route("/customers/{customer}/test", post(customers::test))
        .route(
            "/customers/{customer}/consent-link",
            post(customers::consent_link),
        )
        .route("/customers/{customer}/policy", post(customers::policy))
        .route(
            "/customers/{customer}/accounts/{account}",
            get(accounts::account_page),
        )
        .route(
            "/customers/{customer}/accounts/{account}/disable",
            post(accounts::disable),
        )
        .route(
            "/customers/{customer}/accounts/{account}/enable",
            post(accounts::enable),
        )
        .route("/actions", get(actions::actions_page))
        .route("/actions/{id}", get(accounts::action_page))
        .route("/admin", get(admin::page))
        .route("/admin/customers", post(admin::add_customer))
        .route("/admin/analysts", post(admin::enroll))
        .route("/admin/analysts/{id}", post(admin::change_analyst))
        .route("/audit", get(audit::page))
        .route("/audit/export", post(audit::export))
        .route("/detections", get(detections::queue))
        .route("/detections/{id}", get(detections::detection_page))
        .route("/detections/{id}/approve", post(detections::approve))
        .route("/detections/{id}/dismiss", post(detections::dismiss))
}

/// The console's stylesheet and script, served by killswitch itself so the pages' policy can
/// stay `style-src 'self'; script-src 'self'`.
const STYLESHEET_PATH: &str = "/assets/console.css";
const SCRIPT_PATH: &str = "/assets/console.js";

async fn stylesheet() -> Response {
    asset(
        include_str!("console/console.css"),
        "text/css; charset=utf-8",
    )
}

async fn script() -> Response {
    asset(
        include_str!("console/console.js"),
        "text/javascript; charset=utf-8",
    )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// An address nothing answers: a problem for the API's paths, a page for a browser's.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return Problem::not_found().into_response();
    }
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address. Start again from the home page, /.",
    )
}

/// Where a request came from, for the audit log and the failure limiter.
struct Visitor {
    ip: Option<IpAddr>,
    context: RequestContext,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Visitor, Self::Rejection> {
        let ip = super::client::client_ip(parts, &state.settings.server.trusted_proxies);
        Ok(Visitor {
            ip,
            context: super::authn::request_context(parts, ip),
        })
    }
}

/// The home page of a signed-in analyst; otherwise a sign-in link.
async fn home(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    headers: HeaderMap,
) -> Response {
    match caller {
        Ok(caller) => home::page(&state, &caller).await,
        Err(problem) if problem.status == 401 => signed_out(&state, &headers),
        Err(problem) => refused(&problem),
    }
}

fn signed_out(state: &AppState, headers: &HeaderMap) -> Response {
    let body = if state.oidc.is_some() {
        r#"<p>You are not signed in.</p>
<p><a href="/login">Sign in</a> with your organisation's single sign-on, or with your API token and one-time code.</p>"#
    } else {
        r#"<p>You are not signed in.</p>
<p><a href="/login">Sign in</a> with your API token and one-time code, or use the API with the token (<code>Authorization: Bearer ks_…</code>); it is described in <a href="/openapi.json">openapi.json</a>.</p>"#
    };
    let mut response = page(StatusCode::OK, "killswitch console", "", body);
    // A cookie that no longer names a session is cleared.
    if cookie(headers, SESSION_COOKIE).is_some() {
        append_cookie(&mut response, &clear_cookie(state, SESSION_COOKIE, "/"));
    }
    response
}

/// A refused request as a page: the sign-in page for a missing or ended session, 404 for a
/// customer outside the analyst's scope (the same page as for one that does not exist, as its
/// existence is that customer's information), the problem's own words otherwise.
fn refused(problem: &Problem) -> Response {
    match problem.status {
        401 if problem.kind.ends_with("/unauthenticated") => see_other("/login"),
        _ if ends_the_request(problem) => message(
            StatusCode::NOT_FOUND,
            "No such customer",
            "There is no such customer among yours.",
        ),
        status => {
            let mut response = message(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                &problem.title,
                &problem_text(problem),
            );
            if let Some(secs) = problem.retry_after {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

/// Whether a problem refuses the request itself (no session, a customer that is not the
/// analyst's), so the page it was sent from cannot be shown again either.
fn ends_the_request(problem: &Problem) -> bool {
    ["/unauthenticated", "/out-of-scope", "/customer-not-found"]
        .iter()
        .any(|kind| problem.kind.ends_with(kind))
}

/// The status a page answers a problem with.
fn status_of(problem: &Problem) -> StatusCode {
    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A problem in one sentence for a page: its title, and its detail when it has one.
fn problem_text(problem: &Problem) -> String {
    match &problem.detail {
        Some(detail) => format!("{}: {detail}.", problem.title),
        None => format!("{}.", problem.title),
    }
}

/// The CSRF token a page's forms carry: the session's (empty for an API token's request,
/// whose forms the session check refuses anyway).
fn csrf_of(caller: &Caller) -> String {
    caller
        .session
        .as_ref()
        .map(|s| s.csrf_token.clone())
        .unwrap_or_default()
}

/// Minutes are what a person compares at a glance; the API has the full times.
fn shown(time: &Timestamp) -> String {
    time.as_datetime().format("%Y-%m-%d %H:%M").to_string()
}

/// What the sealed sign-in cookie is bound to, so it opens nowhere else.
const LOGIN_SEAL_CONTEXT: &str = "oidc-login";

/// Sends the browser to the provider (303), with the sign-in sealed into a cookie.
async fn login(State(state): State<AppState>) -> Response {
    let Some(oidc) = &state.oidc else {
        return not_configured();
    };
    let redirect = match oidc.login().await {
        Ok(redirect) => redirect,
        Err(e) => return sign_in_failed(&e),
    };
    let sealed = serde_json::to_vec(&redirect.pending)
        .map_err(|e| Error::Internal(format!("sign-in state: {e}")))
        .and_then(|json| state.cipher.seal(&json, LOGIN_SEAL_CONTEXT));
    let sealed = match sealed {
        Ok(sealed) => sealed,
        Err(e) => return error_page(&e),
    };
    let mut response = see_other(redirect.url.as_str());
    // The path the browser sees, with any prefix of server.public_url.
    let binding = set_cookie(
        &state,
        LOGIN_COOKIE,
        &sealed,
        oidc.redirect_uri().path(),
        LOGIN_TTL.as_secs(),
    );
    append_cookie(&mut response, &binding);
    response
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's answer: a code to exchange, or an error to explain.
async fn callback(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return not_configured();
    };
    let cleared = |mut response: Response| {
        append_cookie(
            &mut response,
            &clear_cookie(&state, LOGIN_COOKIE, oidc.redirect_uri().path()),
        );
        response
    };
    if let Some(error) = params.error.as_deref() {
        return cleared(provider_error(error, params.error_description.as_deref()));
    }
    let (Some(code), Some(sign_in)) = (params.code.as_deref(), params.state.as_deref()) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider's answer has no code or no state. Start again at /login.",
        );
    };
    let pending = match bound_sign_in(&state, &headers, sign_in) {
        Ok(pending) => pending,
        Err(unbound) => return cleared(unbound.page()),
    };
    let who = match oidc.finish(code, pending).await {
        Ok(who) => who,
        Err(OidcError::Refused(reason)) => {
            let reason = format!("single sign-on refused: {reason}");
            return cleared(refuse(&state, &visitor, reason).await);
        }
        Err(e) => {
            metrics::counter!("killswitch_authentication_failures_total", "kind" => "sign_in")
                .increment(1);
            tracing::info!(reason = ?e.to_string(), "single sign-on not completed");
            return cleared(sign_in_failed(&e));
        }
    };
    cleared(start_session(&state, &visitor, &headers, &who, oidc.session_ttl()).await)
}

/// The page for an error the provider sent back (the person cancelled, the provider failed).
fn provider_error(error: &str, description: Option<&str>) -> Response {
    let detail = match description {
        Some(description) => format!(
            "The identity provider did not sign you in: {} ({}).",
            escape(description),
            escape(error)
        ),
        None => format!(
            "The identity provider did not sign you in: {}.",
            escape(error)
        ),
    };
    let status = if error == "access_denied" {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    message_html(
        status,
        "Sign-in failed",
        &format!(r#"<p>{detail}</p><p><a href="/login">Try again</a>.</p>"#),
    )
}

/// Why a callback's sign-in is not this browser's to finish.
enum Unbound {
    /// No sealed sign-in, one that does not open, or another sign-in's.
    Foreign,
    Expired,
}

impl Unbound {
    fn page(self) -> Response {
        match self {
            Unbound::Foreign => message_html(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                r#"<p>This sign-in was not started in this browser, or took too long. Please start again.</p><p><a href="/login">Sign in</a></p>"#,
            ),
            Unbound::Expired => sign_in_failed(&OidcError::UnknownState),
        }
    }
}

/// The sign-in this browser started, from its sealed cookie, if it is the one the provider
/// answered (`state`) and not expired.
fn bound_sign_in(
    state: &AppState,
    headers: &HeaderMap,
    sign_in: &str,
) -> Result<PendingLogin, Unbound> {
    let pending: PendingLogin = cookie(headers, LOGIN_COOKIE)
        .and_then(|sealed| state.cipher.open(sealed, LOGIN_SEAL_CONTEXT).ok())
        .and_then(|json| serde_json::from_slice(json.expose_secret()).ok())
        .ok_or(Unbound::Foreign)?;
    if !bool::from(pending.state.as_bytes().ct_eq(sign_in.as_bytes())) {
        return Err(Unbound::Foreign);
    }
    if pending.expired(chrono::Utc::now().timestamp()) {
        return Err(Unbound::Expired);
    }
    Ok(pending)
}

/// Starts a console session for the analyst the provider vouched for (`who`), or refuses and
/// records why.
async fn start_session(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
    who: &str,
    ttl: std::time::Duration,
) -> Response {
    let analyst = match state.auth.by_email(who).await {
        Ok(found) => found.filter(AnalystRecord::is_active),
        Err(e) => return error_page(&e),
    };
    let Some(analyst) = analyst else {
        let shown = super::authn::shown_identity(who);
        let reason = format!("single sign-on for an unknown or disabled analyst: {shown}");
        let refused = refuse(state, visitor, reason).await;
        if refused.status() == StatusCode::TOO_MANY_REQUESTS {
            return refused;
        }
        return message(
            StatusCode::FORBIDDEN,
            "Not a killswitch analyst",
            &format!(
                "The identity provider signed you in as {shown}, but no active killswitch analyst has that e-mail address. Ask a killswitch administrator to enroll you."
            ),
        );
    };
    // A fresh session id on every sign-in; a session this browser had before ends.
    if let Some(old) = cookie(headers, SESSION_COOKIE)
        && let Err(e) = state.store.delete_session(&tokens::hash(old)).await
    {
        tracing::warn!(error = %e, "cannot end the previous console session");
    }
    let (id, session) = match new_session(&analyst, ttl, AuthMethod::Oidc) {
        Ok(made) => made,
        Err(e) => return error_page(&e),
    };
    if let Err(e) = state.store.create_session(&session).await {
        return error_page(&e);
    }
    tracing::info!(analyst = %analyst.id, "console session started after single sign-on");
    let mut response = see_other("/");
    append_cookie(
        &mut response,
        &set_cookie(state, SESSION_COOKIE, &id, "/", ttl.as_secs()),
    );
    response
}

/// A new session for the analyst: the cookie value, and the record that stores only its hash.
fn new_session(
    analyst: &AnalystRecord,
    ttl: std::time::Duration,
    method: AuthMethod,
) -> Result<(String, SessionRecord), Error> {
    let id = URL_SAFE_NO_PAD.encode(crate::secrets::random_bytes::<32>()?);
    let csrf = URL_SAFE_NO_PAD.encode(crate::secrets::random_bytes::<32>()?);
    let now = Timestamp::now();
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|e| Error::Internal(format!("session lifetime: {e}")))?;
    let session = SessionRecord {
        id_hash: tokens::hash(&id),
        analyst_id: analyst.id.clone(),
        csrf_token: csrf,
        created_at: now.to_string(),
        expires_at: Timestamp::from_datetime(now.as_datetime() + ttl).to_string(),
        auth_method: SessionRecord::method_text(method).to_owned(),
    };
    Ok((id, session))
}

/// Ends the session. Like every state change made with the session cookie it needs the CSRF
/// token: in the `X-CSRF-Token` header, or (for the console's own sign-out form, which cannot
/// set headers) in the `csrf_token` form field.
async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        let hash = tokens::hash(value);
        let session = match state.store.session(&hash, Timestamp::now()).await {
            Ok(session) => session,
            Err(e) => return error_page(&e),
        };
        if let Some(session) = session {
            let field = url::form_urlencoded::parse(&body)
                .find(|(key, _)| key == CSRF_FIELD)
                .map(|(_, value)| value.into_owned());
            let sent = headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes().to_vec())
                .or_else(|| field.map(String::into_bytes))
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
                return Problem::of(ProblemKind::Csrf)
                    .detail(
                        "requests made with the console session must carry the X-CSRF-Token header",
                    )
                    .into_response();
            }
            if let Err(e) = state.store.delete_session(&hash).await {
                return error_page(&e);
            }
            tracing::info!(analyst = %session.analyst_id, "console session ended");
        }
    }
    let mut response = see_other("/");
    append_cookie(&mut response, &clear_cookie(&state, SESSION_COOKIE, "/"));
    response
}

/// A sign-in the provider vouched for but killswitch refuses: counted against the client
/// address and recorded in the system chain, unless the address has used up its failures (then
/// 429, and nothing more is written). The page to show.
async fn refuse(state: &AppState, visitor: &Visitor, reason: String) -> Response {
    tracing::info!(reason = ?reason, "single sign-on refused");
    if let Some(secs) = visitor
        .ip
        .and_then(|ip| state.failures.blocked(FailureKey::Client(ip)))
    {
        let mut response = message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins",
            "This address failed to sign in too often. Wait a few minutes, then try again.",
        );
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    if let Some(ip) = visitor.ip {
        state.failures.record_failure(FailureKey::Client(ip));
    }
    // The reason may quote the provider's answer: one clean, bounded line in the audit log.
    let event = AuditEvent::AuthenticationFailed {
        analyst_id: None,
        reason: crate::domain::clean_line(&reason, 500),
        request: Some(visitor.context.clone()),
    };
    let actor = Actor::Unauthenticated {
        client_ip: visitor.context.client_ip.clone(),
    };
    if let Err(e) = state.store.append(&ChainId::System, &actor, &event).await {
        tracing::error!(error = %e, "cannot record a refused sign-in");
    }
    message(
        StatusCode::FORBIDDEN,
        "Sign-in refused",
        "The identity provider's answer did not pass killswitch's checks, so you are not signed in.",
    )
}

fn sign_in_failed(error: &OidcError) -> Response {
    let (status, text) = match error {
        OidcError::Unavailable(reason) => {
            tracing::warn!(reason = ?reason, "single sign-on provider unavailable");
            (
                StatusCode::BAD_GATEWAY,
                "The identity provider cannot be reached right now. Try again in a minute.",
            )
        }
        OidcError::UnknownState => (
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or was already used. Please start again.",
        ),
        OidcError::Refused(_) | OidcError::Unverified(_) => (
            StatusCode::FORBIDDEN,
            "The identity provider's answer did not pass killswitch's checks.",
        ),
    };
    message_html(
        status,
        "Sign-in failed",
        &format!(r#"<p>{text}</p><p><a href="/login">Sign in</a></p>"#),
    )
}

fn not_configured() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Single sign-on is not configured",
        "This killswitch server has no OpenID provider configured; use an API token.",
    )
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(LOCATION, value);
        }
        Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn secure(state: &AppState) -> &'static str {
    if state.settings.server.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: u64) -> String {
    format!(
        "{name}={value}; HttpOnly; SameSite=Lax; Path={path}; Max-Age={max_age}{}",
        secure(state)
    )
}

/// A cookie no other site's request carries, not even a top-level navigation.
fn set_strict_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) -> String {
    format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{}",
        secure(state)
    )
}

fn clear_cookie(state: &AppState, name: &str, path: &str) -> String {
    set_cookie(state, name, "", path, 0)
}

fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

/// A short page whose text is escaped here.
fn message(status: StatusCode, title: &str, text: &str) -> Response {
    message_html(status, title, &format!("<p>{}</p>", escape(text)))
}

fn message_html(status: StatusCode, title: &str, body: &str) -> Response {
    page(status, title, "", body)
}

/// A page rendered from its template (askama escapes every value), with the console's headers.
fn html_page(status: StatusCode, page: &impl askama::Template) -> Response {
    match page.render() {
        Ok(html) => with_page_headers((status, html).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a console page");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page could not be shown; the cause is logged.",
            )
        }
    }
}

/// A page for an error: its status, and the problem's title and detail as plain text.
fn error_page(error: &Error) -> Response {
    let problem = Problem::from(error);
    let status = status_of(&problem);
    let text = problem.detail.unwrap_or_else(|| problem.title.clone());
    message(status, &problem.title, &text)
}

/// A complete page: no scripts, only killswitch's own stylesheet, not cached, not framed.
fn page(status: StatusCode, title: &str, head: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · killswitch</title>
{head}
<link rel="stylesheet" href="{STYLESHEET_PATH}">
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
    );
    with_page_headers((status, html).into_response())
}

fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
