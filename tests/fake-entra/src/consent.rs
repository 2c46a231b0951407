//! `GET /{tenant}/v2.0/adminconsent`: the admin-consent flow a customer's Global Administrator
//! goes through once to onboard the multi-tenant app. The fake plays the admin: it accepts (or
//! declines, per [`crate::FakeEntra::set_consent_outcome`]) at once and redirects back, the way
//! Entra does after the consent prompt.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::ConsentOutcome;
use crate::aad::{self, AadCtx};
use crate::state::Shared;
use crate::token::GRAPH_DEFAULT_SCOPE;

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    tenant_segment: &str,
    query: Option<&str>,
    ctx: &AadCtx,
) -> Response {
    if method != Method::GET {
        return ctx.error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            900561,
            &format!("The endpoint only accepts GET requests. Received a {method} request."),
        );
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        params
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };

    let Some(client_id) = param("client_id") else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(redirect) = param("redirect_uri") else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        );
    };
    let Ok(mut location) = url::Url::parse(redirect) else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            50011,
            &format!("The redirect URI '{redirect}' specified in the request is not a valid absolute URI."),
        );
    };
    let state = param("state");
    let scope = param("scope").unwrap_or(GRAPH_DEFAULT_SCOPE).to_owned();

    let mut st = shared.state.lock();
    let Some(tenant_id) = st.resolve_tenant(tenant_segment).map(|t| t.id) else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            90002,
            &aad::tenant_not_found(tenant_segment),
        );
    };
    if !st.apps.contains_key(&client_id.to_ascii_lowercase()) {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            700016,
            &aad::app_not_found(client_id, tenant_segment),
        );
    }
    let outcome = st.consent_outcome(tenant_id);
    {
        let mut q = location.query_pairs_mut();
        match outcome {
            ConsentOutcome::Accept { roles } => {
                if let Some(t) = st.tenants.get_mut(&tenant_id) {
                    t.consented = true;
                    t.granted_roles = roles;
                }
                q.append_pair("admin_consent", "True")
                    .append_pair("tenant", &tenant_id.to_string());
                if let Some(s) = state {
                    q.append_pair("state", s);
                }
                q.append_pair("scope", &scope);
            }
            ConsentOutcome::Deny => {
                q.append_pair("error", "access_denied")
                    .append_pair("error_subcode", "cancel")
                    .append_pair(
                        "error_description",
                        "AADSTS65004: User declined to consent to access the app.",
                    );
                if let Some(s) = state {
                    q.append_pair("state", s);
                }
                q.append_pair("admin_consent", "True")
                    .append_pair("tenant", &tenant_id.to_string());
            }
        }
    }
    drop(st);
    ctx.redirect(location.as_str())
}
