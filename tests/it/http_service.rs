//! The running service: health, readiness, metrics, request ids, problem+json errors, limits,
//! and the checkpoint it signs when it stops.

use crate::common;

use common::TestApp;
use killswitch::audit::{Actor, AuditEvent};
use killswitch::domain::ChainId;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readyz_is_ready_on_defaults_and_names_what_remediation_lacks() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(
        body["checks"]["database"]["backend"],
        app.db.backend().name()
    );
    assert_eq!(body["checks"]["audit_signing_key"]["status"], "ok");
    assert_eq!(body["remediation"]["ready"], false);
    assert_eq!(
        body["remediation"]["missing"],
        serde_json::json!([
            "entra.client_id",
            "entra.client_secret or entra.certificate_file"
        ])
    );
}

#[tokio::test]
async fn readyz_reports_remediation_ready_once_the_app_credentials_are_set() {
    let app = TestApp::spawn_with(&[
        ("entra.client_id", "11111111-2222-3333-4444-555555555555"),
        ("entra.client_secret", "not-shown"),
    ])
    .await;
    let body: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["remediation"]["ready"], true);
    assert!(
        !body.to_string().contains("not-shown"),
        "readiness must not echo secrets"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_database_goes_away_on_postgres() {
    let app = TestApp::spawn().await;
    if !app.db.is_postgres() {
        eprintln!(
            "a SQLite file cannot be made unreachable under a running pool; covered on PostgreSQL"
        );
        return;
    }
    let name = url::Url::parse(&app.db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let server = std::env::var(common::DATABASE_ENV).unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["status"], "unavailable");
    assert!(
        !body.to_string().contains("postgres://"),
        "no connection details leak: {body}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_honours_a_given_one() {
    let app = TestApp::spawn().await;
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
        Ok(4)
    );
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "soc-ticket-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "soc-ticket-4711");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_json() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["status"].as_u64()),
        (Some("/problems/not-found"), Some(404))
    );

    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        response.headers().contains_key("allow"),
        "405 keeps its Allow header"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413_problem_json() {
    let app = TestApp::spawn_with(&[("server.body_limit_bytes", "2048")]).await;
    let response = app
        .client
        .post(app.url("/healthz"))
        .header("content-length", "4096")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/body-too-large");
}

#[tokio::test]
async fn metrics_expose_request_counts_by_route_template() {
    let app = TestApp::spawn().await;
    app.client.get(app.url("/readyz")).send().await.unwrap();
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("killswitch_http_requests_total{")
                && l.contains("route=\"/readyz\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
}

#[tokio::test]
async fn stopping_signs_a_checkpoint_over_every_chain_that_advanced() {
    let mut app = TestApp::spawn().await;
    let store = app.store.clone();
    let chain: ChainId = "contoso".parse().unwrap();
    for _ in 0..3 {
        store
            .append(
                &chain,
                &Actor::Service,
                &AuditEvent::ConsentGranted {
                    tenant_id: "t".into(),
                },
            )
            .await
            .unwrap();
    }
    assert!(store.checkpoints("contoso").await.unwrap().is_empty());
    app.stop().await.unwrap();
    let checkpoints = store.checkpoints("contoso").await.unwrap();
    assert_eq!(checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(), [3]);
    assert_eq!(
        store.checkpoints("system").await.unwrap().len(),
        1,
        "the key registration is covered too"
    );
}
