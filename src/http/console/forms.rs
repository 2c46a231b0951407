//! What the console's forms post, and how a posted form speaks for its request exactly as an API
//! request would: the form's CSRF token and one-time code take the places of the
//! `X-CSRF-Token` and `X-Killswitch-OTP` headers, and only the session cookie says who asks
//! (a stray `Authorization` header is dropped), so a page can do nothing the API does not check.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::{AppState, message, refused};
use crate::http::caller::{CSRF_HEADER, Caller, OTP_HEADER};
use crate::http::problem::Problem;

/// Every console form (a reason, a ticket, a code, a token, a list of protected accounts) is
/// far below this.
const FORM_LIMIT_BYTES: usize = 16 * 1024;

/// A posted form's fields, in the order sent.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    /// Reads an `application/x-www-form-urlencoded` body of at most [`FORM_LIMIT_BYTES`].
    pub async fn read(body: Body) -> Result<Form, Response> {
        let Ok(bytes) = to_bytes(body, FORM_LIMIT_BYTES).await else {
            return Err(message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is too large.",
            ));
        };
        Ok(Form(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    /// The field's value as sent (the first, when sent twice); empty when absent.
    pub fn text(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// The field without surrounding spaces, which a pasted token or code often brings.
    pub fn trimmed(&self, name: &str) -> String {
        self.text(name).trim().to_owned()
    }

    /// The field, or `None` when absent or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.trimmed(name)).filter(|value| !value.is_empty())
    }

    /// Whether a checkbox was ticked (a browser sends an unticked one not at all).
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    /// The one-time code field, `code`.
    pub fn code(&self) -> String {
        self.trimmed("code")
    }
}

/// The analyst a posted form speaks for, checked as an API request would be (the session, its
/// CSRF token from the form's `csrf_token`); the form's `code` is put where
/// [`Caller::second_factor`] reads it, in `parts.headers`.
pub(super) async fn form_caller(
    state: &AppState,
    parts: &mut Parts,
    form: &Form,
) -> Result<Caller, Problem> {
    parts.headers.remove(AUTHORIZATION);
    for (name, value) in [
        (CSRF_HEADER, form.text("csrf_token")),
        (OTP_HEADER, form.code().as_str()),
    ] {
        parts.headers.remove(name);
        if let Ok(value) = HeaderValue::from_str(value) {
            parts.headers.insert(name, value);
        }
    }
    Caller::from_request_parts(parts, state).await
}

/// A posted console form and the analyst it speaks for, with the headers an API operation
/// reads its code from. As an extractor, a refused form is answered with the page saying why.
pub(super) struct Posted {
    pub caller: Caller,
    pub form: Form,
    pub headers: HeaderMap,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Posted, Response> {
        let (mut parts, body) = request.into_parts();
        let form = Form::read(body).await?;
        let caller = form_caller(state, &mut parts, &form)
            .await
            .map_err(|problem| form_refused(&problem))?;
        Ok(Posted {
            caller,
            form,
            headers: parts.headers,
        })
    }
}

/// A form whose sender is refused; a session that ended while the page was open is said in
/// words (the form was not sent) rather than by a silent trip to the sign-in page.
fn form_refused(problem: &Problem) -> Response {
    if problem.kind.ends_with("/unauthenticated") {
        return super::message_html(
            StatusCode::UNAUTHORIZED,
            "Your session has ended",
            r#"<p>Nothing was sent: your session ended while the page was open.</p><p><a href="/login">Sign in again</a>, then repeat what you were doing.</p>"#,
        );
    }
    refused(problem)
}
