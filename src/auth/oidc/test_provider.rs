//! For the unit tests: a stand-in provider on loopback, its keys, and tokens it signs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;

use super::OidcProvider;
use crate::config::OidcSettings;

pub(super) const ISSUER: &str = "https://login.example.com";
pub(super) const CLIENT: &str = "killswitch";
pub(super) const PEM: &[u8] =
    include_bytes!("../../../tests/fake-entra/fixtures/remediation-app.pem");
pub(super) const OTHER_PEM: &[u8] =
    include_bytes!("../../../tests/fake-entra/fixtures/other-app.pem");

/// The fixtures hold a certificate and then its key; the key block is what signs.
pub(super) fn encoding_key(pem: &[u8]) -> EncodingKey {
    let text = String::from_utf8_lossy(pem);
    let start = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
    EncodingKey::from_rsa_pem(text[start..].as_bytes()).unwrap()
}

pub(super) fn jwk(pem: &[u8], kid: &str) -> Value {
    let jwk = Jwk::from_encoding_key(&encoding_key(pem), Algorithm::RS256)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut value = serde_json::to_value(jwk).unwrap_or_else(|e| panic!("{e}"));
    value["kid"] = json!(kid);
    value["use"] = json!("sig");
    value
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "subject-1",
        "email": "night.shift@provider.example",
        "email_verified": true,
        "iat": now(),
        "exp": now() + 300,
    })
}

pub(super) fn sign(claims: &Value, kid: &str, pem: &[u8]) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding_key(pem)).unwrap_or_else(|e| panic!("{e}"))
}

/// A stand-in provider on loopback: discovery document and a key set the test can swap.
pub(super) struct Stub {
    pub(super) issuer: String,
    pub(super) jwks: Arc<Mutex<Value>>,
    pub(super) fetches: Arc<std::sync::atomic::AtomicUsize>,
}

pub(super) async fn stub(keys: Value) -> Stub {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let issuer = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let jwks = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let metadata = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let (served, counter) = (jwks.clone(), fetches.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/jwks",
            get(move || async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(
                    served
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Stub {
        issuer,
        jwks,
        fetches,
    }
}

pub(super) fn settings(issuer: &str, audience: Option<&str>) -> OidcSettings {
    OidcSettings {
        issuer_url: Some(Url::parse(issuer).unwrap_or_else(|e| panic!("{e}"))),
        client_id: Some(CLIENT.to_owned()),
        client_secret: Some(SecretString::from("s3cret")),
        audience: audience.map(str::to_owned),
        identity_claim: "email".to_owned(),
        session_ttl: Duration::from_secs(3600),
    }
}

pub(super) async fn provider(issuer: &str, audience: Option<&str>) -> OidcProvider {
    let public = Url::parse("https://killswitch.example").unwrap_or_else(|e| panic!("{e}"));
    OidcProvider::discover(
        &settings(issuer, audience),
        &public,
        Duration::from_secs(3600),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn claims_for(stub: &Stub) -> Value {
    let mut claims = claims();
    claims["iss"] = json!(stub.issuer);
    claims
}
