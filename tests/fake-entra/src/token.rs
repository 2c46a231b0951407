//! `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant, with a client secret or a
//! certificate-signed client assertion, and the access tokens Graph later accepts.
//!
//! Checks run in the order Entra appears to apply them (request shape, tenant, app, service
//! principal, credential) so a client sees the same AADSTS code for the same mistake.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aad::{self, AadCtx};
use crate::state::{Credential, Shared};

/// The only scope a client-credentials request for Graph may ask for.
pub(crate) const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The same scope spelled with Graph's well-known application id, which Entra also accepts.
const GRAPH_DEFAULT_SCOPE_BY_ID: &str = "00000003-0000-0000-c000-000000000000/.default";
pub(crate) const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub(crate) const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra wants assertions to live ~10 minutes; the fake tolerates up to an hour.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
const CLOCK_SKEW_SECS: i64 = 300;

/// Claims of the access tokens this fake issues: the v1.0 shape Graph tokens have
/// (`iss` on sts.windows.net, `appid`, `roles`, `tid`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) aud: String,
    pub(crate) iss: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    pub(crate) exp: i64,
    pub(crate) appid: String,
    /// "1" for a secret, "2" for a certificate, as Entra reports the client's authentication.
    pub(crate) appidacr: String,
    pub(crate) idp: String,
    pub(crate) idtyp: String,
    pub(crate) oid: String,
    /// Entra omits `roles` altogether when the app holds none; clients must cope with that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) roles: Vec<String>,
    pub(crate) sub: String,
    pub(crate) tid: String,
    pub(crate) uti: String,
    pub(crate) ver: String,
}

/// Handles one token request. `host` is the request's `Host` header, so an assertion whose
/// `aud` names the token URL the way the client reached it (e.g. `localhost`) is accepted.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    tenant_segment: &str,
    host: Option<&str>,
    body: &[u8],
    ctx: &AadCtx,
) -> Response {
    let bad = |error: &str, code: u32, description: &str| {
        ctx.error(StatusCode::BAD_REQUEST, error, code, description)
    };
    let unauthorized = |code: u32, description: &str| {
        ctx.error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    };

    if method != Method::POST {
        return bad(
            "invalid_request",
            900561,
            &format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        );
    }

    let (tenant_id, consented, roles) = {
        let st = shared.state.lock();
        match st.resolve_tenant(tenant_segment) {
            Some(t) => (t.id, t.consented, t.granted_roles.clone()),
            None => {
                return bad(
                    "invalid_request",
                    90002,
                    &aad::tenant_not_found(tenant_segment),
                );
            }
        }
    };

    // First value wins for repeated parameters.
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    let param = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let missing = |name: &str| {
        bad(
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };

    let Some(grant_type) = param("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return bad(
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = param("client_id") else {
        return missing("client_id");
    };
    let Some(scope) = param("scope") else {
        return missing("scope");
    };
    if !(scope.eq_ignore_ascii_case(GRAPH_DEFAULT_SCOPE)
        || scope.eq_ignore_ascii_case(GRAPH_DEFAULT_SCOPE_BY_ID))
    {
        return bad(
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope \
                 value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }

    let credentials = {
        let st = shared.state.lock();
        st.apps.get(&client_id.to_ascii_lowercase()).cloned()
    };
    let Some(credentials) = credentials else {
        return bad(
            "unauthorized_client",
            700016,
            &aad::app_not_found(client_id, &tenant_id.to_string()),
        );
    };
    if !consented {
        return bad(
            "invalid_client",
            7000229,
            &format!(
                "The client application {client_id} is missing service principal in the tenant {tenant_id}. \
                 See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119"
            ),
        );
    }

    let appidacr = match (param("client_secret"), param("client_assertion")) {
        (Some(_), Some(_)) => {
            return bad(
                "invalid_request",
                9002313,
                "Invalid request. Request is malformed or invalid. Both 'client_secret' and 'client_assertion' \
                 were sent; use exactly one.",
            );
        }
        (Some(secret), None) => {
            let ok = credentials
                .iter()
                .any(|c| matches!(c, Credential::Secret(s) if s == secret));
            if !ok {
                return unauthorized(
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                         secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                );
            }
            "1"
        }
        (None, Some(assertion)) => {
            match param("client_assertion_type") {
                None => return missing("client_assertion_type"),
                Some(t) if t != JWT_BEARER => {
                    return bad(
                        "invalid_request",
                        9002313,
                        &format!(
                            "Invalid request. Request is malformed or invalid. 'client_assertion_type' is '{t}', \
                             expected '{JWT_BEARER}'."
                        ),
                    );
                }
                Some(_) => {}
            }
            let audiences = accepted_audiences(shared, host, tenant_segment, tenant_id);
            if let Err(why) = validate_assertion(&credentials, client_id, assertion, &audiences) {
                return unauthorized(700027, &why);
            }
            "2"
        }
        (None, None) => {
            return unauthorized(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    };

    let lifetime = shared.state.lock().token_lifetime;
    match issue_access_token(shared, tenant_id, client_id, appidacr, roles, lifetime) {
        Ok(token) => ctx.json(
            StatusCode::OK,
            &serde_json::json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }),
        ),
        Err(e) => ctx.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            &format!("There was an error issuing a token: {e}"),
        ),
    }
}

/// The token URLs an assertion's `aud` may name: GUID or domain form (whichever was posted
/// to is among them), reached via the fake's base URL or the request's `Host`.
fn accepted_audiences(
    shared: &Shared,
    host: Option<&str>,
    posted: &str,
    tenant_id: Uuid,
) -> Vec<String> {
    let domain = shared
        .state
        .lock()
        .tenants
        .get(&tenant_id)
        .map(|t| t.domain.clone());
    let mut bases = vec![shared.base_url.clone()];
    if let Some(h) = host {
        bases.push(format!("http://{h}"));
    }
    let mut segments = vec![posted.to_owned(), tenant_id.to_string()];
    segments.extend(domain);
    let mut out = Vec::new();
    for b in &bases {
        for s in &segments {
            out.push(format!("{b}/{s}/oauth2/v2.0/token").to_ascii_lowercase());
        }
    }
    out
}

/// Verifies a `private_key_jwt` client assertion; `Err` carries the AADSTS700027 description.
fn validate_assertion(
    credentials: &[Credential],
    client_id: &str,
    assertion: &str,
    audiences: &[String],
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| format!("Client assertion is not a well-formed JWT ({e})."))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(format!(
            "Client assertion is signed with the unsupported algorithm '{:?}'; RS256 or PS256 is required.",
            header.alg
        ));
    }
    let Some(thumbprint) = header.x5t_s256.as_deref() else {
        return Err(if header.x5t.is_some() {
            "Client assertion header carries only the SHA-1 'x5t' thumbprint; this fake requires 'x5t#S256'.".into()
        } else {
            "Client assertion header must contain the 'x5t#S256' thumbprint of the signing certificate.".into()
        });
    };
    let cert = credentials
        .iter()
        .find_map(|c| match c {
            Credential::Certificate(cert) if cert.x5t_s256 == thumbprint => Some(cert),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on \
                 application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', \
                 Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for \
                 app Id '{client_id}'.]"
            )
        })?;

    // Time, audience and issuer are checked by hand below, to say precisely which one failed.
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<serde_json::Value>(assertion, &cert.key, &validation)
    {
        Ok(data) => data.claims,
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
            return Err(format!(
                "Client assertion failed signature validation. [Reason - The key was found, but the signature \
                 does not verify with it., Thumbprint of key used by client: '{thumbprint}']"
            ));
        }
        Err(e) => {
            return Err(format!(
                "Client assertion failed signature validation ({e})."
            ));
        }
    };

    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => audiences.contains(&a.to_ascii_lowercase()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(|a| audiences.contains(&a.to_ascii_lowercase())),
        _ => false,
    };
    if !aud_ok {
        return Err(format!(
            "Client assertion audience claim does not match Realm issuer. Audience {} must be the token endpoint \
             '{}'.",
            claims
                .get("aud")
                .map(ToString::to_string)
                .unwrap_or_else(|| "(missing)".into()),
            audiences.first().map(String::as_str).unwrap_or_default()
        ));
    }
    for name in ["iss", "sub"] {
        let value = claims.get(name).and_then(serde_json::Value::as_str);
        if !value.is_some_and(|v| v.eq_ignore_ascii_case(client_id)) {
            return Err(format!(
                "Client assertion '{name}' claim ({}) must be the client id '{client_id}'.",
                value.unwrap_or("missing")
            ));
        }
    }
    if claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("Client assertion must contain a 'jti' claim.".into());
    }
    let now = chrono::Utc::now().timestamp();
    let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
    let Some(exp) = number("exp") else {
        return Err("Client assertion must contain a numeric 'exp' claim.".into());
    };
    if exp <= now {
        return Err(format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid to: {exp}."
        ));
    }
    let nbf = number("nbf");
    if let Some(nbf) = nbf.filter(|n| *n > now + CLOCK_SKEW_SECS) {
        return Err(format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid from: {nbf}."
        ));
    }
    let start = nbf.or_else(|| number("iat")).unwrap_or(now);
    if exp - start > MAX_ASSERTION_LIFETIME_SECS {
        return Err(format!(
            "Client assertion lifetime of {}s exceeds the maximum of {MAX_ASSERTION_LIFETIME_SECS}s.",
            exp - start
        ));
    }
    Ok(())
}

fn issue_access_token(
    shared: &Shared,
    tenant: Uuid,
    client_id: &str,
    appidacr: &str,
    roles: Vec<String>,
    lifetime: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let oid = Uuid::new_v4().to_string();
    let iss = format!("https://sts.windows.net/{tenant}/");
    let claims = AccessClaims {
        aud: GRAPH_AUDIENCE.into(),
        iss: iss.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        appid: client_id.to_owned(),
        appidacr: appidacr.into(),
        idp: iss,
        idtyp: "app".into(),
        oid: oid.clone(),
        roles,
        sub: oid,
        tid: tenant.to_string(),
        uti: Uuid::new_v4().simple().to_string(),
        ver: "1.0".into(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &shared.token_enc)
}

/// Validates a bearer token presented to Graph. `Err` is Graph's `InvalidAuthenticationToken`
/// message. The tenant is only checked for existence by the caller, which holds the lock.
pub(crate) fn validate_access_token(
    shared: &Shared,
    token: &str,
) -> Result<AccessClaims, &'static str> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<AccessClaims>(token, &shared.token_dec, &validation) {
        Ok(d) => d.claims,
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "Access token validation failure. Invalid signature."
                }
                _ => "IDX14100: JWT is not well formed.",
            });
        }
    };
    if claims.aud != GRAPH_AUDIENCE && claims.aud != GRAPH_APP_ID {
        return Err("Access token validation failure. Invalid audience.");
    }
    let now = chrono::Utc::now().timestamp();
    // No clock skew: a token issued with lifetime 0 is expired at once, which is what tests want.
    if claims.exp <= now {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if claims.nbf > now + CLOCK_SKEW_SECS {
        return Err("Lifetime validation failed, the token is not yet valid.");
    }
    Ok(claims)
}
