//! Falcon detections by webhook, on SQLite and PostgreSQL, against the fake Entra: every way of
//! authenticating and of failing to, strict parsing, dedupe under replays, bursts, the
//! auto-disable policy, and the approval queue.

use crate::common;
use killswitch::remediation::action::{ActionRecord, ActionState};

use std::sync::Arc;

use base64::Engine;
use common::entra::{self, BOB, CONTOSO};
use common::{Analyst, TestApp};
use fake_entra::{Endpoint, FakeEntra};
use futures::StreamExt;
use killswitch::audit::Entry;
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::Role;
use killswitch::customers::{AutoDisable, Policy};
use killswitch::falcon::records::DetectionState;
use killswitch::falcon::signature::{SignedString, sign_crowdstrike, sign_standard};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

const BOB_SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1105";

struct Rig {
    app: TestApp,
    fake: FakeEntra,
    secret: String,
    other_secret: String,
}

async fn rig(policy: Policy) -> Rig {
    let base = entra::two_tenants(&[], policy).await;
    let mut secrets = Vec::new();
    for customer in [&base.contoso, &base.fabrikam] {
        let issued = base
            .app
            .onboarding
            .issue_webhook_secret(
                customer,
                killswitch::customers::onboarding::SecretIssue::First,
                &Actor::operator(),
            )
            .await
            .unwrap();
        secrets.push(issued.secret.expose_secret().to_owned());
    }
    Rig {
        app: base.app,
        fake: base.fake,
        secret: secrets[0].clone(),
        other_secret: secrets[1].clone(),
    }
}

fn detection_body(composite_id: &str, severity: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "composite_id": composite_id,
        "detection_id": "ldt:1",
        "severity": severity,
        "tactic": "Credential Access",
        "technique": "Brute Force",
        "source_account_upn": "bob@contoso.onmicrosoft.com",
        "source_account_object_sid": BOB_SID,
        "source_account_domain": "CONTOSO.LOCAL",
        "falcon_host_link": "https://falcon.crowdstrike.com/identity-protection/detections/1",
        "cid": "0123456789abcdef",
        "timestamp": "2026-11-27T03:00:00Z",
    }))
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Rig {
    async fn post(
        &self,
        customer: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .post(self.app.url(&format!("/api/v1/webhooks/falcon/{customer}")))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    /// Signed the CrowdStrike way (the customer's default construction), timestamp `at`.
    async fn signed(
        &self,
        customer: &str,
        secret: &str,
        at: i64,
        body: &[u8],
    ) -> reqwest::Response {
        let ts = at.to_string();
        let signature = sign_crowdstrike(
            secret.as_bytes(),
            &ts,
            body,
            SignedString::BodyTimestampBase64,
        );
        self.post(
            customer,
            &[
                ("X-CS-Primary-Signature", signature),
                ("X-CS-Delivery-Timestamp", ts),
            ],
            body,
        )
        .await
    }

    async fn contoso_events(&self) -> Vec<AuditEvent> {
        common::events(&self.app.store, "contoso").await
    }

    async fn analyst(&self, role: Role) -> Analyst {
        let email = format!("{}@provider.example", Uuid::new_v4().simple());
        self.app.enroll(&email, role, "all").await
    }
}

/// The HMAC key a Standard Webhooks library derives from a `whsec_` secret.
fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("not a whsec_ secret: {}", secret.len()));
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

/// A Standard Webhooks delivery of `body` signed with `key`, sent now.
async fn standard_delivery(rig: &Rig, key: &[u8], id: &str, body: &[u8]) -> StatusCode {
    let ts = now().to_string();
    let headers = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", sign_standard(key, id, &ts, body)),
    ];
    rig.post("contoso", &headers, body).await.status()
}

#[tokio::test]
async fn an_issued_whsec_secret_verifies_standard_webhooks_with_its_decoded_key() {
    let rig = rig(Policy::default()).await;
    let key = standard_key(&rig.secret);
    assert!(key.len() >= 24, "{} key bytes", key.len());
    let body = detection_body("whsec:1", json!("high"));
    assert_eq!(
        standard_delivery(&rig, &key, "msg_w1", &body).await,
        StatusCode::ACCEPTED
    );
    let body = detection_body("whsec:2", json!("high"));
    assert_eq!(
        standard_delivery(&rig, rig.secret.as_bytes(), "msg_w2", &body).await,
        StatusCode::UNAUTHORIZED,
        "the pasted string is not the Standard Webhooks key"
    );
    // The CrowdStrike app and the bearer scheme take the whole string as pasted.
    let body = detection_body("whsec:3", json!("high"));
    assert_eq!(
        rig.signed("contoso", &rig.secret, now(), &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let body = detection_body("whsec:4", json!("high"));
    let bearer = [("Authorization", format!("Bearer {}", rig.secret))];
    assert_eq!(
        rig.post("contoso", &bearer, &body).await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn a_secret_stored_in_the_old_bare_form_verifies_as_its_utf8_bytes_until_rotated() {
    let base = entra::two_tenants(&[], Policy::default()).await;
    let cipher =
        killswitch::secrets::SecretCipher::load_or_generate(None, &[], base.app.db.dir.path())
            .unwrap()
            .0;
    // What `customer webhook-secret` issued before the whsec_ form: 64 URL-safe characters.
    let old = "oldForm-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST".to_owned();
    let id = Uuid::new_v4().to_string();
    let now_at = killswitch::time::Clock::now(&base.app.clock);
    base.app
        .store
        .add_webhook_secret(&killswitch::store::NewWebhookSecret {
            customer: base.contoso.slug.clone(),
            id: id.clone(),
            sealed: cipher
                .seal(
                    old.as_bytes(),
                    &killswitch::customers::onboarding::webhook_context("contoso", &id),
                )
                .unwrap(),
            now: now_at,
            previous_until: now_at,
            actor: Actor::operator(),
        })
        .await
        .unwrap();
    let rig = Rig {
        app: base.app,
        fake: base.fake,
        secret: old.clone(),
        other_secret: String::new(),
    };
    let body = detection_body("bare:1", json!("high"));
    assert_eq!(
        standard_delivery(&rig, old.as_bytes(), "msg_b1", &body).await,
        StatusCode::ACCEPTED
    );
    let body = detection_body("bare:2", json!("high"));
    assert_eq!(
        rig.signed("contoso", &old, now(), &body).await.status(),
        StatusCode::ACCEPTED
    );
    let body = detection_body("bare:3", json!("high"));
    let bearer = [("Authorization", format!("Bearer {old}"))];
    assert_eq!(
        rig.post("contoso", &bearer, &body).await.status(),
        StatusCode::ACCEPTED
    );

    // Rotated: the replacement is in the whsec_ form.
    let contoso = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let rotated = rig
        .app
        .onboarding
        .issue_webhook_secret(
            &contoso,
            killswitch::customers::onboarding::SecretIssue::Revoke,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let new = rotated.secret.expose_secret().to_owned();
    let body = detection_body("bare:4", json!("high"));
    assert_eq!(
        standard_delivery(&rig, &standard_key(&new), "msg_b4", &body).await,
        StatusCode::ACCEPTED
    );
    let body = detection_body("bare:5", json!("high"));
    assert_eq!(
        standard_delivery(&rig, old.as_bytes(), "msg_b5", &body).await,
        StatusCode::UNAUTHORIZED,
        "revoked"
    );
}

fn with_auto_disable(level: AutoDisable) -> Policy {
    Policy {
        auto_disable: level,
        max_actions_per_hour: 10_000,
        ..Policy::default()
    }
}

#[tokio::test]
async fn every_scheme_accepts_a_good_signature_and_refuses_a_bad_one() {
    let rig = rig(Policy::default()).await;
    let body = detection_body("cs:1", json!("high"));
    assert_eq!(
        rig.signed("contoso", &rig.secret, now(), &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    // Standard Webhooks, keyed as the official libraries key it: the secret after `whsec_`,
    // base64-decoded.
    let body = detection_body("sw:1", json!("high"));
    let ts = now().to_string();
    let signature = sign_standard(&standard_key(&rig.secret), "msg_1", &ts, &body);
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", signature),
    ];
    assert_eq!(
        rig.post("contoso", &headers, &body).await.status(),
        StatusCode::ACCEPTED
    );
    let bad = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", ts),
        ("webhook-signature", "v1,AAAA".to_owned()),
    ];
    assert_eq!(
        rig.post("contoso", &bad, &body).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The other CrowdStrike construction, once the customer is set to it.
    let contoso = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let policy = Policy {
        webhook_signature: SignedString::TimestampBodyHex,
        ..contoso.policy.clone()
    };
    rig.app
        .store
        .update_policy(&contoso, &policy, &Actor::operator())
        .await
        .unwrap();
    let body = detection_body("hex:1", json!("high"));
    let ts = "2026-11-27T03:00:00Z".to_owned();
    let fresh = chrono::Utc::now().to_rfc3339();
    for (ts, expected) in [
        (fresh.clone(), StatusCode::ACCEPTED),
        (ts, StatusCode::UNAUTHORIZED),
    ] {
        let signature = sign_crowdstrike(
            rig.secret.as_bytes(),
            &ts,
            &body,
            SignedString::TimestampBodyHex,
        );
        let response = rig
            .post(
                "contoso",
                &[
                    ("X-CS-Primary-Signature", signature),
                    ("X-CS-Delivery-Timestamp", ts),
                ],
                &body,
            )
            .await;
        assert_eq!(response.status(), expected);
    }
    let base64_style = sign_crowdstrike(
        rig.secret.as_bytes(),
        &fresh,
        &body,
        SignedString::BodyTimestampBase64,
    );
    let response = rig
        .post(
            "contoso",
            &[
                ("X-CS-Primary-Signature", base64_style),
                ("X-CS-Delivery-Timestamp", fresh),
            ],
            &body,
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "only the customer's construction"
    );

    // A bearer token: accepted, at lower assurance.
    let body = detection_body("bearer:1", json!("critical"));
    let response = rig
        .post(
            "contoso",
            &[("Authorization", format!("Bearer {}", rig.secret))],
            &body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["assurance"],
        "bearer"
    );
}

#[tokio::test]
async fn stale_future_unsigned_and_foreign_webhooks_are_refused_without_explanation() {
    let rig = rig(Policy::default()).await;
    let body = detection_body("x:1", json!("high"));
    let cases: Vec<(&str, reqwest::Response, StatusCode)> = vec![
        (
            "bad signature",
            rig.post(
                "contoso",
                &[
                    ("X-CS-Primary-Signature", "AAAA".into()),
                    ("X-CS-Delivery-Timestamp", now().to_string()),
                ],
                &body,
            )
            .await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "stale",
            rig.signed("contoso", &rig.secret, now() - 301, &body).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "future",
            rig.signed("contoso", &rig.secret, now() + 301, &body).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "other customer's secret",
            rig.signed("contoso", &rig.other_secret, now(), &body).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no credentials",
            rig.post("contoso", &[], &body).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no timestamp",
            rig.post(
                "contoso",
                &[("X-CS-Primary-Signature", "AAAA".into())],
                &body,
            )
            .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong bearer",
            rig.post(
                "contoso",
                &[("Authorization", "Bearer guess".into())],
                &body,
            )
            .await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown customer",
            rig.signed("initech", &rig.secret, now(), &body).await,
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (case, response, status) in cases {
        assert_eq!(response.status(), status, "{case}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/webhook-rejected", "{case}");
        assert!(
            problem.get("detail").is_none(),
            "{case}: no detail that helps an attacker"
        );
    }
    assert!(
        rig.app
            .store
            .detections(&killswitch::falcon::records::DetectionFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    let metrics = rig
        .app
        .client
        .get(rig.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in [
        "bad_signature",
        "stale_timestamp",
        "missing_credentials",
        "missing_timestamp",
        "bad_token",
        "unknown_customer",
    ] {
        assert!(
            metrics.contains(&format!(
                "killswitch_webhooks_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn malformed_incomplete_and_oversized_bodies_get_their_documented_answers() {
    let rig = rig(Policy::default()).await;
    let not_json = rig
        .signed("contoso", &rig.secret, now(), b"{not json")
        .await;
    assert_eq!(not_json.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        not_json.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    for (body, field) in [
        (
            json!({"severity": "high", "source_account_upn": "bob@contoso.onmicrosoft.com"}),
            "composite_id",
        ),
        (
            json!({"composite_id": "x", "source_account_upn": "bob@contoso.onmicrosoft.com"}),
            "severity",
        ),
        (
            json!({"composite_id": "x", "severity": "high"}),
            "source_account_upn",
        ),
        (
            json!({"composite_id": "x", "severity": 150, "source_account_upn": "bob@contoso.onmicrosoft.com"}),
            "severity",
        ),
        (
            json!({"composite_id": "x", "severity": "high", "source_account_upn": "bob@contoso.onmicrosoft.com", "extra": 1}),
            "extra",
        ),
    ] {
        let response = rig
            .signed(
                "contoso",
                &rig.secret,
                now(),
                &serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/invalid-detection");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let huge = vec![b' '; 300 * 1024];
    let response = rig.signed("contoso", &rig.secret, now(), &huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_replays_of_one_detection_make_one_detection_and_one_action() {
    let rig = Arc::new(rig(with_auto_disable(AutoDisable::High)).await);
    let body = Arc::new(detection_body("replayed:1", json!("critical")));
    let statuses: Vec<StatusCode> = futures::stream::iter(0..1000)
        .map(|_| {
            let (rig, body) = (rig.clone(), body.clone());
            async move {
                rig.signed("contoso", &rig.secret, now(), &body)
                    .await
                    .status()
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| s.is_success()),
        "{:?}",
        statuses
            .iter()
            .filter(|s| !s.is_success())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1,
        "one new detection; the rest are 200"
    );
    let detections = rig
        .app
        .store
        .detections(&killswitch::falcon::records::DetectionFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(detections.len(), 1);
    assert_eq!(
        detections[0].state,
        DetectionState::AutoRemediated,
        "{:?}",
        detections[0]
    );
    assert_eq!(
        rig.app
            .store
            .actions(&killswitch::store::ActionFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
    let received = rig
        .contoso_events()
        .await
        .iter()
        .filter(|e| matches!(e, AuditEvent::DetectionReceived { .. }))
        .count();
    assert_eq!(received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_two_thousand_signed_detections_loses_none() {
    let rig = Arc::new(rig(Policy::default()).await);
    let statuses: Vec<StatusCode> = futures::stream::iter(0..2000)
        .map(|n| {
            let rig = rig.clone();
            async move {
                rig.signed(
                    "contoso",
                    &rig.secret,
                    now(),
                    &detection_body(&format!("burst:{n}"), json!(50)),
                )
                .await
                .status()
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != StatusCode::ACCEPTED)
            .count()
    );
    let stored = rig
        .app
        .store
        .detections(&killswitch::falcon::records::DetectionFilter {
            limit: 5000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 2000);
    let received = rig
        .contoso_events()
        .await
        .iter()
        .filter(|e| matches!(e, AuditEvent::DetectionReceived { .. }))
        .count();
    assert_eq!(received, 2000);
    common::verify_chain(&rig.app.store, "contoso").await;
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
}

#[tokio::test]
async fn a_signed_detection_at_the_threshold_disables_the_account_at_once() {
    let rig = rig(with_auto_disable(AutoDisable::High)).await;
    let response = rig
        .signed(
            "contoso",
            &rig.secret,
            now(),
            &detection_body("auto:1", json!("High")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let detection: Value = response.json().await.unwrap();
    assert_eq!(detection["state"], "auto_remediated", "{detection}");
    assert_eq!(
        detection["target_id"],
        BOB.to_string(),
        "matched by the on-premises SID"
    );
    assert!(
        !rig.fake
            .user(CONTOSO, &BOB.to_string())
            .unwrap()
            .account_enabled
    );
    let action = rig
        .app
        .store
        .action(Uuid::parse_str(detection["action_id"].as_str().unwrap()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action.state, ActionState::Succeeded);
    assert!(
        matches!(&action.actor, Actor::Falcon { policy, client_ip: None } if policy == "auto-disable at high")
    );
    assert!(
        action.warnings.iter().any(|w| w.contains("on-premises")),
        "bob is synced from AD"
    );
    let events = rig.contoso_events().await;
    assert!(events.iter().any(|e| matches!(e, AuditEvent::DetectionDecided { decision, .. } if decision == "auto_remediated")));

    // Below the threshold, or delivered with a bearer token only: it waits.
    let low = rig
        .signed(
            "contoso",
            &rig.secret,
            now(),
            &detection_body("auto:2", json!("medium")),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(low["state"], "pending");
    assert!(
        low["pending_reason"].as_str().unwrap().contains("below"),
        "{low}"
    );
    let bearer = rig
        .post(
            "contoso",
            &[("Authorization", format!("Bearer {}", rig.secret))],
            &detection_body("auto:3", json!("critical")),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(bearer["state"], "pending");
    assert!(
        bearer["pending_reason"]
            .as_str()
            .unwrap()
            .contains("bearer"),
        "{bearer}"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
}

/// The Graph calls made for bob so far, in order: look-ups, reads and changes.
fn account_calls(fake: &FakeEntra) -> Vec<Endpoint> {
    fake.calls()
        .into_iter()
        .map(|call| call.endpoint)
        .filter(|e| {
            matches!(
                e,
                Endpoint::GetUser | Endpoint::ListUsers | Endpoint::PatchUser
            )
        })
        .collect()
}

/// Delivers a critical detection for bob, counting Graph calls from here; returns the
/// action it was decided by, and the calls made for it.
async fn critical_for_bob(rig: &Rig, composite_id: &str) -> (ActionRecord, Vec<Endpoint>) {
    rig.fake.reset_counts();
    let detection: Value = rig
        .signed(
            "contoso",
            &rig.secret,
            now(),
            &detection_body(composite_id, json!("critical")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detection["state"], "auto_remediated", "{detection}");
    // The matched account is stored with the decision, and nothing says it waits.
    assert_eq!(detection["target_id"], BOB.to_string(), "{detection}");
    assert_eq!(detection["target_upn"], "bob@contoso.onmicrosoft.com");
    assert!(detection["pending_reason"].is_null(), "{detection}");
    let action_id = Uuid::parse_str(detection["action_id"].as_str().unwrap()).unwrap();
    let action = rig.app.store.action(action_id).await.unwrap().unwrap();
    (action, account_calls(&rig.fake))
}

#[tokio::test]
async fn an_automatic_disable_reads_the_account_once_before_it_changes_it() {
    let rig = rig(with_auto_disable(AutoDisable::High)).await;
    let (action, calls) = critical_for_bob(&rig, "auto:once").await;
    // The look-up that matched the account, finding it enabled, is the action's read before
    // its change; the
    // outcome is read back after it.
    assert_eq!(
        calls,
        [Endpoint::ListUsers, Endpoint::PatchUser, Endpoint::GetUser]
    );
    assert_eq!(action.state, ActionState::Succeeded);
    let before = action
        .before
        .expect("the state before the change is recorded");
    assert_eq!(
        (before.id, before.account_enabled),
        (BOB.to_string(), Some(true))
    );
    assert_eq!(action.after.and_then(|a| a.account_enabled), Some(false));

    // Found disabled by the look-up: read again once the request is recorded (something may
    // have changed in between), then nothing to change and nothing sent.
    let (noop, calls) = critical_for_bob(&rig, "auto:again").await;
    assert_eq!(calls, [Endpoint::ListUsers, Endpoint::GetUser]);
    assert_eq!(noop.state, ActionState::Noop);
    assert_eq!(noop.before.and_then(|b| b.account_enabled), Some(false));
}

#[tokio::test]
async fn a_pending_detection_approved_with_a_code_disables_the_account() {
    let rig = rig(Policy::default()).await;
    let detection: Value = rig
        .signed(
            "contoso",
            &rig.secret,
            now(),
            &detection_body("queue:1", json!(95)),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detection["state"], "pending");
    assert!(
        detection["pending_reason"]
            .as_str()
            .unwrap()
            .contains("not opted in")
    );
    let analyst = rig.analyst(Role::Analyst).await;
    let path = format!(
        "/api/v1/detections/{}/approve",
        detection["id"].as_str().unwrap()
    );
    let without = rig
        .app
        .client
        .post(rig.app.url(&path))
        .bearer_auth(&analyst.token)
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let code = analyst.code();
    let approved: Value = rig
        .app
        .client
        .post(rig.app.url(&path))
        .bearer_auth(&analyst.token)
        .header("X-Killswitch-OTP", code)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(approved["detection"]["state"], "approved", "{approved}");
    assert_eq!(approved["action"]["state"], "succeeded");
    assert!(
        !rig.fake
            .user(CONTOSO, &BOB.to_string())
            .unwrap()
            .account_enabled
    );
    let listed: Value = rig
        .app
        .client
        .get(rig.app.url("/api/v1/detections?state=approved"))
        .bearer_auth(&analyst.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["detections"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_dismissed_detection_sends_nothing_to_entra_and_cannot_be_decided_again() {
    let rig = rig(Policy::default()).await;
    let detection: Value = rig
        .signed(
            "contoso",
            &rig.secret,
            now(),
            &detection_body("queue:2", json!("critical")),
        )
        .await
        .json()
        .await
        .unwrap();
    let lead = rig.analyst(Role::Lead).await;
    let dismiss = format!(
        "/api/v1/detections/{}/dismiss",
        detection["id"].as_str().unwrap()
    );
    // A bare token cannot dismiss: a stolen one would otherwise suppress remediation.
    let without_code = rig
        .app
        .client
        .post(rig.app.url(&dismiss))
        .bearer_auth(&lead.token)
        .json(&json!({"reason": "known penetration test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(without_code.status(), StatusCode::UNAUTHORIZED);
    // The body rule every JSON route keeps: 415 without a JSON content type, 400 for bytes
    // that are not JSON.
    for (content_type, body, status) in [
        (
            None,
            "{\"reason\":\"x\"}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Some("application/json"),
            "{not json",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let mut request = rig
            .app
            .client
            .post(rig.app.url(&dismiss))
            .bearer_auth(&lead.token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_eq!(request.send().await.unwrap().status(), status, "{body}");
    }
    // No reason: the answer says what is missing, in the words of a dismissal.
    let without_reason = rig
        .app
        .client
        .post(rig.app.url(&dismiss))
        .bearer_auth(&lead.token)
        .header("X-Killswitch-OTP", lead.code())
        .json(&json!({"reason": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(without_reason.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = without_reason.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "`reason` is required: say why this detection needs no action"
    );
    let dismissed: Value = rig
        .app
        .client
        .post(rig.app.url(&dismiss))
        .bearer_auth(&lead.token)
        .header("X-Killswitch-OTP", lead.code())
        .json(&json!({"reason": "known penetration test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dismissed["state"], "dismissed");
    assert_eq!(dismissed["decision_reason"], "known penetration test");
    let approve = format!(
        "/api/v1/detections/{}/approve",
        detection["id"].as_str().unwrap()
    );
    let code = lead.code();
    let late = rig
        .app
        .client
        .post(rig.app.url(&approve))
        .bearer_auth(&lead.token)
        .header("X-Killswitch-OTP", code)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let late: Value = late.json().await.unwrap();
    assert_eq!(
        (late["type"].as_str(), late["state"].as_str()),
        (Some("/problems/detection-decided"), Some("dismissed"))
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    let auditor = rig.analyst(Role::Auditor).await.token;
    let forbidden = rig
        .app
        .client
        .post(rig.app.url(&dismiss))
        .bearer_auth(&auditor)
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_account_entra_does_not_know_leaves_the_detection_pending_with_the_reason() {
    let rig = rig(with_auto_disable(AutoDisable::High)).await;
    let body = serde_json::to_vec(&json!({"composite_id": "ghost:1", "severity": "critical", "source_account_upn": "ghost@contoso.onmicrosoft.com"})).unwrap();
    let detection: Value = rig
        .signed("contoso", &rig.secret, now(), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detection["state"], "pending");
    assert!(
        detection["pending_reason"]
            .as_str()
            .unwrap()
            .contains("no account ghost@contoso.onmicrosoft.com"),
        "{detection}"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
}

/// Detections are written beside other writes (on SQLite, batched into one transaction): one
/// that cannot be stored fails alone, and every other detection and append lands, audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_detection_that_cannot_be_stored_fails_alone_and_the_rest_land_audited() {
    let db = common::TestDb::new().await;
    let (store, key) = db.store(50).await;
    let contoso = entra::customer("contoso", CONTOSO, Policy::default());
    store.add_customer(&contoso, &Actor::Service).await.unwrap();
    let taken = Uuid::new_v4();
    store
        .record_detection(&common::stored_detection(taken, "first"), &Actor::Service)
        .await
        .unwrap();

    // 200 new detections, 20 that reuse the stored one's id (refused by the database), 20
    // replays of new ones, and 100 plain appends, all at once.
    let chain: killswitch::domain::ChainId = "contoso".parse().unwrap();
    let mut tasks = Vec::new();
    for n in 0..340usize {
        let store = store.clone();
        let chain = chain.clone();
        tasks.push(tokio::spawn(async move {
            match n {
                0..200 => store
                    .record_detection(
                        &common::stored_detection(Uuid::new_v4(), &format!("new:{n}")),
                        &Actor::Service,
                    )
                    .await
                    .map(|(d, new)| format!("{}:{new}", d.composite_id)),
                200..220 => store
                    .record_detection(
                        &common::stored_detection(taken, &format!("clash:{n}")),
                        &Actor::Service,
                    )
                    .await
                    .map(|(d, new)| format!("{}:{new}", d.composite_id)),
                220..240 => store
                    .record_detection(
                        &common::stored_detection(Uuid::new_v4(), &format!("new:{}", n - 220)),
                        &Actor::Service,
                    )
                    .await
                    .map(|(d, new)| format!("{}:{new}", d.composite_id)),
                _ => store
                    .append(
                        &chain,
                        &Actor::Service,
                        &AuditEvent::ConsentFailed {
                            tenant_id: None,
                            reason: format!("append {n}"),
                        },
                    )
                    .await
                    .map(|a| format!("append {}", a.seq)),
            }
        }));
    }
    let mut refused = 0;
    let mut firsts = std::collections::HashMap::<String, usize>::new();
    for (n, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(outcome) if (200..220).contains(&n) => panic!("a clashing id was stored: {outcome}"),
            Ok(outcome) if n < 240 => {
                // A delivery and its replay get the one stored detection; whichever came
                // first is the new one.
                let k = if n < 200 { n } else { n - 220 };
                let (composite, new) = outcome.rsplit_once(':').unwrap();
                assert_eq!(composite, format!("new:{k}"));
                *firsts.entry(composite.to_owned()).or_default() += usize::from(new == "true");
            }
            Ok(_) => {}
            Err(e) => {
                assert!((200..220).contains(&n), "task {n} failed: {e}");
                refused += 1;
            }
        }
    }
    assert_eq!(firsts.len(), 200);
    assert!(firsts.values().all(|&news| news == 1), "{firsts:?}");
    assert_eq!(refused, 20);

    let stored = store
        .detections(&killswitch::falcon::records::DetectionFilter {
            customers: None,
            state: None,
            before: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 201);
    assert!(!stored.iter().any(|d| d.composite_id.starts_with("clash")));
    let entries: Vec<Entry> = common::entries(&store, "contoso").await;
    let received = entries
        .iter()
        .filter(|e| matches!(e.event, AuditEvent::DetectionReceived { .. }))
        .count();
    assert_eq!(received, 201, "each stored detection audited exactly once");
    assert_eq!(entries.len(), 1 + 201 + 100);
    let keys = killswitch::reports::check::keyring(store.as_ref(), [key.public_key()])
        .await
        .unwrap();
    let summary = killswitch::reports::check::check_chain(store.as_ref(), &keys, "contoso")
        .await
        .unwrap()
        .unwrap_or_else(|b| panic!("the chain is broken: {b:?}"));
    assert_eq!(summary.entries, 302);
}
