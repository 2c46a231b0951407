//! Response helpers for the login endpoints (`login.microsoftonline.com` look-alikes).
//!
//! Entra's OAuth errors are JSON objects with the OAuth `error` code plus `error_codes`
//! (the AADSTS numbers clients key on), a timestamp and trace/correlation ids. The correlation
//! id echoes the client's `client-request-id`, which is how Microsoft support finds a request.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use uuid::Uuid;

/// Per-request ids for a login-endpoint answer.
pub(crate) struct AadCtx {
    pub(crate) trace_id: String,
    pub(crate) correlation_id: String,
    /// The request's own `client-request-id`, echoed back only when it sent one.
    pub(crate) client_request_id: Option<String>,
}

impl AadCtx {
    pub(crate) fn new(client_request_id: Option<String>) -> Self {
        AadCtx {
            trace_id: Uuid::new_v4().to_string(),
            correlation_id: client_request_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
            client_request_id,
        }
    }

    fn decorate(&self, headers: &mut HeaderMap) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        );
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            headers.insert("x-ms-request-id", v);
        }
        if let Some(v) = self
            .client_request_id
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert("client-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        {
            headers.insert(header::DATE, v);
        }
    }

    /// A JSON answer (success bodies of the token and discovery endpoints).
    pub(crate) fn json(&self, status: StatusCode, body: &serde_json::Value) -> Response {
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        self.decorate(resp.headers_mut());
        resp
    }

    /// The body Entra sends for an OAuth error. `description` is the text after `AADSTSnnnn: `.
    pub(crate) fn error_body(
        &self,
        error: &str,
        code: u32,
        description: &str,
    ) -> serde_json::Value {
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        serde_json::json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {timestamp}",
                self.trace_id, self.correlation_id
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })
    }

    pub(crate) fn error(
        &self,
        status: StatusCode,
        error: &str,
        code: u32,
        description: &str,
    ) -> Response {
        self.json(status, &self.error_body(error, code, description))
    }

    /// The HTML error page the browser-facing endpoints (admin consent) show.
    pub(crate) fn error_page(&self, status: StatusCode, code: u32, description: &str) -> Response {
        let text = html_escape(&format!("AADSTS{code}: {description}"));
        let html = format!(
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
             <h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">{text}</p>\
             <p>Request Id: {}<br>Correlation Id: {}</p></body></html>",
            self.trace_id, self.correlation_id
        );
        let mut resp = Response::new(Body::from(html));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        self.decorate(resp.headers_mut());
        resp
    }

    pub(crate) fn redirect(&self, location: &str) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = HeaderValue::from_str(location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        self.decorate(resp.headers_mut());
        resp
    }
}

pub(crate) fn tenant_not_found(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into \
         the correct cloud. Check with your subscription administrator, this may happen if there are no active \
         subscriptions for the tenant."
    )
}

pub(crate) fn app_not_found(client_id: &str, tenant: &str) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if \
         the application has not been installed by the administrator of the tenant or consented to by any user \
         in the tenant. You may have sent your authentication request to the wrong tenant."
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
