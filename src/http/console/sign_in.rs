//! The sign-in page: single sign-on when an OpenID provider is configured, and always the form
//! for an API token and the current one-time code, for deployments without one. The form's
//! token and code go through exactly the checks an API request's do (the same limiter, the same
//! records of failures, each code step accepted once), so the page adds no way in.
//!
//! The form carries a CSRF token that must match the `ks_form` cookie set with the page
//! (SameSite=Strict), so another site cannot sign a browser in to someone else's session.

use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::forms::Form;
use super::{
    AppState, append_cookie, clear_cookie, error_page, html_page, new_session, problem_text,
    see_other, set_cookie, set_strict_cookie,
};
use crate::audit::event::AuthMethod;
use crate::http::caller::{Caller, OTP_HEADER, SESSION_COOKIE, cookie};
use crate::http::problem::Problem;

/// The double-submit cookie of the sign-in form.
const FORM_COOKIE: &str = "ks_form";
/// How long a sign-in page stays usable.
const FORM_TTL_SECS: u64 = 3600;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    frame: Option<super::frame::Frame>,
    single_sign_on: bool,
    csrf_token: &'a str,
    refusal: Option<&'a str>,
}

/// `GET /login`: the page, with a fresh form token in the page and in its cookie.
pub async fn page(State(state): State<AppState>) -> Response {
    let form_token = match crate::secrets::random_bytes::<32>() {
        Ok(bytes) => URL_SAFE_NO_PAD.encode(bytes),
        Err(e) => return error_page(&e),
    };
    let mut response = sign_in_page(&state, StatusCode::OK, &form_token, None);
    let binding = set_strict_cookie(&state, FORM_COOKIE, &form_token, "/login", FORM_TTL_SECS);
    append_cookie(&mut response, &binding);
    response
}

fn sign_in_page(
    state: &AppState,
    status: StatusCode,
    form_token: &str,
    refusal: Option<&str>,
) -> Response {
    html_page(
        status,
        &SignInPage {
            frame: None,
            single_sign_on: state.oidc.is_some(),
            csrf_token: form_token,
            refusal,
        },
    )
}

/// `POST /login`: the token and code checked as an API request's, then a console session.
pub async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let form = match Form::read(body).await {
        Ok(form) => form,
        Err(page) => return page,
    };
    let bound = cookie(&parts.headers, FORM_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let sent = form.text("csrf_token");
    if bound.is_empty() || !bool::from(bound.as_bytes().ct_eq(sent.as_bytes())) {
        return sign_in_refused(
            &state,
            "",
            StatusCode::FORBIDDEN,
            "This sign-in page has expired. Reload it and sign in again.",
        );
    }
    // The form's token takes the place of an Authorization header, and nothing else the
    // browser holds (an old session) speaks for the request.
    parts.headers.remove(COOKIE);
    let bearer = HeaderValue::from_str(&format!("Bearer {}", form.trimmed("token")))
        .unwrap_or(HeaderValue::from_static("Bearer -"));
    parts.headers.insert(AUTHORIZATION, bearer);
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) if caller.method == AuthMethod::ApiToken => caller,
        Ok(_) => {
            let text = "This form takes an API token; use single sign-on for the identity provider's tokens.";
            return sign_in_refused(&state, &bound, StatusCode::UNAUTHORIZED, text);
        }
        Err(problem) => return refused_by(&state, &bound, &problem),
    };
    let mut code = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&form.code()) {
        code.insert(OTP_HEADER, value);
    }
    if let Err(problem) = caller.second_factor(&state, &code, None).await {
        return refused_by(&state, &bound, &problem);
    }
    start_session(&state, &caller).await
}

async fn start_session(state: &AppState, caller: &Caller) -> Response {
    let ttl = state.settings.oidc.session_ttl;
    let (id, session) = match new_session(&caller.record, ttl, AuthMethod::ApiToken) {
        Ok(made) => made,
        Err(e) => return error_page(&e),
    };
    if let Err(e) = state.store.create_session(&session).await {
        return error_page(&e);
    }
    tracing::info!(analyst = %caller.analyst.id, "console session started with an API token and a one-time code");
    let mut response = see_other("/");
    append_cookie(
        &mut response,
        &set_cookie(state, SESSION_COOKIE, &id, "/", ttl.as_secs()),
    );
    append_cookie(&mut response, &clear_cookie(state, FORM_COOKIE, "/login"));
    response
}

/// The page again, saying why the sign-in was refused in the words the API uses.
fn refused_by(state: &AppState, form_token: &str, problem: &Problem) -> Response {
    let status = super::status_of(problem);
    let mut response = sign_in_refused(state, form_token, status, &problem_text(problem));
    if let Some(secs) = problem.retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn sign_in_refused(state: &AppState, form_token: &str, status: StatusCode, text: &str) -> Response {
    sign_in_page(state, status, form_token, Some(text))
}
