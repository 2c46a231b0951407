//! What an outside security review asked of the running service, on SQLite and PostgreSQL: a
//! fresh one-time code for every change, decisions that cannot both win, idempotency keys that
//! stay their owner's, revocable webhook secrets, refusals recorded for the customer they aimed
//! at, bounded failure counting behind proxies, slow clients cut off, logs that cannot be
//! forged, private files and rotatable encryption keys.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::entra::{self, CONTOSO};
use common::serve::{Server, env_of};
use common::{Analyst, TestApp, TestDb};
use fake_entra::{Endpoint, FakeEntra};
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::Role;
use killswitch::customers::Policy;
use killswitch::customers::onboarding::SecretIssue;
use killswitch::falcon::signature::{SignedString, sign_crowdstrike};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const ALICE: &str = "alice@contoso.onmicrosoft.com";
const BOB: &str = "bob@contoso.onmicrosoft.com";
const BOB_SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1105";
const ROUTE_TABLE_HEADER: &str =
    "| method | route | credential | roles | one-time code | CSRF with a session |";

struct Rig {
    app: TestApp,
    fake: FakeEntra,
    /// contoso's Falcon webhook secret.
    secret: String,
}

fn generous() -> Policy {
    Policy {
        max_actions_per_hour: 10_000,
        ..Policy::default()
    }
}

async fn rig(overrides: &[(&str, &str)]) -> Rig {
    let base = entra::two_tenants(overrides, generous()).await;
    let issued = base
        .app
        .onboarding
        .issue_webhook_secret(&base.contoso, SecretIssue::First, &Actor::operator())
        .await
        .unwrap();
    Rig {
        app: base.app,
        fake: base.fake,
        secret: issued.secret.expose_secret().to_owned(),
    }
}

impl Rig {
    async fn analyst(&self, role: Role, scope: &str) -> Analyst {
        let email = format!("{role}-{}@provider.example", Uuid::new_v4().simple());
        self.app.enroll(&email, role, scope).await
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        who: &Analyst,
        code: Option<&str>,
    ) -> RequestBuilder {
        let mut request = self
            .app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&who.token);
        if let Some(code) = code {
            request = request.header("X-Killswitch-OTP", code);
        }
        request
    }

    async fn disable(
        &self,
        who: &Analyst,
        account: &str,
        code: Option<&str>,
        body: Value,
    ) -> Response {
        let path = format!("/api/v1/customers/contoso/accounts/{account}/disable");
        self.request(Method::POST, &path, who, code)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn events(&self, chain: &str) -> Vec<AuditEvent> {
        common::events(&self.app.store, chain).await
    }

    /// Delivers a Falcon detection for bob to contoso, signed with `secret`.
    async fn deliver(&self, secret: &str, composite_id: &str, severity: &str) -> Response {
        let body = serde_json::to_vec(&json!({
            "composite_id": composite_id,
            "severity": severity,
            "source_account_upn": BOB,
            "source_account_object_sid": BOB_SID,
        }))
        .unwrap();
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = sign_crowdstrike(
            secret.as_bytes(),
            &ts,
            &body,
            SignedString::BodyTimestampBase64,
        );
        self.app
            .client
            .post(self.app.url("/api/v1/webhooks/falcon/contoso"))
            .header("X-CS-Primary-Signature", signature)
            .header("X-CS-Delivery-Timestamp", ts)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A new detection for bob, waiting for an analyst; its id.
    async fn pending_detection(&self, composite_id: &str) -> String {
        let response = self.deliver(&self.secret, composite_id, "high").await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let detection: Value = response.json().await.unwrap();
        assert_eq!(detection["state"], "pending", "{detection}");
        detection["id"].as_str().unwrap().to_owned()
    }

    async fn detection(&self, id: &str) -> Value {
        let auditor = self.analyst(Role::Auditor, "all").await;
        self.request(
            Method::GET,
            &format!("/api/v1/detections/{id}"),
            &auditor,
            None,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }
}

async fn problem(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, response.json().await.unwrap())
}

async fn problem_type(response: Response) -> (StatusCode, String) {
    let (status, body) = problem(response).await;
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

/// The rows of the route table in `file` (README.md, docs/security.md), cells trimmed.
fn route_table(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.lines()
        .skip_while(|line| *line != ROUTE_TABLE_HEADER)
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn every_route_the_readme_lists_as_needing_a_code_refuses_a_request_without_one() {
    let rig = rig(&[]).await;
    let table = route_table("README.md");
    assert_eq!(
        table,
        route_table("docs/security.md"),
        "README.md and docs/security.md list the same routes"
    );
    // Every state-changing operation the API documents is in the table.
    let doc: Value = rig
        .app
        .client
        .get(rig.app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if operations.get(method).is_some() {
                let listed = table.iter().any(|row| {
                    row[0].eq_ignore_ascii_case(method) && row[1].contains(&format!("`{path}`"))
                });
                assert!(listed, "{method} {path} is not in the README's route table");
            }
        }
    }

    let detection = rig.pending_detection("table:1").await;
    let policy_before = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap();
    let required: Vec<&Vec<String>> = table.iter().filter(|row| row[4] == "required").collect();
    assert_eq!(required.len(), 8, "{required:?}");
    for row in required {
        let role: Role = row[3].split(',').next().unwrap().trim().parse().unwrap();
        let who = rig.analyst(role, "all").await;
        let route = row[1].trim_matches('`');
        let path = route
            .replace("{customer}", "contoso")
            .replace("{account}", ALICE)
            .replace("{id}", &detection);
        let body = match route.rsplit('/').next().unwrap() {
            "disable" | "enable" | "dismiss" => json!({"reason": "checking the second factor"}),
            "policy" => json!({"protected": [], "max_actions_per_hour": 5, "revoke_sessions": true,
                               "auto_disable": "critical", "contact": null}),
            "webhook-secret" => json!({"rotate": true}),
            _ => Value::Null,
        };
        let method: Method = row[0].parse().unwrap();
        let mut request = rig.request(method, &path, &who, None);
        if !body.is_null() {
            request = request.json(&body);
        }
        assert_eq!(
            problem_type(request.send().await.unwrap()).await,
            (
                StatusCode::UNAUTHORIZED,
                "/problems/otp-required".to_owned()
            ),
            "{} {route}",
            row[0]
        );
    }
    // And nothing happened.
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    assert_eq!(rig.detection(&detection).await["state"], "pending");
    let policy_after = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        policy_before.map(|c| c.policy),
        policy_after.map(|c| c.policy)
    );
}

#[tokio::test]
async fn approve_and_dismiss_racing_fifty_times_have_one_winner_and_a_dismissal_sends_nothing() {
    let rig = rig(&[]).await;
    let mut wins = [0usize; 2];
    for round in 0..50 {
        rig.fake.set_account_enabled(CONTOSO, BOB, true);
        let id = rig.pending_detection(&format!("race:{round}")).await;
        let (approver, dismisser) = (
            rig.analyst(Role::Analyst, "all").await,
            rig.analyst(Role::Lead, "all").await,
        );
        let patches = rig.fake.count(Endpoint::PatchUser);
        let approve = rig
            .request(
                Method::POST,
                &format!("/api/v1/detections/{id}/approve"),
                &approver,
                Some(&approver.code()),
            )
            .send();
        let dismiss = rig
            .request(
                Method::POST,
                &format!("/api/v1/detections/{id}/dismiss"),
                &dismisser,
                Some(&dismisser.code()),
            )
            .json(&json!({"reason": "a known test"}))
            .send();
        let (approved, dismissed) = tokio::join!(approve, dismiss);
        let (approved, dismissed) = (approved.unwrap(), dismissed.unwrap());
        let (winner, loser) = match (approved.status(), dismissed.status()) {
            (StatusCode::OK, StatusCode::CONFLICT) => ("approved", dismissed),
            (StatusCode::CONFLICT, StatusCode::OK) => ("dismissed", approved),
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        wins[usize::from(winner == "dismissed")] += 1;
        let (_, refusal) = problem(loser).await;
        assert_eq!(
            refusal["type"], "/problems/detection-decided",
            "round {round}"
        );
        assert_eq!(refusal["state"], winner, "round {round}");
        let stored = rig.detection(&id).await;
        assert_eq!(stored["state"], winner, "round {round}");
        let sent = rig.fake.count(Endpoint::PatchUser) - patches;
        if winner == "dismissed" {
            assert_eq!(
                sent, 0,
                "round {round}: a dismissed detection sent a change to Entra"
            );
            assert!(stored["action_id"].is_null());
            assert!(rig.fake.user(CONTOSO, BOB).unwrap().account_enabled);
        } else {
            assert_eq!(sent, 1, "round {round}");
            assert!(!rig.fake.user(CONTOSO, BOB).unwrap().account_enabled);
        }
        let decided = rig
            .events("contoso")
            .await
            .into_iter()
            .filter(|e| matches!(e, AuditEvent::DetectionDecided { detection_id, .. } if detection_id.to_string() == id))
            .count();
        assert_eq!(decided, 1, "round {round}: one decision recorded");
    }
    assert_eq!(wins.iter().sum::<usize>(), 50, "{wins:?}");
    common::verify_chain(&rig.app.store, "contoso").await;
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_analyst_who_sent_them_and_falcon_keys_are_reserved() {
    let rig = rig(&[]).await;
    let (first, second) = (
        rig.analyst(Role::Analyst, "all").await,
        rig.analyst(Role::Analyst, "all").await,
    );
    let body = json!({"reason": "Falcon ITP: credential theft"});
    let send = |who: &Analyst, key: &str, code: Option<String>| {
        let mut request = rig
            .request(
                Method::POST,
                &format!("/api/v1/customers/contoso/accounts/{ALICE}/disable"),
                who,
                code.as_deref(),
            )
            .header("Idempotency-Key", key)
            .json(&body);
        request = request.header("X-Request-Id", Uuid::new_v4().to_string());
        request.send()
    };
    let mine: Value = send(&first, "incident-7", Some(first.code()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["state"], "succeeded");
    // Another analyst with the same key neither gets the first one's action nor skips the code.
    let theirs = send(&second, "incident-7", None).await.unwrap();
    assert_eq!(
        problem_type(theirs).await,
        (
            StatusCode::UNAUTHORIZED,
            "/problems/otp-required".to_owned()
        )
    );
    let theirs: Value = send(&second, "incident-7", Some(second.code()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["id"], mine["id"]);
    assert_eq!(theirs["state"], "noop");
    // The owner's retry is the recorded action, without a code.
    let retried: Value = send(&first, "incident-7", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["id"], mine["id"]);

    // Keys the service derives from detections cannot be taken in advance; the code is not spent.
    let code = first.next_code();
    let reserved = send(
        &first,
        "falcon-0123456789abcdef0123456789abcdef",
        Some(code.clone()),
    )
    .await
    .unwrap();
    let (status, refusal) = problem(reserved).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{refusal}"
    );
    let path = format!("/api/v1/customers/contoso/accounts/{BOB}/disable");
    let fine = rig
        .request(Method::POST, &path, &first, Some(&code))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 2);
}

#[tokio::test]
async fn rotating_leaves_the_new_and_the_replaced_secret_and_revoking_only_the_new() {
    let rig = &rig(&[]).await;
    let issue = |body: Value| async move {
        let admin = rig.analyst(Role::Admin, "all").await;
        rig.request(
            Method::POST,
            "/api/v1/customers/contoso/webhook-secret",
            &admin,
            Some(&admin.code()),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
    };
    let accepted = |secret: String, n: u32| async move {
        rig.deliver(&secret, &format!("secrets:{n}:{}", Uuid::new_v4()), "low")
            .await
            .status()
            == StatusCode::ACCEPTED
    };
    let refused_again = issue(json!({})).await;
    assert_eq!(problem_type(refused_again).await.0, StatusCode::CONFLICT);

    let first = rig.secret.clone();
    let mut secrets = vec![first];
    for _ in 0..2 {
        let rotated: Value = issue(json!({"rotate": true})).await.json().await.unwrap();
        assert!(rotated["previous_valid_until"].is_string(), "{rotated}");
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    }
    // After two rotations: the newest and the one it replaced, not the first.
    assert!(
        !accepted(secrets[0].clone(), 0).await,
        "the first secret still works"
    );
    assert!(accepted(secrets[1].clone(), 1).await);
    assert!(accepted(secrets[2].clone(), 2).await);

    let revoked: Value = issue(json!({"revoke": true})).await.json().await.unwrap();
    let newest = revoked["secret"].as_str().unwrap().to_owned();
    assert!(
        !accepted(secrets[1].clone(), 3).await,
        "a revoked secret still works"
    );
    assert!(
        !accepted(secrets[2].clone(), 4).await,
        "a revoked secret still works"
    );
    assert!(accepted(newest.clone(), 5).await);
    let events = rig.events("contoso").await;
    let issued = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::WebhookSecretIssued { .. }))
        .count();
    assert_eq!(issued, 4);
    for secret in secrets.iter().chain([&newest]) {
        assert!(
            !format!("{events:?}").contains(secret.as_str()),
            "a secret reached the log"
        );
    }
}

#[tokio::test]
async fn a_wrong_code_after_a_lockout_ended_locks_again_and_is_recorded_as_such() {
    let rig = rig(&[("mfa.max_failures", "2"), ("mfa.lockout_secs", "1")]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let body = json!({"reason": "checking lockouts"});
    let wrong = || async {
        let code = who.wrong_code();
        rig.disable(&who, ALICE, Some(&code), body.clone()).await
    };
    assert_eq!(problem_type(wrong().await).await.1, "/problems/otp-invalid");
    assert_eq!(problem_type(wrong().await).await.1, "/problems/locked");
    rig.app.clock.advance(Duration::from_millis(1200));
    let relocked = wrong().await;
    assert!(relocked.headers().contains_key("retry-after"));
    assert_eq!(problem_type(relocked).await.1, "/problems/locked");
    let lockouts = rig
        .events("system")
        .await
        .into_iter()
        .filter(|e| matches!(e, AuditEvent::AnalystLockedOut { analyst_id, .. } if *analyst_id == who.id))
        .count();
    assert_eq!(lockouts, 2, "every lockout is recorded");
    // A right code once the new lockout ended clears the count.
    rig.app.clock.advance(Duration::from_millis(1200));
    let ok = rig
        .disable(&who, ALICE, Some(&who.code()), body.clone())
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(problem_type(wrong().await).await.1, "/problems/otp-invalid");
}

#[tokio::test]
async fn text_that_would_read_differently_on_screen_is_refused_naming_the_field() {
    let rig = rig(&[]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let code = who.code();
    for (body, field) in [
        (
            json!({"reason": "disable \u{202E}lanruoj\u{202C} account"}),
            "reason",
        ),
        (json!({"reason": "two\u{2028}lines"}), "reason"),
        (
            json!({"reason": "fine", "ticket": "SOC-\u{2066}7\u{2069}"}),
            "ticket",
        ),
        (
            json!({"reason": "fine", "ticket": "SOC\u{2029}7"}),
            "ticket",
        ),
    ] {
        let (status, refusal) = problem(rig.disable(&who, ALICE, Some(&code), body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refusal["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{refusal}"
        );
    }
    let id = rig.pending_detection("bidi:1").await;
    let dismiss = rig
        .request(
            Method::POST,
            &format!("/api/v1/detections/{id}/dismiss"),
            &who,
            Some(&code),
        )
        .json(&json!({"reason": "false positive\u{202E}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dismiss.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was done, and the code was not spent on refused input.
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    let ok = rig
        .disable(
            &who,
            ALICE,
            Some(&code),
            json!({"reason": "Überprüfung – № 7"}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn refusals_aimed_at_a_customer_are_in_its_own_chain_and_its_ocsf_export() {
    let rig = rig(&[("mfa.max_failures", "2")]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let body = json!({"reason": "checking the customer's view"});
    let code = who.code();
    assert_eq!(
        rig.disable(&who, ALICE, Some(&code), body.clone())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        problem_type(rig.disable(&who, BOB, Some(&code), body.clone()).await)
            .await
            .1,
        "/problems/otp-reused"
    );
    for _ in 0..2 {
        rig.disable(&who, BOB, Some(&who.wrong_code()), body.clone())
            .await;
    }
    // A disabled analyst's token, aimed at contoso.
    let gone = rig.analyst(Role::Analyst, "all").await;
    let record = rig.app.store.analyst(gone.id).await.unwrap().unwrap();
    rig.app
        .auth
        .set_status(
            &record,
            killswitch::auth::analysts::AnalystStatus::Disabled,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let refused = rig
        .disable(&gone, ALICE, Some(&gone.code()), body.clone())
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let contoso = rig.events("contoso").await;
    let reasons: Vec<String> = contoso
        .iter()
        .filter_map(|e| match e {
            AuditEvent::AuthenticationFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    for expected in ["already used", "wrong one-time code", "disabled analyst"] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
    assert!(contoso.iter().any(
        |e| matches!(e, AuditEvent::AnalystLockedOut { analyst_id, .. } if *analyst_id == who.id)
    ));
    assert!(
        !rig.events("fabrikam")
            .await
            .iter()
            .any(|e| matches!(e, AuditEvent::AuthenticationFailed { .. })),
        "another customer's chain stays out of it"
    );
    common::verify_chain(&rig.app.store, "contoso").await;

    let auditor = rig.analyst(Role::Auditor, "contoso").await;
    let export = rig
        .request(
            Method::GET,
            "/api/v1/customers/contoso/audit/export?format=ocsf",
            &auditor,
            None,
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let authentication = export
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["class_uid"] == 3002)
        .count();
    assert!(
        authentication >= 5,
        "{authentication} Authentication events in {export}"
    );
}

#[tokio::test]
async fn a_policy_change_applies_to_the_very_next_detection() {
    let rig = rig(&[]).await;
    let lead = rig.analyst(Role::Lead, "all").await;
    let put = |auto: &str, code: String| {
        rig.request(
            Method::PUT,
            "/api/v1/customers/contoso/policy",
            &lead,
            Some(&code),
        )
        .json(
            &json!({"protected": [], "max_actions_per_hour": 10000, "revoke_sessions": false,
                          "auto_disable": auto, "contact": null}),
        )
        .send()
    };
    // Warm whatever the intake might keep, then change the policy and deliver at once.
    assert_eq!(
        rig.deliver(&rig.secret, "policy:0", "critical")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        put("high", lead.code()).await.unwrap().status(),
        StatusCode::OK
    );
    let automatic: Value = rig
        .deliver(&rig.secret, "policy:1", "critical")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(automatic["state"], "auto_remediated", "{automatic}");
    rig.fake.set_account_enabled(CONTOSO, BOB, true);
    assert_eq!(
        put("off", lead.next_code()).await.unwrap().status(),
        StatusCode::OK
    );
    let waiting: Value = rig
        .deliver(&rig.secret, "policy:2", "critical")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(rig.fake.user(CONTOSO, BOB).unwrap().account_enabled);
}

#[tokio::test]
async fn consent_callbacks_are_limited_per_client_and_request_ids_are_bounded() {
    let rig = rig(&[("onboarding.callbacks_per_minute", "3")]).await;
    let huge = "A".repeat(20_000);
    let callback = |query: String| {
        rig.app
            .client
            .get(rig.app.url(&format!("/consent/callback?{query}")))
            .send()
    };
    for _ in 0..3 {
        let forged = callback(format!("error=x&error_description={huge}&state=forged"))
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    }
    let limited = callback("state=forged".to_owned()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    for chain in ["system", "contoso"] {
        let consent = rig
            .events(chain)
            .await
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    AuditEvent::ConsentFailed { .. } | AuditEvent::ConsentGranted { .. }
                )
            })
            .count();
        assert_eq!(consent, 0, "an unverifiable callback wrote to {chain}");
    }

    // A request id that is too long or not visible ASCII is replaced, never copied.
    for sent in ["x".repeat(129), "two words".to_owned()] {
        let answered = rig
            .app
            .client
            .get(rig.app.url("/healthz"))
            .header("X-Request-Id", &sent)
            .send()
            .await
            .unwrap();
        let id = answered.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, sent);
        assert!(Uuid::parse_str(&id).is_ok(), "{id}");
    }
    let kept = "r".repeat(128);
    let answered = rig
        .app
        .client
        .get(rig.app.url("/healthz"))
        .header("X-Request-Id", &kept)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.headers()["x-request-id"], kept.as_str());
}

#[tokio::test]
async fn failures_count_per_credential_and_per_real_client_behind_trusted_proxies() {
    let rig = rig(&[
        ("auth.max_failures_per_client", "3"),
        ("server.trusted_proxies", "127.0.0.1/32"),
    ])
    .await;
    let forged = Analyst {
        token: "ks_DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD".into(),
        ..rig.analyst(Role::Analyst, "all").await
    };
    let from = |client: &str, who: &Analyst| {
        rig.request(Method::GET, "/api/v1/actions", who, None)
            .header("X-Forwarded-For", format!("192.0.2.66, {client}"))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            from("203.0.113.5", &forged).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // A client's own `Forwarded` header does not give it a new address: the proxy writes
    // X-Forwarded-For, and only that is believed.
    let disguised = rig
        .request(Method::GET, "/api/v1/actions", &forged, None)
        .header("X-Forwarded-For", "192.0.2.66, 203.0.113.5")
        .header("Forwarded", "for=198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(disguised.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        from("203.0.113.5", &forged).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same balancer is not held back; nor is a working token from
    // the address that failed.
    let nobody = Analyst {
        token: "ks_EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE".into(),
        ..rig.analyst(Role::Analyst, "all").await
    };
    assert_eq!(
        from("203.0.113.6", &nobody).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let analyst = rig.analyst(Role::Analyst, "all").await;
    assert_eq!(
        from("203.0.113.5", &analyst).await.unwrap().status(),
        StatusCode::OK
    );
    // Unknown tokens are nobody's: counted, never written to a chain.
    let system = rig.events("system").await;
    assert!(
        !system
            .iter()
            .any(|e| matches!(e, AuditEvent::AuthenticationFailed { .. })),
        "{system:?}"
    );

    // One analyst's reused codes slow that analyst down, not another.
    let (reuser, bystander) = (
        rig.analyst(Role::Analyst, "all").await,
        rig.analyst(Role::Analyst, "all").await,
    );
    let code = reuser.code();
    let body = json!({"reason": "checking the limiter"});
    assert_eq!(
        rig.disable(&reuser, ALICE, Some(&code), body.clone())
            .await
            .status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        let again = rig.disable(&reuser, ALICE, Some(&code), body.clone()).await;
        assert_eq!(problem_type(again).await.1, "/problems/otp-reused");
    }
    let slowed = rig.disable(&reuser, ALICE, Some(&code), body.clone()).await;
    assert_eq!(problem_type(slowed).await.0, StatusCode::TOO_MANY_REQUESTS);
    let other = rig
        .disable(&bystander, ALICE, Some(&bystander.code()), body.clone())
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_instances_bound_failures_per_instance_and_share_the_lockout() {
    let fake = entra::fake_entra().await;
    let first = entra::spawn_app(
        &fake,
        &[
            ("auth.max_failures_per_client", "2"),
            ("mfa.max_failures", "3"),
        ],
    )
    .await;
    entra::add_customer(&first.store, "contoso", CONTOSO, generous()).await;
    // A second instance on the same database and keys.
    let mut settings = first.db.settings(&[
        ("auth.max_failures_per_client", "2"),
        ("mfa.max_failures", "3"),
        ("entra.authority_url", &fake.base_url()),
        ("entra.graph_url", &fake.base_url()),
        ("entra.client_id", entra::CLIENT_ID),
        ("entra.client_secret", entra::CLIENT_SECRET),
    ]);
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    let services = killswitch::app::Services::open(&settings).await.unwrap();
    let second = killswitch::app::Application::with_services(settings, services)
        .await
        .unwrap();
    let second_base = format!("http://{}", second.local_addr().unwrap());
    tokio::spawn(second.run_until(std::future::pending()));

    let client = reqwest::Client::new();
    let mut unauthorized = 0;
    for _ in 0..4 {
        for base in [&first.base, &second_base] {
            let answer = client
                .get(format!("{base}/api/v1/actions"))
                .bearer_auth("ks_FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
                .send()
                .await
                .unwrap();
            unauthorized += usize::from(answer.status() == StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(
        unauthorized, 4,
        "at most instances × auth.max_failures_per_client"
    );

    // Wrong codes add up across instances: the lockout lives in the database.
    let who = first
        .enroll("shared@provider.example", Role::Analyst, "all")
        .await;
    let path = format!("/api/v1/customers/contoso/accounts/{ALICE}/disable");
    let mut answers = Vec::new();
    for base in [&first.base, &second_base, &first.base, &second_base] {
        let answer = client
            .post(format!("{base}{path}"))
            .bearer_auth(&who.token)
            .header("X-Killswitch-OTP", who.wrong_code())
            .json(&json!({"reason": "two instances"}))
            .send()
            .await
            .unwrap();
        answers.push(problem_type(answer).await.1);
    }
    assert_eq!(
        answers,
        [
            "/problems/otp-invalid",
            "/problems/otp-invalid",
            "/problems/locked",
            "/problems/locked"
        ]
    );
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_and_connections_are_capped() {
    let app = TestApp::spawn_with(&[
        ("server.header_read_timeout_secs", "1"),
        ("server.max_connections", "2"),
    ])
    .await;
    let closes = |mut stream: tokio::net::TcpStream| async move {
        let mut buffer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
        (read.is_ok(), String::from_utf8_lossy(&buffer).into_owned())
    };
    // Headers that never finish.
    let mut slow = tokio::net::TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: killswitch\r\n")
        .await
        .unwrap();
    let (closed, _) = closes(slow).await;
    assert!(closed, "a connection whose headers never finish stays open");

    // A keep-alive connection left idle after its answer.
    let mut idle = tokio::net::TcpStream::connect(app.address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: killswitch\r\n\r\n")
        .await
        .unwrap();
    let (closed, answered) = closes(idle).await;
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // One address may hold only its share of the places: beyond it, a connection is closed.
    let shared = TestApp::spawn_with(&[("server.max_connections_per_client", "1")]).await;
    let _held = tokio::net::TcpStream::connect(shared.address)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut greedy = tokio::net::TcpStream::connect(shared.address)
        .await
        .unwrap();
    let _ = greedy
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: killswitch\r\n\r\n")
        .await;
    let (closed, answered) = closes(greedy).await;
    assert!(closed && answered.is_empty(), "{answered}");

    // Two silent connections hold both places; a third waits until one closes.
    let holders = [
        tokio::net::TcpStream::connect(app.address).await.unwrap(),
        tokio::net::TcpStream::connect(app.address).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(app.address).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: killswitch\r\n\r\n")
        .await
        .unwrap();
    let mut first_byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut first_byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served beside two open ones"
    );
    let (closed, answered) = closes(third).await;
    assert!(closed && answered.contains(" 200 "), "{answered}");
    drop(holders);
}

/// A child process that is killed when the test ends, whichever way it ends.
/// `killswitch` with the data folder and database of `db`, and text logs.
fn killswitch(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_killswitch"));
    cmd.current_dir(db.dir.path())
        .env("KILLSWITCH_DATA_DIR", db.dir.path())
        .env("KILLSWITCH_DATABASE__URL", &db.url)
        .env("KILLSWITCH_LOG__FORMAT", "text")
        .env_remove("RUST_LOG");
    cmd
}

#[tokio::test]
async fn nothing_in_a_request_can_forge_a_log_line_or_reach_the_terminal() {
    let db = TestDb::new().await;
    // Single sign-on at an address nobody answers: bearer JWTs are still parsed.
    let server = Server::start(
        &db,
        &env_of([
            ("oidc.issuer_url", "http://127.0.0.1:9"),
            ("oidc.client_id", "killswitch"),
            ("oidc.client_secret", "not-used"),
        ]),
    );
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let forged = "x%0A2026-11-30T03:00:00Z%20INFO%20forged:%20admin%20signed%20in%1B%5B2J";
    let refused = client
        .post(format!("{base}/api/v1/webhooks/falcon/{forged}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let jwt = format!(
        "{}.{}.c2ln",
        b64(
            json!({"alg": "RS256", "typ": "jwt\n2026-11-30T03:00:00Z INFO forged: token accepted\u{1b}[2J", "kid": "k\rX"})
        ),
        b64(json!({"sub": "x"}))
    );
    let answer = client
        .get(format!("{base}/api/v1/actions"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let answer = client
        .get(format!("{base}/healthz"))
        .header("X-Request-Id", format!("id {}", "x".repeat(300)))
        .header("User-Agent", "agent\twith tab")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    let logs = server.terminate().await;
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    for line in logs.lines() {
        let stamped = line.len() > 4 && line[..4].bytes().all(|b| b.is_ascii_digit());
        assert!(stamped, "a line the service did not start: {line:?}");
    }
    // And the requests were logged, escaped.
    assert!(logs.contains("Falcon webhook refused"), "{logs}");
    assert!(logs.contains("bearer credential refused"), "{logs}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_database_and_keys_are_private_even_when_they_existed_wider() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let migrate = |data: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_killswitch"))
            .arg("migrate")
            .current_dir(dir.path())
            .env("KILLSWITCH_DATA_DIR", data)
            .env_remove("KILLSWITCH_DATABASE__URL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let fresh = migrate(&data);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    assert_eq!(mode(&data), 0o700);
    for file in ["killswitch.db", "audit-signing.key", "mfa-encryption.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for companion in ["killswitch.db-wal", "killswitch.db-shm"] {
        if data.join(companion).exists() {
            assert_eq!(mode(&data.join(companion)), 0o600, "{companion}");
        }
    }

    for (path, wide) in [
        (data.clone(), 0o755),
        (data.join("killswitch.db"), 0o644),
        (data.join("audit-signing.key"), 0o644),
        (data.join("mfa-encryption.key"), 0o640),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).unwrap();
    }
    let again = migrate(&data);
    let warned = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.status.success(), "{warned}");
    assert!(
        warned.contains("data folder") && warned.contains("0755"),
        "{warned}"
    );
    assert_eq!(mode(&data), 0o700);
    for file in ["killswitch.db", "audit-signing.key", "mfa-encryption.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn the_encryption_key_rotates_and_reseal_moves_every_secret_to_the_new_one() {
    use base64::Engine;
    let key = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let (old, new) = (key(1), key(2));
    let db = TestDb::new().await;
    let run = |args: &[&str], current: &str, previous: Option<&str>| {
        let mut cmd = killswitch(&db);
        cmd.args(args)
            .env("KILLSWITCH_MFA__ENCRYPTION_KEY", current);
        if let Some(previous) = previous {
            cmd.env("KILLSWITCH_MFA__PREVIOUS_ENCRYPTION_KEYS", previous);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(
        &[
            "customer",
            "add",
            "--slug",
            "contoso",
            "--name",
            "Contoso",
            "--domain",
            "contoso.onmicrosoft.com",
            "--tenant-id",
            &CONTOSO.to_string(),
        ],
        &old,
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(
        &["customer", "webhook-secret", "contoso", "--json"],
        &old,
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, enrolled, err) = run(
        &[
            "analyst",
            "add",
            "--email",
            "night@provider.example",
            "--role",
            "analyst",
            "--json",
        ],
        &old,
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    let enrolled: Value = serde_json::from_str(&enrolled).unwrap();

    // With only the new key, the old secrets are unreadable; with the old one as previous, they
    // open, and reseal moves them.
    let (code, _, err) = run(&["secrets", "reseal"], &new, None);
    assert_ne!(code, Some(0), "nothing opens without the previous key");
    assert!(
        err.starts_with("killswitch: ") && err.lines().count() == 1,
        "{err}"
    );
    let (code, out, err) = run(&["secrets", "reseal", "--json"], &new, Some(&old));
    assert_eq!(code, Some(0), "{err}");
    let resealed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            resealed["totp_secrets"].as_u64(),
            resealed["webhook_secrets"].as_u64()
        ),
        (Some(1), Some(1)),
        "{resealed}"
    );
    let (code, out, err) = run(&["secrets", "reseal", "--json"], &new, None);
    assert_eq!(
        code,
        Some(0),
        "after resealing the new key alone opens everything: {err}"
    );
    assert!(out.contains("\"totp_secrets\":0"), "{out}");

    // The analyst's authenticator still works, now under the new key alone.
    let mut settings = db.settings(&[("mfa.encryption_key", new.as_str())]);
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    let services = killswitch::app::Services::open(&settings).await.unwrap();
    let id = Uuid::parse_str(enrolled["id"].as_str().unwrap()).unwrap();
    let record = services.store.analyst(id).await.unwrap().unwrap();
    assert!(services.auth.totp_secret(&record).is_ok());
    let system = common::events(&services.store, "system").await;
    assert!(system.iter().any(|e| matches!(
        e,
        AuditEvent::SecretsResealed {
            totp_secrets: 1,
            webhook_secrets: 1,
            ..
        }
    )));
}

#[tokio::test]
async fn the_cause_of_an_api_500_is_logged_once_with_its_request_id() {
    let db = TestDb::new().await;
    let enrolled = killswitch(&db)
        .args([
            "analyst",
            "add",
            "--email",
            "night@provider.example",
            "--role",
            "analyst",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let token = serde_json::from_slice::<Value>(&enrolled.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A stored analyst the service cannot read back: an internal error on every request.
    let mut raw = db.raw().await;
    sqlx::query("UPDATE analysts SET customers = 'not a scope'")
        .execute(&mut raw)
        .await
        .unwrap();
    let server = Server::start(&db, &[]);
    let answer = reqwest::Client::new()
        .get(server.url("/api/v1/actions"))
        .bearer_auth(&token)
        .header("X-Request-Id", "req-500-check")
        .send()
        .await
        .unwrap();
    let (status, body) = problem(answer).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("/problems/internal")
        )
    );
    assert!(
        !body.to_string().contains("customer scope"),
        "the cause stays out of the answer: {body}"
    );
    let logs = server.terminate().await;
    let caused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request failed"))
        .collect();
    assert_eq!(caused.len(), 1, "{logs}");
    assert!(
        caused[0].contains("invalid customer scope") && caused[0].contains("req-500-check"),
        "{logs}"
    );
}
