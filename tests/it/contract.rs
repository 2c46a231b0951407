//! The served contract, checked by Schemathesis against the running service: every answer's
//! status, content type and body must be the ones `/openapi.json` documents, and nothing may
//! answer 5xx except the documented Graph and storage failures.
//!
//! Runs only when asked (`cargo test --test it contract -- --ignored`): `.ci/schemathesis-check`
//! installs the pinned Schemathesis and points `SCHEMATHESIS` at it. The service runs here, on
//! the fake Entra with two customers, so the generated requests reach real accounts.

use crate::common;

use std::process::Command;

use common::entra::{self, TwoTenants};
use common::{Analyst, TestApp};
use killswitch::audit::Actor;
use killswitch::auth::Role;
use killswitch::customers::Policy;
use killswitch::customers::onboarding::SecretIssue;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// Analysts per role: each spends one one-time-code step per 30 seconds.
const ANALYSTS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Schemathesis: run by .ci/schemathesis-check"]
async fn schemathesis_finds_every_answer_as_the_contract_documents() {
    let schemathesis = std::env::var("SCHEMATHESIS").expect("SCHEMATHESIS names the tool");
    // Failures are the tool's business here; limits would only hide the operations behind 429.
    let rig = entra::two_tenants(
        &[
            ("mfa.max_failures", "100"),
            ("auth.max_failures_per_client", "100000"),
        ],
        Policy::default(),
    )
    .await;
    let known = seed(&rig).await;
    let mut analysts = serde_json::Map::new();
    for role in [Role::Lead, Role::Admin] {
        let mut pool = Vec::new();
        for n in 0..ANALYSTS {
            let email = format!("{role}-{n}@provider.example");
            let analyst = rig.app.enroll(&email, role, "all").await;
            pool.push(
                json!({"token": analyst.token, "totp_hex": const_hex::encode(&analyst.totp)}),
            );
        }
        analysts.insert(role.to_string(), pool.into());
    }
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract");
    let app = rig.app.base.clone();
    // The tool keeps a cache where it runs; not in the repository.
    let scratch = tempfile::tempdir().unwrap();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(scratch.path())
            .args(["run", &format!("{app}/openapi.json")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--max-examples", &max_examples()])
            .args(["--seed", "1"])
            .args(["--workers", "1"])
            .args(["--generation-with-security-parameters", "false"])
            .arg("--no-color")
            .env("PYTHONPATH", hooks)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("KILLSWITCH_CONTRACT_ANALYSTS", Value::from(analysts).to_string())
            .env("KILLSWITCH_CONTRACT_KNOWN", known.to_string())
            .status()
    })
    .await
    .unwrap()
    .expect("Schemathesis runs");
    assert!(
        run.success(),
        "Schemathesis found answers the contract does not document"
    );
}

/// Examples per operation: enough to reach every documented answer, bounded to minutes.
fn max_examples() -> String {
    std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "60".to_owned())
}

/// Things that exist, for the hooks to name: both customers and their accounts, two actions
/// (one disable through the API), and pending detections delivered with the customer's secret.
async fn seed(rig: &TwoTenants) -> Value {
    let app = &rig.app;
    let accounts: Vec<String> = ["alice", "bob", "carol", "breakglass", "dave"]
        .iter()
        .map(|name| format!("{name}@contoso.onmicrosoft.com"))
        .collect();
    let lead = app.enroll("seed@provider.example", Role::Lead, "all").await;
    let action = disable(app, &lead, "carol@contoso.onmicrosoft.com").await;
    let secret = app
        .onboarding
        .issue_webhook_secret(&rig.contoso, SecretIssue::First, &Actor::operator())
        .await
        .unwrap();
    let mut detections = Vec::new();
    for n in 0..6 {
        let delivered: Value = app
            .client
            .post(app.url("/api/v1/webhooks/falcon/contoso"))
            .bearer_auth(secret.secret.expose_secret())
            .json(&json!({
                "composite_id": format!("contract:{n}"),
                "severity": "high",
                "source_account_upn": "bob@contoso.onmicrosoft.com",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        detections.push(delivered["id"].clone());
    }
    json!({
        "customers": ["contoso", "fabrikam"],
        "accounts": {
            "contoso": accounts,
            "fabrikam": accounts.iter().map(|a| a.replace("contoso", "fabrikam")).collect::<Vec<_>>(),
        },
        "actions": [action],
        "detections": detections,
    })
}

async fn disable(app: &TestApp, lead: &Analyst, account: &str) -> Value {
    let answer: Value = app
        .client
        .post(app.url(&format!(
            "/api/v1/customers/contoso/accounts/{account}/disable"
        )))
        .bearer_auth(&lead.token)
        .header("X-Killswitch-OTP", lead.code())
        .json(&json!({"reason": "seeding the contract run"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].clone()
}

async fn served_document(app: &TestApp) -> Value {
    app.client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every operation, as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[tokio::test]
async fn the_document_gives_every_route_the_answers_its_kind_of_route_can_give() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            let content = response["content"].as_object().unwrap();
            assert!(
                content.contains_key("application/problem+json")
                    && !content.contains_key("application/json"),
                "{method} {path} {status} is served as problem+json: {content:?}"
            );
        }
        let mut owed = Vec::new();
        if operation["security"].is_array() {
            owed.extend(["401", "429", "503"]);
            if operation["requestBody"].is_object() {
                owed.extend(["400", "413", "415", "422"]);
            }
        }
        let has_query = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["in"] == "query");
        if has_query || path.contains("{account}") {
            owed.push("422");
        }
        for status in owed {
            assert!(
                responses.contains_key(status),
                "{method} {path} can answer {status}"
            );
        }
    }
}

#[tokio::test]
async fn the_document_states_the_values_the_server_accepts() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    let parameter = |path: &str, name: &str| -> Value {
        let operation = &doc["paths"][path]["get"];
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))["schema"]
            .clone()
    };
    assert_eq!(
        parameter("/api/v1/actions", "state")["enum"],
        json!(["requested", "succeeded", "noop", "failed", "denied"])
    );
    assert_eq!(
        parameter("/api/v1/detections", "state")["enum"],
        json!(["pending", "auto_remediated", "approved", "dismissed"])
    );
    assert_eq!(
        parameter("/api/v1/customers/{customer}/audit/export", "format")["enum"],
        json!(["jsonl", "csv", "ocsf", "html"])
    );
    for path in ["/api/v1/actions", "/api/v1/detections"] {
        let limit = parameter(path, "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(1000))
        );
    }
    let slug = parameter("/api/v1/customers/{customer}", "customer");
    let pattern = slug["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$");
    let export = &doc["paths"]["/api/v1/customers/{customer}/audit/export"]["get"];
    let media: Vec<&String> = export["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(media, ["application/x-ndjson", "text/csv", "text/html"]);
    let schemas = &doc["components"]["schemas"];
    let policy = &schemas["PolicyView"]["properties"];
    assert_eq!(
        policy["auto_disable"]["enum"],
        json!(["off", "high", "critical"])
    );
    assert_eq!(policy["max_actions_per_hour"]["minimum"], json!(1));
    assert_eq!(policy["max_actions_per_hour"]["maximum"], json!(10000));
    for request in ["DisableRequest", "EnableRequest", "DismissRequest"] {
        let reason = &schemas[request]["properties"]["reason"];
        assert_eq!(reason["maxLength"], json!(500), "{request}");
        assert_eq!(reason["minLength"], json!(1), "{request}");
        let one_line = reason["pattern"].as_str().unwrap();
        assert!(
            one_line.contains(r"\u0000-\u001f") && one_line.contains(r"\u2028-\u202e"),
            "{request}"
        );
    }
}

#[tokio::test]
async fn a_listing_limit_outside_the_documented_range_is_refused_not_clamped() {
    let rig = entra::two_tenants(&[], Policy::default()).await;
    let lead = rig
        .app
        .enroll("lead@provider.example", Role::Lead, "all")
        .await;
    for path in ["/api/v1/actions", "/api/v1/detections"] {
        for (limit, status) in [
            ("-1", 422),
            ("0", 422),
            ("1001", 422),
            ("2147483648", 422),
            ("99999999999999999999", 422),
            ("ten", 422),
            ("1", 200),
            ("1000", 200),
        ] {
            let answer = rig
                .app
                .client
                .get(rig.app.url(&format!("{path}?limit={limit}")))
                .bearer_auth(&lead.token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), status, "{path}?limit={limit}");
            if status == 422 {
                let problem: Value = answer.json().await.unwrap();
                assert_eq!(
                    problem["type"], "/problems/invalid-input",
                    "{path}?limit={limit}"
                );
                assert!(
                    problem["detail"].as_str().unwrap().contains("limit"),
                    "{problem}"
                );
            }
        }
    }
}
