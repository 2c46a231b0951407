//! The OCSF export of everything the service writes, produced by the running service itself:
//! actions of every outcome, Falcon detections received and decided, refused second factors
//! and a lock-out, onboarding, exports, analyst changes and key events. Every event keeps the
//! OCSF 1.3.0 rules checked here (a source endpoint that says where the request came from, the
//! `cloud` profile wherever `api` or `cloud` needs it, each class's required attributes).
//! With `KILLSWITCH_OCSF_SAMPLE=/path` the events are also written there, one per line, for
//! `.ci/ocsf-check` to validate against the published 1.3.0 schema.

use crate::common;

use std::collections::BTreeSet;

use common::entra::{self, CONTOSO};
use common::{Analyst, TestApp};
use fake_entra::FakeEntra;
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::Role;
use killswitch::customers::Policy;
use killswitch::domain::ChainId;
use killswitch::falcon::signature::{SignedString, sign_crowdstrike};
use killswitch::reports::export;
use killswitch::store::Reseal;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const ALICE: &str = "alice@contoso.onmicrosoft.com";
const BOB: &str = "bob@contoso.onmicrosoft.com";
const BOB_SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1105";
/// The attributes of which OCSF 1.3.0's network_endpoint needs at least one.
const ENDPOINT_IDS: [&str; 8] = [
    "ip",
    "uid",
    "name",
    "hostname",
    "svc_name",
    "instance_uid",
    "interface_uid",
    "interface_name",
];

struct Rig {
    app: TestApp,
    fake: FakeEntra,
}

impl Rig {
    async fn analyst(&self, role: Role) -> Analyst {
        let email = format!("{role}-{}@provider.example", Uuid::new_v4().simple());
        self.app.enroll(&email, role, "all").await
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

    /// `operation` on `account` of contoso by a fresh analyst (a lead, who may also enable).
    async fn act(&self, operation: &str, account: &str) -> Response {
        let who = self.analyst(Role::Lead).await;
        let path = format!("/api/v1/customers/contoso/accounts/{account}/{operation}");
        self.request(Method::POST, &path, &who, Some(&who.code()))
            .json(&json!({"reason": "covering every outcome"}))
            .send()
            .await
            .unwrap()
    }

    /// A change by a fresh analyst of `role` with a code; the answer must be a success.
    async fn change(&self, role: Role, method: Method, path: &str, body: Value) -> Value {
        let who = self.analyst(role).await;
        let response = self
            .request(method, path, &who, Some(&who.code()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// A detection for bob delivered to contoso, signed with `secret`; the detection.
    async fn deliver(&self, secret: &str, composite_id: &str, severity: &str) -> Value {
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
        let response = self
            .app
            .client
            .post(self.app.url("/api/v1/webhooks/falcon/contoso"))
            .header("X-CS-Primary-Signature", signature)
            .header("X-CS-Delivery-Timestamp", ts)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// A consent link for contoso, made through the API.
    async fn consent_link(&self) -> String {
        let path = "/api/v1/customers/contoso/consent-link";
        let made = self
            .change(Role::Admin, Method::POST, path, json!({}))
            .await;
        made["url"].as_str().unwrap().to_owned()
    }

    /// Consent for contoso through a link and the fake Entra's redirect, then a consent the
    /// administrator cancelled on another link.
    async fn consent_granted_and_failed(&self) {
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let at_entra = no_redirects
            .get(self.consent_link().await)
            .send()
            .await
            .unwrap();
        let back = url::Url::parse(at_entra.headers()["location"].to_str().unwrap()).unwrap();
        let granted = self
            .get(&format!("/consent/callback?{}", back.query().unwrap()))
            .await;
        assert_eq!(granted, StatusCode::OK);
        let state = url::Url::parse(&self.consent_link().await)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let query = format!(
            "error=access_denied&error_description=The+admin+canceled&tenant={CONTOSO}&state={}",
            url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
        );
        let failed = self.get(&format!("/consent/callback?{query}")).await;
        assert_eq!(failed, StatusCode::BAD_REQUEST);
    }

    async fn get(&self, path: &str) -> StatusCode {
        self.app
            .client
            .get(self.app.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Refused second factors aimed at contoso: missing, wrong twice (a lock-out), reused.
async fn refused_codes(rig: &Rig) {
    let path = format!("/api/v1/customers/contoso/accounts/{ALICE}/disable");
    let body = json!({"reason": "refused second factors"});
    let who = rig.analyst(Role::Analyst).await;
    for code in [None, Some(who.wrong_code()), Some(who.wrong_code())] {
        let refused = rig
            .request(Method::POST, &path, &who, code.as_deref())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // A disabled analyst's token, attributable and so recorded.
    let gone = rig.analyst(Role::Analyst).await;
    let record = rig.app.store.analyst(gone.id).await.unwrap().unwrap();
    let disabled = killswitch::auth::analysts::AnalystStatus::Disabled;
    let operator = Actor::operator();
    rig.app
        .auth
        .set_status(&record, disabled, &operator)
        .await
        .unwrap();
    let refused = rig
        .request(Method::POST, &path, &gone, Some(&gone.code()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let reuser = rig.analyst(Role::Lead).await;
    let code = reuser.code();
    let enable = format!("/api/v1/customers/contoso/accounts/{ALICE}/enable");
    for expected in [StatusCode::OK, StatusCode::UNAUTHORIZED] {
        let response = rig
            .request(Method::POST, &enable, &reuser, Some(&code))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
}

/// Actions of every outcome: succeeded (disable, enable), noop, failed, denied.
async fn actions_of_every_outcome(rig: &Rig) {
    assert_eq!(rig.act("disable", ALICE).await.status(), StatusCode::OK);
    assert_eq!(rig.act("enable", ALICE).await.status(), StatusCode::OK);
    let dave = "dave@contoso.onmicrosoft.com";
    assert_eq!(rig.act("disable", dave).await.status(), StatusCode::OK);
    let carol = "carol.admin@contoso.onmicrosoft.com";
    assert_eq!(
        rig.act("disable", carol).await.status(),
        StatusCode::BAD_GATEWAY
    );
    let breakglass = "breakglass@contoso.onmicrosoft.com";
    assert_eq!(
        rig.act("disable", breakglass).await.status(),
        StatusCode::CONFLICT
    );
}

/// Detections received, approved, dismissed and disabled under the automatic rule.
async fn detections_of_every_decision(rig: &Rig, secret: &str) {
    let approved = rig.deliver(secret, "ocsf:approve", "high").await;
    let path = format!(
        "/api/v1/detections/{}/approve",
        approved["id"].as_str().unwrap()
    );
    rig.change(Role::Analyst, Method::POST, &path, json!({}))
        .await;
    let dismissed = rig.deliver(secret, "ocsf:dismiss", "high").await;
    let path = format!(
        "/api/v1/detections/{}/dismiss",
        dismissed["id"].as_str().unwrap()
    );
    rig.change(
        Role::Analyst,
        Method::POST,
        &path,
        json!({"reason": "a test of the sensor"}),
    )
    .await;
    // Bob is enabled again before the automatic rule disables him.
    rig.fake.set_account_enabled(CONTOSO, BOB, true);
    let policy = json!({
        "protected": ["breakglass@contoso.onmicrosoft.com"],
        "max_actions_per_hour": 1000,
        "revoke_sessions": false,
        "auto_disable": "critical",
    });
    rig.change(
        Role::Lead,
        Method::PUT,
        "/api/v1/customers/contoso/policy",
        policy,
    )
    .await;
    let automatic = rig.deliver(secret, "ocsf:auto", "critical").await;
    assert_eq!(automatic["state"], "auto_remediated", "{automatic}");
}

/// What the command line and the service write to the system chain.
async fn operator_and_service_events(rig: &Rig) {
    let someone = rig.analyst(Role::Analyst).await;
    let record = rig.app.store.analyst(someone.id).await.unwrap().unwrap();
    let (auth, operator) = (&rig.app.auth, Actor::operator());
    auth.reset_mfa(&record, &operator).await.unwrap();
    auth.rotate_token(&record, &operator).await.unwrap();
    use killswitch::auth::analysts::AnalystStatus;
    for status in [AnalystStatus::Disabled, AnalystStatus::Active] {
        auth.set_status(&record, status, &operator).await.unwrap();
    }
    let reseal = Reseal {
        key_id: "current".to_owned(),
        totp: Vec::new(),
        webhook: Vec::new(),
        actor: operator,
    };
    rig.app.store.reseal(&reseal).await.unwrap();
    let sent = AuditEvent::NotificationSent {
        notification_id: uuid::Uuid::new_v4(),
        kind: "action_outcome".to_owned(),
        channel: "email".to_owned(),
        destination: "security@contoso.example".to_owned(),
        about_seq: Some(3),
    };
    let contoso = ChainId::Customer("contoso".parse().unwrap());
    rig.app
        .store
        .append(&contoso, &Actor::Service, &sent)
        .await
        .unwrap();
}

/// contoso's OCSF export through the API, after a JSON Lines export (so an export is in it).
async fn contoso_ocsf(rig: &Rig) -> Vec<Value> {
    let auditor = rig.analyst(Role::Auditor).await;
    for format in ["jsonl", "ocsf"] {
        let path = format!("/api/v1/customers/contoso/audit/export?format={format}");
        let response = rig
            .request(Method::GET, &path, &auditor, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if format == "ocsf" {
            let text = response.text().await.unwrap();
            return text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
        }
    }
    unreachable!()
}

fn kind(event: &Value) -> &str {
    event["unmapped"]["killswitch"]["event"]["type"]
        .as_str()
        .unwrap_or_default()
}

/// The OCSF 1.3.0 rules a regression would most likely break, checked without the schema.
fn assert_keeps_the_ocsf_rules(event: &Value) {
    let class = event["class_uid"].as_u64().unwrap();
    let activity = event["activity_id"].as_u64().unwrap();
    assert_eq!(
        event["type_uid"].as_u64().unwrap(),
        class * 100 + activity,
        "{event}"
    );
    assert_eq!(event["metadata"]["version"], "1.3.0");
    for required in ["category_uid", "severity_id", "time", "metadata"] {
        assert!(!event[required].is_null(), "{required}: {event}");
    }
    let src = event["src_endpoint"]
        .as_object()
        .unwrap_or_else(|| panic!("{event}"));
    assert!(
        ENDPOINT_IDS.iter().any(|id| src
            .get(*id)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())),
        "src_endpoint names its source: {event}"
    );
    let profiles: Vec<&str> = event["metadata"]["profiles"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let cloud_declared = profiles.contains(&"cloud");
    // In API Activity `api` is the class's own; elsewhere it and `cloud` come with the profile.
    let needs_profile = !event["cloud"].is_null() || (class != 6003 && !event["api"].is_null());
    assert!(!needs_profile || cloud_declared, "cloud profile: {event}");
    if cloud_declared {
        assert!(event["cloud"]["provider"].is_string(), "{event}");
    }
    match class {
        3001 => assert!(event["user"].is_object(), "{event}"),
        3002 => {
            assert!(event["user"].is_object(), "{event}");
            assert!(event["service"].is_object() || event["dst_endpoint"].is_object());
        }
        6003 => {
            assert!(event["actor"].is_object(), "{event}");
            assert!(event["api"]["operation"].is_string(), "{event}");
        }
        other => panic!("unexpected class {other}: {event}"),
    }
}

#[tokio::test]
async fn an_export_of_every_event_type_keeps_the_ocsf_1_3_0_rules() {
    let generous = Policy {
        max_actions_per_hour: 1000,
        protected: vec!["breakglass@contoso.onmicrosoft.com".parse().unwrap()],
        ..Policy::default()
    };
    let base = entra::two_tenants(&[("mfa.max_failures", "2")], generous).await;
    let rig = Rig {
        app: base.app,
        fake: base.fake,
    };
    let issued = rig
        .change(
            Role::Admin,
            Method::POST,
            "/api/v1/customers/contoso/webhook-secret",
            json!({}),
        )
        .await;
    let secret = issued["secret"].as_str().unwrap().to_owned();
    actions_of_every_outcome(&rig).await;
    refused_codes(&rig).await;
    detections_of_every_decision(&rig, &secret).await;
    rig.change(
        Role::Admin,
        Method::POST,
        "/api/v1/customers/contoso/test",
        json!({}),
    )
    .await;
    rig.consent_granted_and_failed().await;
    operator_and_service_events(&rig).await;

    let contoso = contoso_ocsf(&rig).await;
    let system = export::ocsf_chain_events(rig.app.store.as_ref(), &ChainId::System)
        .await
        .unwrap();
    let events: Vec<&Value> = contoso.iter().chain(&system).collect();
    if let Ok(path) = std::env::var("KILLSWITCH_OCSF_SAMPLE") {
        let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    let written: BTreeSet<&str> = events.iter().map(|e| kind(e)).collect();
    for expected in AuditEvent::KINDS {
        // Kept readable for older logs; nothing writes it any more.
        if *expected != "customer_updated" {
            assert!(
                written.contains(expected),
                "{expected} is in the sample: {written:?}"
            );
        }
    }
    for event in &events {
        assert_keeps_the_ocsf_rules(event);
    }
    assert_customer_sees_where_requests_came_from(&contoso);
}

/// In contoso's own export: the webhook sender's and the deciding analysts' addresses, and the
/// refused second factors aimed at contoso as Authentication events.
fn assert_customer_sees_where_requests_came_from(contoso: &[Value]) {
    let from_loopback = |e: &&Value| e["src_endpoint"]["ip"] == "127.0.0.1";
    let over_http = |e: &&Value| e["actor"]["app_name"] == "killswitch API";
    let requested: Vec<&Value> = contoso.iter().filter(over_http).collect();
    assert!(requested.len() > 20, "{requested:?}");
    for event in requested {
        assert!(from_loopback(&event), "the client address: {event}");
    }
    let received: Vec<&Value> = contoso
        .iter()
        .filter(|e| kind(e) == "detection_received")
        .collect();
    assert!(received.iter().all(from_loopback), "{received:?}");
    for asked in [
        "connection_tested",
        "webhook_secret_issued",
        "customer_policy_changed",
    ] {
        assert!(
            contoso
                .iter()
                .any(|e| kind(e) == asked && from_loopback(&e)),
            "{asked} over the API names the analyst's address"
        );
    }
    let decided: Vec<&Value> = contoso
        .iter()
        .filter(|e| kind(e) == "detection_decided")
        .collect();
    let by_analysts = decided
        .iter()
        .filter(|e| e["unmapped"]["killswitch"]["event"]["decision"] != "auto_remediated");
    assert_eq!(by_analysts.clone().count(), 2, "{decided:?}");
    assert!(by_analysts.clone().all(from_loopback), "{decided:?}");
    let refusals: Vec<&str> = contoso
        .iter()
        .filter(|e| e["class_uid"] == 3002 && e["activity_id"] == 1)
        .map(|e| {
            e["unmapped"]["killswitch"]["event"]["reason"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    for reason in [
        "missing",
        "wrong one-time code",
        "already used",
        "disabled analyst",
    ] {
        assert!(
            refusals.iter().any(|r| r.contains(reason)),
            "{reason}: {refusals:?}"
        );
    }
}
