//! Accepting connections: HTTP/1.1 with a deadline for request headers (which also closes a
//! keep-alive connection left idle that long), at most `server.max_connections` connections
//! served at once and `server.max_connections_per_client` from one peer address (trusted proxies
//! excepted), and a graceful stop. A client that opens connections and sends nothing, or sends
//! its headers a byte at a time, holds a connection for the header deadline at most, and cannot
//! take more than its share of the places.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::client::TrustedProxies;

/// The limits a connection is served under.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Proxies carry many clients' connections: no per-address ceiling for them.
    pub trusted: TrustedProxies,
}

/// Open connections per peer address; a place is given back when its [`Place`] drops.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct Place {
    counts: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Place> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = counts.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Place {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets every open connection
/// finish its request in flight and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Owned here: if this future is dropped (the grace period ran out), every connection goes.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // Beyond the ceiling, new connections wait in the kernel's backlog, not in memory.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let place = if limits.trusted.trusts(&peer.ip()) {
            None
        } else {
            match per_client.take(peer.ip(), limits.max_connections_per_client) {
                Some(place) => Some(place),
                None => {
                    metrics::counter!("killswitch_connections_refused_total", "reason" => "per_client").increment(1);
                    continue;
                }
            }
        };
        let (router, stop, limits) = (router.clone(), stop_rx.clone(), limits.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, router, &limits, stop).await;
            drop((permit, place));
        });
    }
    // Stop accepting at once: connecting clients are refused rather than left waiting.
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        tower::ServiceExt::map_request(router, move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.map(Body::new)
        });
    let service = TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let stopping = async {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        result = connection.as_mut() => log_end(result),
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            metrics::counter!("killswitch_connections_closed_total", "reason" => "header_timeout")
                .increment(1);
            tracing::debug!("closed a connection whose request headers did not arrive in time");
        }
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}
