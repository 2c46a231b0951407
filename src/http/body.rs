//! The one JSON request body every route takes, refused by one rule: 415 `invalid-body` without
//! a JSON content type, 400 when the bytes are not JSON, 422 when it is JSON of the wrong shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

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

/// The same rule for a body read by hand (an optional one): 400 when the bytes are not JSON, 422
/// when it is JSON of the wrong shape.
pub fn refusal_of_parse(error: &serde_json::Error) -> Problem {
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
