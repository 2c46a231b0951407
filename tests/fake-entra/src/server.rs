//! The HTTP side: a hand-rolled accept loop over hyper's HTTP/1 connection driver, routing,
//! call recording, latency and fault application.
//!
//! `axum::serve` would be simpler, but its services cannot fail, and `Fault::DropConnection`
//! needs exactly that: when the service future returns `Err`, hyper closes the socket without
//! writing a response, which a client sees as a connection error rather than a status.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::aad::AadCtx;
use crate::discovery::Doc;
use crate::faults::{self, DropConnectionMarker};
use crate::graph::{self, GraphCtx};
use crate::state::Shared;
use crate::{Endpoint, Fault, consent, demo, discovery, token};

/// Largest request body read (token forms and PATCH bodies are tiny).
const BODY_LIMIT: usize = 1 << 20;

/// The error a service returns to make hyper abort the connection.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for ConnectionDropped {}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Typically EMFILE; back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    // Like a real server, finish what was received even if the client hangs
                    // up: a PATCH held by `Fault::Hang` still applies after the caller is gone.
                    let work =
                        tokio::spawn(async move { dispatch(&shared, req.map(Body::new)).await });
                    let Ok(resp) = work.await else {
                        return Err(ConnectionDropped);
                    };
                    if resp.extensions().get::<DropConnectionMarker>().is_some() {
                        Err(ConnectionDropped)
                    } else {
                        Ok(resp)
                    }
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// What a request is, decided from its method and path alone.
enum Route {
    Token {
        tenant: String,
    },
    Discovery {
        tenant: String,
        doc: Doc,
    },
    AdminConsent {
        tenant: String,
    },
    Graph {
        endpoint: Endpoint,
        user: Option<String>,
    },
    /// A Graph path the fake does not serve, or a method it does not allow there.
    GraphUnsupported {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    FakeUsers,
    NotFound,
}

fn classify(method: &Method, path: &str) -> Route {
    let mut segs: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if segs.last().is_some_and(String::is_empty) {
        segs.pop();
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let not_allowed = || Route::GraphUnsupported {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "Request_BadRequest",
        message: "Specified HTTP method is not allowed for the request target.".into(),
    };
    let graph = |endpoint, user: Option<&str>| Route::Graph {
        endpoint,
        user: user.map(str::to_owned),
    };
    match s.as_slice() {
        ["_fake", "users"] => Route::FakeUsers,
        ["v1.0", "users"] if method == Method::GET => graph(Endpoint::ListUsers, None),
        ["v1.0", "users"] => not_allowed(),
        ["v1.0", "users", user] if method == Method::GET => graph(Endpoint::GetUser, Some(user)),
        ["v1.0", "users", user] if method == Method::PATCH => {
            graph(Endpoint::PatchUser, Some(user))
        }
        ["v1.0", "users", _] => not_allowed(),
        ["v1.0", "users", user, "revokeSignInSessions"] if method == Method::POST => {
            graph(Endpoint::RevokeSessions, Some(user))
        }
        ["v1.0", "users", _, "revokeSignInSessions"] => not_allowed(),
        ["v1.0" | "beta", rest @ ..] => Route::GraphUnsupported {
            status: StatusCode::BAD_REQUEST,
            code: "BadRequest",
            message: format!(
                "Resource not found for the segment '{}'.",
                rest.last().copied().unwrap_or_default()
            ),
        },
        [tenant, "oauth2", "v2.0", "token"] => Route::Token {
            tenant: (*tenant).to_owned(),
        },
        [tenant, "v2.0", ".well-known", "openid-configuration"] => Route::Discovery {
            tenant: (*tenant).to_owned(),
            doc: Doc::OpenIdConfiguration,
        },
        [tenant, "discovery", "v2.0", "keys"] => Route::Discovery {
            tenant: (*tenant).to_owned(),
            doc: Doc::Keys,
        },
        [tenant, "v2.0", "adminconsent"] | [tenant, "adminconsent"] => Route::AdminConsent {
            tenant: (*tenant).to_owned(),
        },
        _ => Route::NotFound,
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn dispatch(shared: &Shared, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let route = classify(&parts.method, parts.uri.path());
    let client_request_id = header_str(&parts.headers, "client-request-id");

    let (endpoint, tenant) = match &route {
        Route::Token { tenant } => (Endpoint::Token, Some(tenant.clone())),
        Route::Discovery { tenant, .. } => (Endpoint::Discovery, Some(tenant.clone())),
        Route::AdminConsent { tenant } => (Endpoint::AdminConsent, Some(tenant.clone())),
        Route::Graph { endpoint, .. } => (*endpoint, graph::caller_tenant(shared, &parts.headers)),
        Route::GraphUnsupported {
            status,
            code,
            message,
        } => {
            return GraphCtx::new(client_request_id).error(*status, code, message);
        }
        Route::FakeUsers => return demo::users_response(shared),
        Route::NotFound => {
            let mut resp = Response::new(Body::from("Not Found"));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
    };

    let (seq, fault, release) = shared.begin_call(
        endpoint,
        tenant,
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        client_request_id.clone(),
    );

    let latency = shared.state.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(mut release) = release {
        let _hung = HungGuard::enter(shared);
        // An error only means the sender is gone, which cannot happen while `shared` lives.
        let _ = release.changed().await;
    }

    let is_graph = matches!(route, Route::Graph { .. });
    let graph_ctx = GraphCtx::new(client_request_id.clone());
    let aad_ctx = AadCtx::new(client_request_id);
    let resp = match &fault {
        Some(Fault::DropConnection) => {
            shared.finish_call(seq, 0);
            return faults::drop_connection();
        }
        Some(f) => {
            if is_graph {
                faults::graph_response(f, &graph_ctx)
            } else {
                faults::aad_response(f, &aad_ctx)
            }
        }
        None => None,
    };
    let resp = match resp {
        Some(faulted) => faulted,
        None => {
            let body = axum::body::to_bytes(body, BODY_LIMIT)
                .await
                .unwrap_or_default();
            let query = parts.uri.query();
            match &route {
                Route::Token { tenant } => {
                    let host = header_str(&parts.headers, header::HOST.as_str());
                    token::handle(
                        shared,
                        &parts.method,
                        tenant,
                        host.as_deref(),
                        &body,
                        &aad_ctx,
                    )
                }
                Route::Discovery { tenant, doc } => {
                    discovery::handle(shared, &parts.method, tenant, *doc, &aad_ctx)
                }
                Route::AdminConsent { tenant } => {
                    consent::handle(shared, &parts.method, tenant, query, &aad_ctx)
                }
                Route::Graph { endpoint, user } => graph::handle(
                    shared,
                    *endpoint,
                    user.as_deref(),
                    query,
                    &parts.headers,
                    &body,
                    &graph_ctx,
                ),
                // Answered before the call was recorded.
                Route::GraphUnsupported { .. } | Route::FakeUsers | Route::NotFound => {
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    resp
                }
            }
        }
    };
    shared.finish_call(seq, resp.status().as_u16());
    resp
}

/// Counts a request as hung for exactly as long as it waits, even if the client gives up.
struct HungGuard<'a>(&'a Shared);

impl<'a> HungGuard<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.hung.fetch_add(1, Ordering::SeqCst);
        HungGuard(shared)
    }
}

impl Drop for HungGuard<'_> {
    fn drop(&mut self) {
        self.0.hung.fetch_sub(1, Ordering::SeqCst);
    }
}
