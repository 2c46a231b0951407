//! The answers a route gives because of what kind of route it is, not what it does: every
//! authenticated route can answer 401 and 429, every route that reads a JSON body answers a
//! bad one by the body rule, every query string and account reference is checked. Handlers list
//! their own answers; this adds the shared ones, so the document cannot forget one on one route.
//! Problems are served as `application/problem+json` (RFC 9457), and documented so. A path's
//! `{customer}` is a customer slug, `{account}` an account reference and `Idempotency-Key` a
//! client's key wherever they appear.

use utoipa::Modify;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

use super::schemas;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One shared answer: the status and the problem types behind it.
struct Answer {
    status: &'static str,
    kinds: &'static str,
}

/// Whoever calls with a token or session: the credential or code may fail, repeated failures
/// are held back, and the credential is looked up (and a refusal recorded) in the database.
const AUTHENTICATED: [Answer; 3] = [
    Answer {
        status: "401",
        kinds: "unauthenticated, locked",
    },
    Answer {
        status: "429",
        kinds: "too-many-failures: wait for `Retry-After` seconds",
    },
    Answer {
        status: "503",
        kinds: "audit-unavailable: the database cannot be reached",
    },
];

/// The body rule (src/http/input.rs), the same on every route that reads JSON.
const JSON_BODY: [Answer; 4] = [
    Answer {
        status: "400",
        kinds: "invalid-body: the body is not JSON",
    },
    Answer {
        status: "413",
        kinds: "body-too-large",
    },
    Answer {
        status: "415",
        kinds: "invalid-body: no `Content-Type: application/json`",
    },
    Answer {
        status: "422",
        kinds: "invalid-body: JSON of the wrong shape; invalid-input",
    },
];

/// A query parameter or an account reference that does not parse.
const CHECKED_INPUT: [Answer; 1] = [Answer {
    status: "422",
    kinds: "invalid-input",
}];

pub struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                describe_parameters(operation);
                add_shared(path, operation);
                serve_problems_as_problem_json(operation);
            }
        }
    }
}

fn add_shared(path: &str, operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_query = operation.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Query),
        RefOr::Ref(_) => false,
    });
    let mut shared: Vec<&Answer> = Vec::new();
    if authenticated {
        shared.extend(&AUTHENTICATED);
        // Only authenticated routes read JSON through the body rule; the webhook reads its raw
        // bytes, whose signature must be checked before anything parses them.
        if operation.request_body.is_some() {
            shared.extend(&JSON_BODY);
        }
    }
    if has_query || path.contains("{account}") {
        shared.extend(&CHECKED_INPUT);
    }
    for answer in shared {
        add_answer(operation, answer);
    }
}

fn describe_parameters(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
            (ParameterIn::Path, "customer") => schemas::customer_slug(),
            (ParameterIn::Path, "account") => schemas::account(),
            (ParameterIn::Header, "Idempotency-Key") => schemas::idempotency_key(),
            _ => continue,
        };
        parameter.schema = Some(schema.into());
    }
}

/// Adds `answer` to the operation, or its problem types to the description already there.
fn add_answer(operation: &mut Operation, answer: &Answer) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(answer.status) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(answer.kinds) {
                response.description = format!("{}; {}", response.description, answer.kinds);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut response = Response::new(answer.kinds);
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                Content::new(Some(Ref::from_schema_name("Problem"))).into(),
            );
            responses.insert(answer.status.to_owned(), RefOr::T(response));
        }
    }
}

/// A handler's `body = Problem` is documented as `application/json`; it is served as
/// `application/problem+json`, so that is what the document says.
fn serve_problems_as_problem_json(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_problem = |content: &RefOr<Content>| match content {
            RefOr::T(content) => {
                matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
            }
            RefOr::Ref(_) => false,
        };
        if response
            .content
            .get("application/json")
            .is_some_and(is_problem)
            && let Some(content) = response.content.shift_remove("application/json")
        {
            response.content.insert(PROBLEM_JSON.to_owned(), content);
        }
    }
}
