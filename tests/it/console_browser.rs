//! The analyst console in a real browser: `tests/console/e2e.mjs` drives Debian's Chromium
//! (playwright-core) through sign-in with a token and with single sign-on, the home page's
//! lights, finding, disabling and enabling an account, a reused code, a protected account, the
//! detection queue, the auditor's export, out-of-scope customers, the actions and the
//! administration page, with axe-core on every page.
//!
//! Runs only when asked (`cargo test --test it console_browser -- --ignored`):
//! `.ci/console-e2e` installs Chromium and the npm packages first. Screenshots of every page go
//! to the folder `KILLSWITCH_SCREENSHOTS` names (relative to the repository), when it is set.
//!
//! Here: killswitch on the fake Entra (contoso ready, fabrikam not: its consent was withdrawn
//! before a real connection test) and on a real OpenID provider, two pending detections, one
//! analyst per part, and a loopback endpoint that gives the browser one-time codes by moving
//! the service's clock a step forward each time (no waiting 30 seconds between actions).

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use common::entra::{self, ALICE, BOB, BREAKGLASS, CAROL, CONTOSO, FABRIKAM};
use common::oidc::{self, Provider, repo};
use common::{Analyst, TestApp};
use fake_entra::FakeEntra;
use killswitch::audit::Actor;
use killswitch::audit::event::Operation;
use killswitch::auth::{Role, mfa};
use killswitch::customers::onboarding::SecretIssue;
use killswitch::customers::{Customer, Policy};
use killswitch::domain::action::ActionState;
use killswitch::falcon::records::DetectionState;
use killswitch::falcon::signature::{SignedString, sign_crowdstrike};
use killswitch::store::ActionFilter;
use killswitch::time::ManualClock;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

const ALICE_UPN: &str = "alice@contoso.onmicrosoft.com";
const BOB_UPN: &str = "bob@contoso.onmicrosoft.com";
const CAROL_UPN: &str = "carol.admin@contoso.onmicrosoft.com";
const BREAKGLASS_UPN: &str = "breakglass@contoso.onmicrosoft.com";
/// The provider's development login that signs in as `night.shift@provider.example`.
const SSO_LOGIN: &str = "night.shift";
const SSO_EMAIL: &str = "night.shift@provider.example";
const STEPS: &str = "abcdefghijkl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and the npm packages: run by .ci/console-e2e"]
async fn the_console_does_in_a_real_browser_what_its_pages_say_and_passes_axe() {
    let stage = Stage::set_up().await;
    let scratch = tempfile::tempdir().unwrap();
    let harness = serve_harness(&stage).await;
    let config = stage.config(&harness, scratch.path()).await;
    let config_file = scratch.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let script = repo("tests/console/e2e.mjs");
    assert!(
        repo("tests/console/node_modules/playwright-core").is_dir(),
        "tests/console/node_modules is missing: run npm ci --prefix tests/console"
    );
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(repo(""))
            .env("KILLSWITCH_E2E_CONFIG", config_file)
            .status()
    })
    .await
    .unwrap()
    .expect("node runs (is Node.js installed?)");
    let results: Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("results.json")).unwrap())
            .unwrap_or_default();
    assert!(
        run.success(),
        "the browser run failed (above: the step and every axe-core violation)"
    );
    stage.check_what_the_browser_did(&results).await;
}

/// killswitch, the fake Entra and the OpenID provider, seeded for the story.
struct Stage {
    app: TestApp,
    fake: FakeEntra,
    _provider: Provider,
    analysts: Vec<(&'static str, Role, Analyst)>,
    contoso: Customer,
    fabrikam: Customer,
    /// The pending detections: the one the browser approves (bob), the one it dismisses (carol).
    detections: [Uuid; 2],
}

impl Stage {
    async fn set_up() -> Stage {
        let fake = entra::fake_entra().await;
        entra::add_tenant(&fake, FABRIKAM, "fabrikam");
        let base = fake.base_url();
        let (app, provider) = oidc::app_with_provider(&entra::settings(&base)).await;
        let policy = Policy {
            protected: vec![BREAKGLASS_UPN.parse().unwrap()],
            ..Policy::default()
        };
        let contoso = entra::add_customer(&app.store, "contoso", CONTOSO, policy).await;
        let fabrikam =
            entra::add_customer(&app.store, "fabrikam", FABRIKAM, Policy::default()).await;
        // Real connection tests: contoso passes; fabrikam's administrator withdrew consent.
        fake.set_consent(FABRIKAM, false, vec![]);
        for customer in [&contoso, &fabrikam] {
            app.onboarding
                .test_connection(customer, &Actor::operator())
                .await
                .unwrap();
        }
        let secret = app
            .onboarding
            .issue_webhook_secret(&contoso, SecretIssue::First, &Actor::operator())
            .await
            .unwrap();
        let secret = secret.secret.expose_secret();
        let detections = [
            pending_detection(&app, secret, "browser:1", BOB_UPN).await,
            pending_detection(&app, secret, "browser:2", CAROL_UPN).await,
        ];
        let mut analysts = Vec::new();
        for (part, role, scope) in [
            ("responder", Role::Analyst, "contoso,fabrikam"),
            ("lead", Role::Lead, "all"),
            ("auditor", Role::Auditor, "all"),
            ("admin", Role::Admin, "all"),
            ("outsider", Role::Analyst, "fabrikam"),
        ] {
            let email = format!("{part}@provider.example");
            analysts.push((part, role, app.enroll(&email, role, scope).await));
        }
        app.enroll(SSO_EMAIL, Role::Analyst, "all").await;
        // As tested.
        let contoso = stored(&app, "contoso").await;
        let fabrikam = stored(&app, "fabrikam").await;
        Stage {
            contoso,
            fabrikam,
            app,
            fake,
            _provider: provider,
            analysts,
            detections,
        }
    }

    /// What e2e.mjs reads (its header describes every field).
    async fn config(&self, harness: &str, scratch: &Path) -> Value {
        let mut analysts = serde_json::Map::new();
        for (part, role, analyst) in &self.analysts {
            analysts.insert(
                (*part).to_owned(),
                json!({
                    "email": analyst.email,
                    "role": role.as_str(),
                    "token": analyst.token,
                    "totp_hex": const_hex::encode(&analyst.totp),
                }),
            );
        }
        analysts.insert(
            "sso".to_owned(),
            json!({"email": SSO_EMAIL, "role": "analyst", "login": SSO_LOGIN}),
        );
        let (_, _, responder) = &self.analysts[0];
        let unix = 1_700_000_000;
        json!({
            "base_url": self.app.base,
            "code_url": format!("{harness}/code"),
            "entra_url": format!("{harness}/entra"),
            "analysts": analysts,
            "customers": [light(&self.contoso), light(&self.fabrikam)],
            "accounts": {"customer": "contoso", "target": ALICE_UPN, "protected": BREAKGLASS_UPN},
            "detections": {
                "approve": {"id": self.detections[0], "account": BOB_UPN},
                "dismiss": {"id": self.detections[1], "account": CAROL_UPN},
            },
            "totp_check": {
                "totp_hex": const_hex::encode(&responder.totp),
                "unix": unix,
                "code": mfa::code_at(&responder.totp, unix).unwrap(),
            },
            "screenshot_dir": screenshot_dir(),
            "download_dir": scratch.join("downloads"),
            "results": scratch.join("results.json"),
        })
    }

    /// After the browser: Entra, the store and the audit log say what the pages said.
    async fn check_what_the_browser_did(&self, results: &Value) {
        let passed = results["passed"].as_array().unwrap();
        let ran = |step: &str| passed.iter().any(|s| s == step);
        if std::env::var_os("E2E_ONLY").is_none() && std::env::var_os("E2E_SKIP").is_none() {
            for step in STEPS.chars() {
                assert!(ran(&step.to_string()), "step {step} did not run: {results}");
            }
        }
        let enabled = |id: Uuid| {
            self.fake
                .user(CONTOSO, &id.to_string())
                .unwrap()
                .account_enabled
        };
        if ran("e") {
            assert_eq!(enabled(ALICE), ran("h"), "alice: disabled, then enabled");
            let operations = self.actions_on(ALICE_UPN, ActionState::Succeeded).await;
            let expected: &[Operation] = if ran("h") {
                &[Operation::Disable, Operation::Enable]
            } else {
                &[Operation::Disable]
            };
            assert_eq!(operations, expected);
        }
        if ran("g") {
            assert!(enabled(BREAKGLASS), "the protected account stays enabled");
        }
        if ran("i") {
            assert!(!enabled(BOB) && enabled(CAROL));
            for (id, state) in self
                .detections
                .iter()
                .zip([DetectionState::Approved, DetectionState::Dismissed])
            {
                let detection = self.app.store.detection(*id).await.unwrap().unwrap();
                assert_eq!(detection.state, state, "detection {id}");
            }
        }
        if ran("j") {
            self.verify_export(results["export"].as_str().unwrap())
                .await;
        }
        common::verify_chain(&self.app.store, "contoso").await;
        common::verify_chain(&self.app.store, "system").await;
    }

    /// The operations of the actions on `account` that ended in `state`, oldest first.
    async fn actions_on(&self, account: &str, state: ActionState) -> Vec<Operation> {
        let filter = ActionFilter {
            customers: Some(vec![self.contoso.slug.clone()]),
            state: Some(state),
            limit: 100,
            ..ActionFilter::default()
        };
        let mut actions = self.app.store.actions(&filter).await.unwrap();
        actions.retain(|a| a.account == account);
        actions.sort_by_key(|a| a.created_at.to_string());
        actions.iter().map(|a| a.operation).collect()
    }

    /// The downloaded export passes `killswitch audit verify`, with the key the server
    /// publishes, as contoso's.
    async fn verify_export(&self, file: &str) {
        let published: Value = self
            .app
            .client
            .get(self.app.url("/api/v1/audit/public-key"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = self.app.db.dir.path().join("published-key.pem");
        std::fs::write(&key, published["pem"].as_str().unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_killswitch"))
            .current_dir(self.app.db.dir.path())
            .env("KILLSWITCH_DATA_DIR", self.app.db.dir.path())
            .env("KILLSWITCH_DATABASE__URL", &self.app.db.url)
            .env_remove("RUST_LOG")
            .args([
                "audit",
                "verify",
                file,
                "--customer",
                "contoso",
                "--public-key",
            ])
            .arg(&key)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "killswitch audit verify refused the console's export: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.starts_with("intact: contoso"), "{said}");
    }
}

async fn stored(app: &TestApp, slug: &str) -> Customer {
    app.store
        .customer(&slug.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// A customer and the words its card shows for the last connection test.
fn light(customer: &Customer) -> Value {
    let connection = customer.connection.as_ref().unwrap();
    let words = if connection.ready {
        "Ready".to_owned()
    } else {
        format!("Not ready: {}", connection.detail)
    };
    json!({"slug": customer.slug, "ready": connection.ready, "connection": words})
}

/// A Falcon detection of `account` for contoso, signed the CrowdStrike way; it waits for an
/// analyst (contoso has not opted in to automatic disabling).
async fn pending_detection(app: &TestApp, secret: &str, composite_id: &str, account: &str) -> Uuid {
    let body = serde_json::to_vec(&json!({
        "composite_id": composite_id,
        "severity": "high",
        "tactic": "Credential Access",
        "technique": "Brute Force",
        "source_account_upn": account,
    }))
    .unwrap();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = sign_crowdstrike(
        secret.as_bytes(),
        &timestamp,
        &body,
        SignedString::BodyTimestampBase64,
    );
    let delivered: Value = app
        .client
        .post(app.url("/api/v1/webhooks/falcon/contoso"))
        .header("X-CS-Primary-Signature", signature)
        .header("X-CS-Delivery-Timestamp", timestamp)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(delivered["state"], "pending", "{delivered}");
    delivered["id"].as_str().unwrap().parse().unwrap()
}

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("KILLSWITCH_SCREENSHOTS")
        .filter(|dir| !dir.is_empty())
        .map(|dir| repo("").join(dir))
}

/// What the browser asks the harness, on loopback.
#[derive(Clone)]
struct Harness {
    clock: ManualClock,
    secrets: Arc<HashMap<String, Vec<u8>>>,
    fake: FakeEntra,
}

/// Serves `/code` and `/entra` (see e2e.mjs); the base URL.
async fn serve_harness(stage: &Stage) -> String {
    let harness = Harness {
        clock: stage.app.clock.clone(),
        secrets: Arc::new(
            stage
                .analysts
                .iter()
                .map(|(_, _, a)| (a.email.clone(), a.totp.clone()))
                .collect(),
        ),
        fake: stage.fake.clone(),
    };
    let routes = axum::Router::new()
        .route("/code", axum::routing::get(next_code))
        .route("/entra", axum::routing::get(entra_user))
        .with_state(harness);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, routes).await });
    format!("http://{address}")
}

/// Moves killswitch's clock to the next time step and answers the analyst's code for it: a
/// step nobody has used, accepted at once.
async fn next_code(
    State(harness): State<Harness>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<String, StatusCode> {
    let secret = query
        .get("analyst")
        .and_then(|email| harness.secrets.get(email))
        .ok_or(StatusCode::NOT_FOUND)?;
    harness.clock.advance(Duration::from_secs(mfa::STEP_SECS));
    let now = killswitch::time::Clock::now(&harness.clock);
    mfa::code_at(secret, now.as_datetime().timestamp() as u64)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// The fake Entra's word on an account: `{"enabled": bool}`.
async fn entra_user(
    State(harness): State<Harness>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let tenant = match query.get("customer").map(String::as_str) {
        Some("contoso") => CONTOSO,
        Some("fabrikam") => FABRIKAM,
        _ => return Err(StatusCode::NOT_FOUND),
    };
    let account = query.get("account").ok_or(StatusCode::NOT_FOUND)?;
    let user = harness
        .fake
        .user(tenant, account)
        .ok_or(StatusCode::NOT_FOUND)?;
    Ok(Json(json!({"enabled": user.account_enabled})))
}
