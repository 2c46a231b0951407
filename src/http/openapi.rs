//! The OpenAPI 3.1 description of the API, generated from the handlers.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{actions, audit, customers, falcon};

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
        audit::public_key
    ),
    modifiers(&BearerAuth),
    tags((name = "accounts"), (name = "actions"), (name = "customers"), (name = "falcon"), (name = "audit"))
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

pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
