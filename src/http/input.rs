//! What a request brings, each refused by one rule on every route. A JSON body: 415
//! `invalid-body` without a JSON content type, 400 when the bytes are not JSON, 422 when it is
//! JSON of the wrong shape. A query string: 422 `invalid-input` naming the parameter, as for any
//! other value that does not parse.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::problem::{Problem, ProblemKind};

/// A request body of type `T`. Handlers take `Result<JsonBody<T>, Problem>` and unwrap it where the
/// body's turn comes, so scope and role refusals keep answering first.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| JsonBody(value))
            .map_err(refusal)
    }
}

fn refusal(rejection: JsonRejection) -> Problem {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    invalid_body(status, rejection.body_text())
}

/// A body that may be left out: empty is `T::default()`; otherwise the same rule as
/// [`JsonBody`], 415 without a JSON content type included.
pub fn optional_json<T: DeserializeOwned + Default>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, Problem> {
    if body.is_empty() {
        return Ok(T::default());
    }
    if !says_json(headers) {
        return Err(invalid_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`".to_owned(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| refusal_of_parse(&e))
}

/// `application/json` or `application/…+json`, with any parameters, as axum's `Json` reads it.
fn says_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(media) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// 400 when the bytes are not JSON, 422 when it is JSON of the wrong shape.
fn refusal_of_parse(error: &serde_json::Error) -> Problem {
    let status = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            StatusCode::BAD_REQUEST
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    invalid_body(status, error.to_string())
}

fn invalid_body(status: StatusCode, detail: String) -> Problem {
    Problem::of(ProblemKind::InvalidBody)
        .status(status)
        .detail(detail)
}

/// A query string of type `T`; anything that does not fit it is 422 `invalid-input`.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| {
                // "Failed to deserialize query string: limit: …": the part after the prefix.
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Problem::invalid_input(format!("the query string does not fit: {detail}"))
            })
    }
}

/// How many items a listing returns: 1 to 1000, 100 when the request does not say.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
pub struct PageLimit(u32);

impl PageLimit {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 1000;
    const DEFAULT: u32 = 100;

    /// The limit asked for, or the default.
    pub fn or_default(limit: Option<PageLimit>) -> u32 {
        limit.map_or(Self::DEFAULT, |l| l.0)
    }
}

impl TryFrom<i64> for PageLimit {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|n| (Self::MIN..=Self::MAX).contains(n))
            .map(PageLimit)
            .ok_or_else(|| format!("`limit` takes {} to {}, not {n}", Self::MIN, Self::MAX))
    }
}
