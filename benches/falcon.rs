//! Falcon webhook intake speed, through HTTP on loopback with durable SQLite commits:
//! (a) verified webhooks accepted per second, 50 in flight (detections wait for an analyst;
//!     with and without the account look-up in the fake Entra), and the same webhooks to an
//!     endpoint that verifies and parses them and stores nothing: the limit on this machine;
//! (b) receipt-to-PATCH time for auto-disable against the fake Entra at zero latency.
//!
//! Run: `cargo bench --bench falcon`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::Instant;

use fake_entra::{AppCredential, FakeEntra, Tenant, User};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use futures::StreamExt;
use killswitch::app::{Application, Services};
use killswitch::audit::event::Actor;
use killswitch::config::{DEFAULT_TOML, Settings};
use killswitch::customers::{AutoDisable, Customer, Policy};
use killswitch::domain::TenantId;
use secrecy::ExposeSecret;
use uuid::Uuid;

const CLIENT_ID: &str = "5d1f2c6e-8a47-4b36-9a0e-6c1f0b2d7e41";
const SECRET: &str = "bench-secret";
const TENANT: Uuid = Uuid::from_u128(0xBE);

async fn fake() -> FakeEntra {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT_ID, AppCredential::Secret(SECRET.to_owned()));
    fake.add_tenant(Tenant {
        id: TENANT,
        domain: "contoso.onmicrosoft.com".into(),
        consented: true,
        granted_roles: fake_entra::DEFAULT_ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
    });
    for n in 0..5000u128 {
        fake.add_user(
            TENANT,
            User {
                id: Uuid::from_u128(0x5E00 + n),
                user_principal_name: format!("user{n}@contoso.onmicrosoft.com"),
                display_name: format!("User {n}"),
                account_enabled: true,
                on_premises_sync_enabled: None,
                on_premises_security_identifier: None,
                privileged: false,
            },
        );
    }
    fake
}

/// A running app; with `entra`, the remediation app points at the fake.
async fn app(
    dir: &std::path::Path,
    entra: Option<&FakeEntra>,
    auto: AutoDisable,
) -> (String, String, tokio::sync::oneshot::Sender<()>) {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Serialized::default("data_dir", dir.display().to_string()))
        .merge(Serialized::default("server.listen", "127.0.0.1:0"))
        .merge(Serialized::default("log.level", "warn"))
        // The bench's one client may hold more connections than it has requests in flight:
        // reqwest opens a new one when none has come back to its pool yet, and keeps the idle
        // ones. Past the service's limit per client address (64 by default, for clients on
        // the internet) the next would be refused.
        .merge(Serialized::default(
            "server.max_connections_per_client",
            1024,
        ));
    if let Some(fake) = entra {
        for (key, value) in [
            ("entra.authority_url", fake.base_url()),
            ("entra.graph_url", fake.base_url()),
            ("entra.client_id", CLIENT_ID.to_owned()),
            ("entra.client_secret", SECRET.to_owned()),
        ] {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    let settings = Settings::from_figment(&figment).unwrap();
    let services = Services::open(&settings).await.unwrap();
    let customer = Customer {
        slug: "contoso".parse().unwrap(),
        name: "Contoso".into(),
        domain: "contoso.onmicrosoft.com".into(),
        tenant_id: TenantId::new(TENANT),
        policy: Policy {
            auto_disable: auto,
            max_actions_per_hour: 1_000_000,
            ..Policy::default()
        },
        created_at: killswitch::time::Timestamp::now(),
        connection: None,
    };
    services
        .store
        .add_customer(&customer, &Actor::Service)
        .await
        .unwrap();
    let secret = services
        .onboarding
        .issue_webhook_secret(
            &customer,
            killswitch::customers::onboarding::SecretIssue::First,
            &Actor::Service,
        )
        .await
        .unwrap();
    let application = Application::with_services(settings, services)
        .await
        .unwrap();
    let base = format!("http://{}", application.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    (base, secret.secret.expose_secret().to_owned(), stop)
}

fn body(n: u64, severity: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "composite_id": format!("bench:{n}:{}", Uuid::new_v4()),
        "severity": severity,
        "source_account_upn": format!("user{}@contoso.onmicrosoft.com", n % 5000),
    }))
    .unwrap()
}

async fn deliver(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    body: Vec<u8>,
) -> reqwest::StatusCode {
    let response = common::signed_webhook(
        http,
        &format!("{base}/api/v1/webhooks/falcon/contoso"),
        secret,
        body,
    )
    .send()
    .await
    .unwrap();
    let status = response.status();
    // Read to the end, as a sender does, so the connection goes back to the pool.
    response.bytes().await.unwrap();
    status
}

async fn throughput(base: &str, secret: &str, total: u64) -> f64 {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let accepted = futures::stream::iter(0..total)
        .map(|n| {
            let http = http.clone();
            async move { deliver(&http, base, secret, body(n, "medium")).await }
        })
        .buffer_unordered(50)
        .filter(|status| std::future::ready(*status == reqwest::StatusCode::ACCEPTED))
        .count()
        .await;
    assert_eq!(accepted as u64, total);
    total as f64 / started.elapsed().as_secs_f64()
}

/// The limit (a) runs into without storage: an endpoint on the same HTTP stack that checks the
/// signature and parses the detection with the service's own code, then answers 202 with a
/// body like the service's, keeping nothing. Client and server share the two cores as in (a).
async fn bare_endpoint(secret: &str) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use killswitch::falcon::payload::Detection;
    use killswitch::falcon::signature::{Verifier, WebhookSecret};

    let secrets = std::sync::Arc::new(vec![WebhookSecret::new(secret.as_bytes().to_vec())]);
    let handler = move |headers: HeaderMap, body: Bytes| async move {
        let verifier = Verifier {
            secrets: &secrets,
            signature_header: "X-CS-Primary-Signature",
            signed_string: Policy::default().webhook_signature,
            tolerance_secs: 300,
            now: killswitch::time::Timestamp::now(),
        };
        verifier.verify(&headers, &body).unwrap();
        let detection = Detection::parse(&body).unwrap();
        let view = serde_json::json!({
            "id": Uuid::new_v4(),
            "customer": "contoso",
            "composite_id": detection.composite_id,
            "severity": detection.severity.as_str(),
            "assurance": "signed",
            "state": "pending",
            "account_upn": detection.account_upn.map(|upn| upn.to_string()),
            "pending_reason": "the customer has not opted in to automatic disabling",
            "received_at": killswitch::time::Timestamp::now().to_string(),
        });
        (StatusCode::ACCEPTED, axum::Json(view))
    };
    let app = axum::Router::new().route(
        "/api/v1/webhooks/falcon/{customer}",
        axum::routing::post(handler),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn quantile(metrics: &str, name: &str, q: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{quantile=\"{q}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("BENCH_WEBHOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("Falcon webhooks over HTTP, SQLite with durable commits, 50 in flight, {total} each");

    let dir = tempfile::tempdir().unwrap();
    let (base, secret, _stop) = app(dir.path(), None, AutoDisable::Off).await;
    let rate = throughput(&base, &secret, total).await;
    println!("  (a) verified and stored, no look-up:        {rate:>7.0} webhooks/s (aim ≥ 8000)");
    let bare = throughput(&bare_endpoint(&secret).await, &secret, total).await;
    println!(
        "      the same webhooks to an endpoint that verifies and parses them and stores nothing: \
         {bare:.0}/s; the service reaches {:.1} % of that",
        100.0 * rate / bare
    );

    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (base, secret, _stop2) = app(dir.path(), Some(&fake), AutoDisable::Off).await;
    let rate = throughput(&base, &secret, total).await;
    println!("  (a) with the account looked up in Entra:    {rate:>7.0} webhooks/s");

    let dir = tempfile::tempdir().unwrap();
    let (base, secret, _stop3) = app(dir.path(), Some(&fake), AutoDisable::High).await;
    let http = reqwest::Client::new();
    let rounds = 500u64;
    let mut round_trips = Vec::new();
    for n in 0..rounds {
        let started = Instant::now();
        assert_eq!(
            deliver(&http, &base, &secret, body(n, "critical")).await,
            reqwest::StatusCode::ACCEPTED
        );
        round_trips.push(started.elapsed());
    }
    round_trips.sort_unstable();
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let name = "killswitch_falcon_receipt_to_patch_seconds";
    let ms = |q| {
        quantile(&metrics, name, q)
            .map(|s| s * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "  (b) auto-disable, fake at zero latency, {rounds} detections: receipt→PATCH median {:.2} ms, p90 {:.2} ms \
         (aim ≤ 1.5 ms); whole webhook round trip median {:.2} ms",
        ms("0.5"),
        ms("0.9"),
        round_trips[round_trips.len() / 2].as_secs_f64() * 1000.0
    );
}
