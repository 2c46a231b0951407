//! The Microsoft Graph `users` slice killswitch uses: read a user, find one by on-premises SID or
//! UPN, flip `accountEnabled`, revoke sign-in sessions.
//!
//! Graph authorizes app-only calls from the `roles` in the access token alone, so the fake does
//! the same: changing a tenant's consent does not affect tokens already issued.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::state::{PRIVILEGED_AUTH_ADMIN, Shared};
use crate::token::{self, AccessClaims};
use crate::{Endpoint, User};

const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";
const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const INSUFFICIENT: &str = "Insufficient privileges to complete the operation.";

/// Application roles that allow each operation (Graph's documented least-privileged role first).
const READ_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const ENABLE_ROLES: &[&str] = &[
    "User.EnableDisableAccount.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const REVOKE_ROLES: &[&str] = &[
    "User.RevokeSessions.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];

/// Properties of `microsoft.graph.user` the fake knows. Graph's default projection (no
/// `$select`) does *not* include `accountEnabled` or the on-premises properties, so a client
/// must `$select` them, exactly as against the real service.
const KNOWN_PROPS: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "accountEnabled",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "businessPhones",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
];
const DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Per-request ids every Graph answer carries.
pub(crate) struct GraphCtx {
    request_id: String,
    client_request_id: String,
}

impl GraphCtx {
    pub(crate) fn new(client_request_id: Option<String>) -> Self {
        GraphCtx {
            request_id: Uuid::new_v4().to_string(),
            client_request_id: client_request_id.unwrap_or_else(|| Uuid::new_v4().to_string()),
        }
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: Option<&'static str>,
        body: Body,
    ) -> Response {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert("request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.client_request_id) {
            h.insert("client-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        {
            h.insert(header::DATE, v);
        }
        let diag = json!({"ServerInfo": {"DataCenter": "Loopback", "Slice": "E", "Ring": "0", "ScaleUnit": "000",
                                         "RoleInstance": "fake-entra"}});
        if let Ok(v) = HeaderValue::from_str(&diag.to_string()) {
            h.insert("x-ms-ags-diagnostic", v);
        }
        resp
    }

    pub(crate) fn json(&self, status: StatusCode, body: &Value) -> Response {
        let mut resp = self.respond(status, Some(ODATA_JSON), Body::from(body.to_string()));
        resp.headers_mut()
            .insert("odata-version", HeaderValue::from_static("4.0"));
        resp
    }

    fn no_content(&self) -> Response {
        self.respond(StatusCode::NO_CONTENT, None, Body::empty())
    }

    /// Graph's error envelope: `{"error":{"code","message","innerError":{date, request-id, client-request-id}}}`.
    pub(crate) fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": self.request_id,
                    "client-request-id": self.client_request_id,
                }
            }
        });
        self.respond(
            status,
            Some("application/json"),
            Body::from(body.to_string()),
        )
    }

    fn unauthenticated(&self, message: &str) -> Response {
        let mut resp = self.error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
                 client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
        resp
    }

    fn forbidden(&self) -> Response {
        self.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            INSUFFICIENT,
        )
    }

    fn not_found(&self, key: &str) -> Response {
        self.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."),
        )
    }
}

/// Validates the bearer token of a Graph request against this instance and its tenants.
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<AccessClaims, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("Access token is empty.")?;
    let token = match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => return Err("Access token is empty."),
    };
    let claims = token::validate_access_token(shared, token)?;
    let known =
        Uuid::parse_str(&claims.tid).is_ok_and(|t| shared.state.lock().tenants.contains_key(&t));
    if !known {
        return Err("Access token validation failure. Invalid tenant.");
    }
    Ok(claims)
}

/// What gets recorded as a Graph call's tenant: the token's `tid` when the token is valid.
pub(crate) fn caller_tenant(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    authenticate(shared, headers).ok().map(|c| c.tid)
}

/// Handles one Graph call after faults were applied. `user_key` is the decoded `{id | upn}`.
pub(crate) fn handle(
    shared: &Shared,
    endpoint: Endpoint,
    user_key: Option<&str>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    ctx: &GraphCtx,
) -> Response {
    let claims = match authenticate(shared, headers) {
        Ok(c) => c,
        Err(message) => return ctx.unauthenticated(message),
    };
    let Ok(tenant) = Uuid::parse_str(&claims.tid) else {
        return ctx.unauthenticated("Access token validation failure. Invalid tenant.");
    };
    let allowed = |roles: &[&str]| claims.roles.iter().any(|r| roles.contains(&r.as_str()));
    let params = query_params(query);
    let key = user_key.unwrap_or_default();

    match endpoint {
        Endpoint::GetUser => {
            if !allowed(READ_ROLES) {
                return ctx.forbidden();
            }
            let select = match parse_select(&params) {
                Ok(s) => s,
                Err(r) => return r.respond(ctx),
            };
            let st = shared.state.lock();
            match st.user(tenant, key) {
                Some(rec) => {
                    let mut obj = project(&rec.user, select.as_deref());
                    obj.insert(
                        "@odata.context".into(),
                        Value::String(context(select.as_deref(), true)),
                    );
                    ctx.json(StatusCode::OK, &Value::Object(obj))
                }
                None => ctx.not_found(key),
            }
        }
        Endpoint::ListUsers => {
            if !allowed(READ_ROLES) {
                return ctx.forbidden();
            }
            let select = match parse_select(&params) {
                Ok(s) => s,
                Err(r) => return r.respond(ctx),
            };
            let filter = match params.get("$filter").map(|f| parse_filter(f)).transpose() {
                Ok(f) => f,
                Err(r) => return r.respond(ctx),
            };
            let st = shared.state.lock();
            let value: Vec<Value> = st
                .users
                .get(&tenant)
                .into_iter()
                .flatten()
                .filter(|rec| filter.as_ref().is_none_or(|f| f.matches(&rec.user)))
                .map(|rec| Value::Object(project(&rec.user, select.as_deref())))
                .collect();
            ctx.json(
                StatusCode::OK,
                &json!({"@odata.context": context(select.as_deref(), false), "value": value}),
            )
        }
        Endpoint::PatchUser => {
            if !allowed(ENABLE_ROLES) {
                return ctx.forbidden();
            }
            patch_user(shared, tenant, key, body, ctx)
        }
        Endpoint::RevokeSessions => {
            if !allowed(REVOKE_ROLES) {
                return ctx.forbidden();
            }
            let mut st = shared.state.lock();
            match st.user_mut(tenant, key) {
                Some(rec) => {
                    rec.revocations += 1;
                    ctx.json(StatusCode::OK, &json!({"@odata.context": format!("{METADATA}#Edm.Boolean"), "value": true}))
                }
                None => ctx.not_found(key),
            }
        }
        // Login endpoints never reach here; answer like Graph does for an unknown segment.
        Endpoint::Token | Endpoint::Discovery | Endpoint::AdminConsent => ctx.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unsupported request.",
        ),
    }
}

fn patch_user(shared: &Shared, tenant: Uuid, key: &str, body: &[u8], ctx: &GraphCtx) -> Response {
    let mut st = shared.state.lock();
    if st.user(tenant, key).is_none() {
        return ctx.not_found(key);
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid \
             JSON format.",
        );
    };
    let mut enabled = None;
    for (name, value) in &fields {
        match name.as_str() {
            "accountEnabled" => match value {
                Value::Bool(b) => enabled = Some(*b),
                _ => {
                    return ctx.error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        "Invalid value specified for property 'accountEnabled' of resource 'User'.",
                    );
                }
            },
            // OData annotations such as @odata.type are allowed alongside properties.
            n if n.starts_with("@odata.") => {}
            n if KNOWN_PROPS.contains(&n) => {
                return ctx.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Updating property '{n}' is not supported by this fake; only 'accountEnabled' is."),
                );
            }
            n => {
                return ctx.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Property '{n}' does not exist as a declared property or extension property."),
                );
            }
        }
    }
    let Some(enabled) = enabled else {
        // Graph treats an empty update as a successful no-op.
        return ctx.no_content();
    };
    // Entra refuses to let an app disable an admin-role holder unless the app itself holds a
    // sufficiently privileged directory role.
    let exempt = st
        .directory_roles
        .get(&tenant)
        .is_some_and(|r| r.contains(PRIVILEGED_AUTH_ADMIN));
    match st.user_mut(tenant, key) {
        Some(rec) if rec.user.privileged && !exempt => ctx.forbidden(),
        Some(rec) => {
            rec.user.account_enabled = enabled;
            ctx.no_content()
        }
        None => ctx.not_found(key),
    }
}

/// A rejected query option.
struct QueryError {
    code: &'static str,
    message: String,
}

impl QueryError {
    fn respond(self, ctx: &GraphCtx) -> Response {
        ctx.error(StatusCode::BAD_REQUEST, self.code, &self.message)
    }
}

/// Query options by lower-cased name (`$select`, `$filter`, ...); the first value wins.
fn query_params(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        out.entry(k.to_ascii_lowercase())
            .or_insert_with(|| v.into_owned());
    }
    out
}

/// `$select` as canonical property names (matched case-insensitively, as Graph does).
fn parse_select(params: &HashMap<String, String>) -> Result<Option<Vec<&'static str>>, QueryError> {
    let Some(raw) = params.get("$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(canonical) = KNOWN_PROPS.iter().find(|p| p.eq_ignore_ascii_case(name)) else {
            return Err(QueryError {
                code: "BadRequest",
                message: format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                ),
            });
        };
        if !out.contains(canonical) {
            out.push(*canonical);
        }
    }
    Ok(Some(out))
}

fn context(select: Option<&[&str]>, entity: bool) -> String {
    let set = match select {
        Some(props) => format!("users({})", props.join(",")),
        None => "users".to_owned(),
    };
    if entity {
        format!("{METADATA}#{set}/$entity")
    } else {
        format!("{METADATA}#{set}")
    }
}

/// The user as Graph renders it: the selected properties plus `id`, or the default projection.
fn project(user: &User, select: Option<&[&str]>) -> Map<String, Value> {
    let props: Vec<&str> = match select {
        Some(s) => s.iter().copied().chain(std::iter::once("id")).collect(),
        None => DEFAULT_PROPS.to_vec(),
    };
    props
        .into_iter()
        .map(|p| (p.to_owned(), property(user, p)))
        .collect()
}

fn property(user: &User, name: &str) -> Value {
    match name {
        "id" => Value::String(user.id.to_string()),
        "userPrincipalName" => Value::String(user.user_principal_name.clone()),
        "displayName" => Value::String(user.display_name.clone()),
        "accountEnabled" => Value::Bool(user.account_enabled),
        "onPremisesSyncEnabled" => user
            .on_premises_sync_enabled
            .map_or(Value::Null, Value::Bool),
        "onPremisesSecurityIdentifier" => user
            .on_premises_security_identifier
            .clone()
            .map_or(Value::Null, Value::String),
        "businessPhones" => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

/// The `$filter` forms the fake understands: `<property> eq '<literal>'`.
struct Filter {
    property: &'static str,
    value: String,
}

impl Filter {
    fn matches(&self, user: &User) -> bool {
        match self.property {
            "onPremisesSecurityIdentifier" => user
                .on_premises_security_identifier
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&self.value)),
            "userPrincipalName" => user.user_principal_name.eq_ignore_ascii_case(&self.value),
            "id" => Uuid::parse_str(&self.value).is_ok_and(|id| id == user.id),
            _ => false,
        }
    }
}

const FILTERABLE: &[&str] = &["onPremisesSecurityIdentifier", "userPrincipalName", "id"];

fn parse_filter(raw: &str) -> Result<Filter, QueryError> {
    let unsupported = |what: String| QueryError {
        code: "Request_UnsupportedQuery",
        message: what,
    };
    let trimmed = raw.trim();
    let lower = trimmed.to_ascii_lowercase();
    let Some(pos) = lower.find(" eq ") else {
        return Err(unsupported(format!(
            "Unsupported Query. Filter clause '{trimmed}' is not supported by this fake."
        )));
    };
    let (name, literal) = (trimmed[..pos].trim(), trimmed[pos + 4..].trim());
    let Some(property) = FILTERABLE.iter().find(|p| p.eq_ignore_ascii_case(name)) else {
        return Err(unsupported(format!(
            "Unsupported or invalid query filter clause specified for property '{name}' of resource 'User'."
        )));
    };
    let inner = literal
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .filter(|_| literal.len() >= 2)
        .ok_or_else(|| {
            unsupported(format!(
                "Invalid filter clause: '{literal}' is not a quoted string literal."
            ))
        })?;
    Ok(Filter {
        property,
        value: inner.replace("''", "'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_literals() {
        let f = parse_filter("  onpremisessecurityidentifier  EQ 'S-1-5-21-1'  ")
            .ok()
            .unwrap();
        assert_eq!(
            (f.property, f.value.as_str()),
            ("onPremisesSecurityIdentifier", "S-1-5-21-1")
        );
        let f = parse_filter("userPrincipalName eq 'o''brien@contoso.com'")
            .ok()
            .unwrap();
        assert_eq!(f.value, "o'brien@contoso.com");
        for bad in [
            "userPrincipalName eq unquoted",
            "accountEnabled eq true",
            "userPrincipalName ne 'x'",
            "'",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
