//! The OpenAPI 3.1 description of the API, generated from the handlers.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem::PROBLEM_TYPES;
use super::{actions, audit, customers, falcon, notifications};

pub mod schemas;
mod shared;
pub use shared::PROBLEM_JSON;
use shared::SharedAnswers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "killswitch",
        description = "MFA-gated remediation of compromised Entra ID accounts. Errors are RFC 9457 problem+json; \
                       every state change needs a fresh one-time code in X-Killswitch-OTP."
    ),
    paths(
        actions::get_account,
        actions::disable,
        actions::enable,
        actions::get_action,
        actions::list_actions,
        customers::list,
        customers::get,
        customers::consent_link,
        customers::test,
        customers::get_policy,
        customers::put_policy,
        customers::webhook_secret,
        falcon::webhook,
        falcon::list,
        falcon::get,
        falcon::approve,
        falcon::dismiss,
        audit::export,
        audit::public_key,
        notifications::list
    ),
    modifiers(&BearerAuth, &ProblemTypes, &SharedAnswers),
    tags((name = "accounts"), (name = "actions"), (name = "customers"), (name = "falcon"), (name = "audit"), (name = "notifications"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an analyst's API token (ks_…), or a JWT from the configured OpenID provider"))
                    .build(),
            ),
        );
    }
}

/// The problem `type`s the service answers, from the one table of problem kinds: the schema
/// lists each with its title and usual status, so a client can branch on them.
struct ProblemTypes;

impl Modify for ProblemTypes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // `Problem` is its fixed members together with its flattened extension members.
        let parts = match components.schemas.get_mut("Problem") {
            Some(RefOr::T(Schema::AllOf(all))) => all.items.iter_mut().collect(),
            Some(object) => vec![object],
            None => return,
        };
        let Some(kind) = parts.into_iter().find_map(|part| match part {
            RefOr::T(Schema::Object(object)) => match object.properties.get_mut("type") {
                Some(RefOr::T(Schema::Object(kind))) => Some(kind),
                _ => None,
            },
            _ => None,
        }) else {
            return;
        };
        let rows = PROBLEM_TYPES.iter();
        kind.enum_values = Some(
            rows.clone()
                .map(|row| format!("/problems/{}", row.slug).into())
                .collect(),
        );
        let listed: Vec<String> = rows
            .map(|row| format!("`{}`: {} ({})", row.slug, row.title, row.status.as_u16()))
            .collect();
        kind.description = Some(format!(
            "Stable identifier of the problem type, `/problems/<name>`: {}.",
            listed.join("; ")
        ));
    }
}

pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
