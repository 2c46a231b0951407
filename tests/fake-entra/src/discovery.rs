//! `GET /{tenant}/v2.0/.well-known/openid-configuration` and its `jwks_uri`.
//!
//! The document has the shape of Entra's v2.0 metadata, with every URL pointing at the fake so
//! a client that discovers its token endpoint never leaves loopback.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::aad::{self, AadCtx};
use crate::state::Shared;

/// Which discovery document was asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Doc {
    OpenIdConfiguration,
    Keys,
}

/// Multi-tenant aliases Entra serves metadata for, with `{tenantid}` left as a template.
const ALIASES: &[&str] = &["common", "organizations", "consumers"];

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    tenant_segment: &str,
    doc: Doc,
    ctx: &AadCtx,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ctx.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            &format!("The endpoint only accepts GET requests. Received a {method} request."),
        );
    }
    let tenant = if ALIASES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(tenant_segment))
    {
        "{tenantid}".to_owned()
    } else {
        match shared.state.lock().resolve_tenant(tenant_segment) {
            Some(t) => t.id.to_string(),
            // Entra answers metadata requests for unknown tenants with `invalid_tenant`.
            None => {
                return ctx.error(
                    StatusCode::BAD_REQUEST,
                    "invalid_tenant",
                    90002,
                    &aad::tenant_not_found(tenant_segment),
                );
            }
        }
    };
    // A template tenant keeps the segment the client used in its endpoint URLs.
    let path_tenant = if tenant == "{tenantid}" {
        tenant_segment.to_owned()
    } else {
        tenant.clone()
    };
    let base = &shared.base_url;
    match doc {
        Doc::Keys => ctx.json(StatusCode::OK, &json!({"keys": []})),
        Doc::OpenIdConfiguration => ctx.json(
            StatusCode::OK,
            &json!({
                "token_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/{path_tenant}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/{tenant}/v2.0"),
                "request_uri_parameter_supported": false,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/devicecode"),
                "http_logout_supported": true,
                "frontchannel_logout_supported": true,
                "end_session_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/logout"),
                "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                                     "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                                     "name", "tid", "ver", "at_hash", "c_hash", "email"],
                "kerberos_endpoint": format!("{base}/{path_tenant}/kerberos"),
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            }),
        ),
    }
}
