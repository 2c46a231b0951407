//! The remediation API as an analyst uses it: tokens, roles, customer scope, the one-time code
//! on every change, and the documented status codes and problem types.

use crate::common;

use std::time::Duration;

use common::entra::{self, CLIENT_SECRET, CONTOSO, FABRIKAM};
use common::{Analyst, TestApp};
use fake_entra::{Endpoint, FakeEntra};
use killswitch::audit::Entry;
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::{Role, mfa};
use killswitch::customers::Policy;
use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

const ALICE: &str = "alice@contoso.onmicrosoft.com";

struct Rig {
    app: TestApp,
    fake: FakeEntra,
}

async fn rig(overrides: &[(&str, &str)]) -> Rig {
    let base = entra::two_tenants(overrides, Policy::default()).await;
    Rig {
        app: base.app,
        fake: base.fake,
    }
}

impl Rig {
    async fn analyst(&self, role: Role, scope: &str) -> Analyst {
        let email = format!("{}-{}@provider.example", role, Uuid::new_v4().simple());
        self.app.enroll(&email, role, scope).await
    }

    async fn post(&self, who: &Analyst, path: &str, code: Option<&str>, body: Value) -> Response {
        let mut request = self
            .app
            .client
            .post(self.app.url(path))
            .bearer_auth(&who.token)
            .json(&body);
        if let Some(code) = code {
            request = request.header("X-Killswitch-OTP", code);
        }
        request.send().await.unwrap()
    }

    async fn disable(
        &self,
        who: &Analyst,
        customer: &str,
        account: &str,
        code: Option<&str>,
    ) -> Response {
        let path = format!("/api/v1/customers/{customer}/accounts/{account}/disable");
        self.post(
            who,
            &path,
            code,
            json!({"reason": "Falcon ITP: credential theft", "ticket": "SOC-7"}),
        )
        .await
    }

    async fn get(&self, who: &Analyst, path: &str) -> Response {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(&who.token)
            .send()
            .await
            .unwrap()
    }

    async fn system_events(&self) -> Vec<AuditEvent> {
        common::events(&self.app.store, "system").await
    }
}

async fn problem_type(response: Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    let body: Value = response.json().await.unwrap();
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn an_analyst_disables_an_account_with_token_and_code_and_the_log_says_who_and_how() {
    let rig = rig(&[]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let response = rig.disable(&who, "contoso", ALICE, Some(&who.code())).await;
    assert_eq!(response.status(), 200);
    let action: Value = response.json().await.unwrap();
    assert_eq!(action["state"], "succeeded");
    assert_eq!(action["requested_by"]["email"], who.email.as_str());
    assert!(!rig.fake.user(CONTOSO, ALICE).unwrap().account_enabled);

    let fetched: Value = rig
        .get(&who, action["href"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["id"], action["id"]);

    let requested = common::entries(&rig.app.store, "contoso")
        .await
        .into_iter()
        .find(|e| matches!(e.event, AuditEvent::ActionRequested { .. }))
        .unwrap();
    match (&requested.actor, &requested.event) {
        (
            Actor::Analyst {
                id,
                email,
                auth,
                client_ip,
            },
            AuditEvent::ActionRequested {
                mfa: Some(mfa),
                request: Some(request),
                ..
            },
        ) => {
            assert_eq!((*id, email.as_str()), (who.id, who.email.as_str()));
            assert_eq!(serde_json::to_value(auth).unwrap(), "api_token");
            assert_eq!(mfa.method, "totp");
            assert!(mfa.time_step > 0);
            assert_eq!(request.client_ip.as_deref(), Some("127.0.0.1"));
            assert_eq!(
                client_ip.as_deref(),
                Some("127.0.0.1"),
                "the actor says where from"
            );
            assert!(request.request_id.is_some());
        }
        other => panic!("requested entry lacks who/how/MFA evidence: {other:?}"),
    }
}

#[tokio::test]
async fn missing_wrong_and_reused_codes_and_bad_tokens_each_get_their_problem_type() {
    let rig = rig(&[]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    assert_eq!(
        problem_type(rig.disable(&who, "contoso", ALICE, None).await).await,
        (StatusCode::UNAUTHORIZED, "/problems/otp-required".into())
    );
    assert_eq!(
        problem_type(
            rig.disable(&who, "contoso", ALICE, Some(&who.wrong_code()))
                .await
        )
        .await,
        (StatusCode::UNAUTHORIZED, "/problems/otp-invalid".into())
    );
    let code = who.code();
    assert_eq!(
        rig.disable(&who, "contoso", ALICE, Some(&code))
            .await
            .status(),
        200
    );
    assert_eq!(
        problem_type(
            rig.disable(&who, "contoso", "bob@contoso.onmicrosoft.com", Some(&code))
                .await
        )
        .await,
        (StatusCode::UNAUTHORIZED, "/problems/otp-reused".into())
    );
    let forged = Analyst {
        token: "ks_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ..who
    };
    assert_eq!(
        problem_type(rig.get(&forged, "/api/v1/actions").await).await,
        (StatusCode::UNAUTHORIZED, "/problems/unauthenticated".into())
    );
    let anonymous = rig
        .app
        .client
        .get(rig.app.url("/api/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem_type(anonymous).await,
        (StatusCode::UNAUTHORIZED, "/problems/unauthenticated".into())
    );
    let events = rig.system_events().await;
    assert!(events.iter().any(|e| matches!(e, AuditEvent::AuthenticationFailed { reason, .. } if reason.contains("already used"))));
    assert!(events.iter().any(|e| matches!(e, AuditEvent::AuthenticationFailed { reason, .. } if reason.contains("wrong one-time code"))));
    assert_eq!(
        rig.fake.count(Endpoint::PatchUser),
        1,
        "only the one authenticated action reached Graph"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_submissions_of_one_code_yield_exactly_one_action() {
    let rig = rig(&[]).await;
    let policy = Policy {
        max_actions_per_hour: 1000,
        ..Policy::default()
    };
    let contoso = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    rig.app
        .store
        .update_policy(&contoso, &policy, &Actor::operator())
        .await
        .unwrap();
    let who = std::sync::Arc::new(rig.analyst(Role::Analyst, "all").await);
    let code = who.code();
    let rig = std::sync::Arc::new(rig);
    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let (rig, who, code) = (rig.clone(), who.clone(), code.clone());
            tokio::spawn(async move {
                rig.disable(&who, "contoso", ALICE, Some(&code))
                    .await
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| s.is_success()).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.is_success() || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
}

#[tokio::test]
async fn five_wrong_codes_lock_the_analyst_out_even_for_the_right_code_until_the_lock_ends() {
    let rig = rig(&[("mfa.lockout_secs", "2")]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    for attempt in 1..=5 {
        let (status, kind) = problem_type(
            rig.disable(&who, "contoso", ALICE, Some(&who.wrong_code()))
                .await,
        )
        .await;
        let expected = if attempt < 5 {
            "/problems/otp-invalid"
        } else {
            "/problems/locked"
        };
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::UNAUTHORIZED, expected),
            "attempt {attempt}"
        );
    }
    let locked = rig.disable(&who, "contoso", ALICE, Some(&who.code())).await;
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(
        problem_type(locked).await,
        (StatusCode::UNAUTHORIZED, "/problems/locked".into())
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    assert!(rig.system_events().await.iter().any(
        |e| matches!(e, AuditEvent::AnalystLockedOut { analyst_id, .. } if *analyst_id == who.id)
    ));

    rig.app.clock.advance(Duration::from_millis(2100));
    assert_eq!(
        rig.disable(&who, "contoso", ALICE, Some(&who.code()))
            .await
            .status(),
        200,
        "the lock ended"
    );
}

/// Every role against every route: allowed cells get past the role check (to 200, 404 or the
/// one-time-code check), the others are refused with 403 `forbidden`.
#[tokio::test]
async fn every_role_on_every_route_matches_the_permission_matrix() {
    let rig = rig(&[]).await;
    let lead = rig.analyst(Role::Lead, "all").await;
    let action: Value = rig
        .disable(&lead, "contoso", ALICE, Some(&lead.code()))
        .await
        .json()
        .await
        .unwrap();
    let action_path = action["href"].as_str().unwrap().to_owned();
    let routes: [(&str, &str, bool); 5] = [
        (
            "GET",
            "/api/v1/customers/contoso/accounts/bob@contoso.onmicrosoft.com",
            false,
        ),
        (
            "POST",
            "/api/v1/customers/contoso/accounts/bob@contoso.onmicrosoft.com/disable",
            true,
        ),
        (
            "POST",
            "/api/v1/customers/contoso/accounts/dave@contoso.onmicrosoft.com/enable",
            true,
        ),
        ("GET", action_path.as_str(), false),
        ("GET", "/api/v1/actions", false),
    ];
    let allowed = |role: Role, index: usize| match (role, index) {
        (Role::Analyst, 2) => false,
        (Role::Analyst | Role::Lead, _) => true,
        (Role::Auditor, i) => i != 1 && i != 2,
        (Role::Admin, _) => false,
    };
    for role in Role::ALL {
        let who = rig.analyst(role, "all").await;
        for (index, (method, path, changes)) in routes.iter().enumerate() {
            let response = if *method == "GET" {
                rig.get(&who, path).await
            } else {
                rig.post(&who, path, None, json!({"reason": "matrix"}))
                    .await
            };
            let status = response.status();
            if allowed(role, index) {
                let expected = if *changes {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::OK
                };
                assert_eq!(status, expected, "{role} {method} {path}");
            } else {
                assert_eq!(
                    problem_type(response).await,
                    (StatusCode::FORBIDDEN, "/problems/forbidden".into()),
                    "{role} {method} {path}"
                );
            }
        }
    }
    assert_eq!(
        rig.fake.count(Endpoint::PatchUser),
        1,
        "no request in the matrix changed anything"
    );
}

#[tokio::test]
async fn an_analyst_scoped_to_one_customer_can_neither_read_nor_act_on_another() {
    let rig = rig(&[]).await;
    let everywhere = rig.analyst(Role::Analyst, "all").await;
    let fabrikam_action: Value = rig
        .disable(
            &everywhere,
            "fabrikam",
            "alice@fabrikam.onmicrosoft.com",
            Some(&everywhere.code()),
        )
        .await
        .json()
        .await
        .unwrap();
    let contoso_only = rig.analyst(Role::Analyst, "contoso").await;

    let read = rig
        .get(
            &contoso_only,
            "/api/v1/customers/fabrikam/accounts/bob@fabrikam.onmicrosoft.com",
        )
        .await;
    assert_eq!(
        problem_type(read).await,
        (StatusCode::FORBIDDEN, "/problems/out-of-scope".into())
    );
    let act = rig
        .disable(
            &contoso_only,
            "fabrikam",
            "bob@fabrikam.onmicrosoft.com",
            Some(&contoso_only.code()),
        )
        .await;
    assert_eq!(
        problem_type(act).await,
        (StatusCode::FORBIDDEN, "/problems/out-of-scope".into())
    );
    let other = rig
        .get(&contoso_only, fabrikam_action["href"].as_str().unwrap())
        .await;
    assert_eq!(
        problem_type(other).await,
        (StatusCode::NOT_FOUND, "/problems/not-found".into())
    );
    let filtered = rig
        .get(&contoso_only, "/api/v1/actions?customer=fabrikam")
        .await;
    assert_eq!(
        problem_type(filtered).await,
        (StatusCode::FORBIDDEN, "/problems/out-of-scope".into())
    );
    let listed: Value = rig
        .get(&contoso_only, "/api/v1/actions")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["customer"] == "contoso"),
        "{listed}"
    );
    assert!(
        rig.fake
            .user(FABRIKAM, "bob@fabrikam.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
}

#[tokio::test]
async fn outcomes_map_to_the_documented_status_codes() {
    let rig = rig(&[]).await;
    let contoso = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let policy = Policy {
        protected: vec!["breakglass@contoso.onmicrosoft.com".parse().unwrap()],
        max_actions_per_hour: 3,
        ..Policy::default()
    };
    rig.app
        .store
        .update_policy(&contoso, &policy, &Actor::operator())
        .await
        .unwrap();
    let cases = [
        (
            "dave@contoso.onmicrosoft.com",
            StatusCode::OK,
            None,
            Some("noop"),
        ),
        (
            "mallory@contoso.onmicrosoft.com",
            StatusCode::NOT_FOUND,
            Some("/problems/account-not-found"),
            None,
        ),
        (
            "carol.admin@contoso.onmicrosoft.com",
            StatusCode::BAD_GATEWAY,
            Some("/problems/graph-refused"),
            None,
        ),
        (
            "breakglass@contoso.onmicrosoft.com",
            StatusCode::CONFLICT,
            Some("/problems/protected-account"),
            None,
        ),
        (
            ALICE,
            StatusCode::TOO_MANY_REQUESTS,
            Some("/problems/rate-limited"),
            None,
        ),
    ];
    for (account, status, kind, state) in cases {
        let who = rig.analyst(Role::Analyst, "all").await;
        let response = rig
            .disable(&who, "contoso", account, Some(&who.code()))
            .await;
        assert_eq!(response.status(), status, "{account}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
        let body: Value = response.json().await.unwrap();
        match kind {
            Some(kind) => {
                assert_eq!(body["type"], kind, "{account}: {body}");
                assert!(
                    body["action"]["id"].is_string(),
                    "the problem names the recorded action: {body}"
                );
            }
            None => assert_eq!(body["state"], state.unwrap()),
        }
        if account.starts_with("carol") {
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Privileged Authentication Administrator")
            );
            assert!(body["action"]["graph"]["request_id"].is_string());
        }
    }
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_action_without_a_new_code() {
    let rig = rig(&[]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let path = format!("/api/v1/customers/contoso/accounts/{ALICE}/disable");
    let send = |code: Option<String>, reason: &'static str| {
        let mut request = rig
            .app
            .client
            .post(rig.app.url(&path))
            .bearer_auth(&who.token)
            .header("Idempotency-Key", "incident-99")
            .json(&json!({"reason": reason}));
        if let Some(code) = code {
            request = request.header("X-Killswitch-OTP", code);
        }
        request.send()
    };
    let first: Value = send(Some(who.code()), "stolen laptop")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retry = send(None, "stolen laptop").await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.json::<Value>().await.unwrap()["id"], first["id"]);
    // A different request under the key is answered only after a fresh code.
    let unproven = send(None, "another reason").await.unwrap();
    assert_eq!(
        problem_type(unproven).await,
        (StatusCode::UNAUTHORIZED, "/problems/otp-required".into())
    );
    let different = send(Some(who.next_code()), "another reason").await.unwrap();
    assert_eq!(
        problem_type(different).await,
        (
            StatusCode::CONFLICT,
            "/problems/idempotency-conflict".into()
        )
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
}

#[tokio::test]
async fn malformed_requests_are_refused_before_the_code_is_spent() {
    let rig = rig(&[]).await;
    let who = rig.analyst(Role::Analyst, "all").await;
    let code = who.code();
    let path = format!("/api/v1/customers/contoso/accounts/{ALICE}/disable");
    let raw = rig
        .app
        .client
        .post(rig.app.url(&path))
        .bearer_auth(&who.token)
        .header("X-Killswitch-OTP", &code)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem_type(raw).await,
        (StatusCode::BAD_REQUEST, "/problems/invalid-body".into())
    );
    for body in [
        json!({}),
        json!({"reason": ""}),
        json!({"reason": "x", "extra": 1}),
        json!({"reason": "x", "ticket": "a\nb"}),
    ] {
        let (status, kind) =
            problem_type(rig.post(&who, &path, Some(&code), body.clone()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            kind == "/problems/invalid-body" || kind == "/problems/invalid-input",
            "{body}: {kind}"
        );
    }
    let bad_account = rig
        .disable(&who, "contoso", "not-an-account", Some(&code))
        .await;
    assert_eq!(
        problem_type(bad_account).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-input".into()
        )
    );
    let unknown_customer = rig.disable(&who, "initech", ALICE, Some(&code)).await;
    assert_eq!(
        problem_type(unknown_customer).await,
        (StatusCode::NOT_FOUND, "/problems/customer-not-found".into())
    );
    assert_eq!(
        rig.disable(&who, "contoso", ALICE, Some(&code))
            .await
            .status(),
        200,
        "the code was still unused"
    );
}

#[tokio::test]
async fn without_the_remediation_app_configured_actions_answer_503_and_spend_nothing() {
    let app = TestApp::spawn().await;
    entra::add_customer(&app.store, "contoso", CONTOSO, Policy::default()).await;
    let enrolled = app
        .enroll("night@provider.example", Role::Analyst, "all")
        .await;
    let response = app
        .client
        .post(app.url(&format!(
            "/api/v1/customers/contoso/accounts/{ALICE}/disable"
        )))
        .bearer_auth(&enrolled.token)
        .header("X-Killswitch-OTP", "123456")
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem_type(response).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/remediation-unavailable".into()
        )
    );
}

#[tokio::test]
async fn a_client_that_keeps_failing_to_authenticate_is_slowed_down() {
    let rig = rig(&[("auth.max_failures_per_client", "3")]).await;
    let stranger = Analyst {
        token: "ks_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".into(),
        totp: vec![],
        email: String::new(),
        id: Uuid::nil(),
        otpauth_uri: String::new(),
    };
    for _ in 0..3 {
        assert_eq!(rig.get(&stranger, "/api/v1/actions").await.status(), 401);
    }
    let blocked = rig.get(&stranger, "/api/v1/actions").await;
    assert!(blocked.headers().contains_key("retry-after"));
    assert_eq!(
        problem_type(blocked).await,
        (
            StatusCode::TOO_MANY_REQUESTS,
            "/problems/too-many-failures".into()
        )
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_with_its_auth_and_problems() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // OpenAPI requires a description on every response, and client generators need each
    // operation named once.
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(
                operation_ids.insert(id),
                "operationId `{id}` twice ({method} {path})"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // `Problem` is its members together with its flattened extension members.
    let problem = &doc["components"]["schemas"]["Problem"];
    let documented: Vec<&str> = problem["allOf"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([problem])
        .find_map(|part| part["properties"]["type"]["enum"].as_array())
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let answered: Vec<String> = killswitch::http::problem::ProblemKind::all()
        .map(|k| format!("/problems/{}", k.slug()))
        .collect();
    assert_eq!(
        documented, answered,
        "every problem type, from the one table"
    );
    for (path, method) in [
        ("/api/v1/customers/{customer}/accounts/{account}", "get"),
        (
            "/api/v1/customers/{customer}/accounts/{account}/disable",
            "post",
        ),
        (
            "/api/v1/customers/{customer}/accounts/{account}/enable",
            "post",
        ),
        ("/api/v1/actions", "get"),
        ("/api/v1/actions/{id}", "get"),
        ("/api/v1/customers/{customer}/audit/export", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert!(
            operation["security"].is_array(),
            "{method} {path} has no auth"
        );
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} lacks its 401"
        );
    }
    let disable = &doc["paths"]["/api/v1/customers/{customer}/accounts/{account}/disable"]["post"];
    for status in [
        "200", "202", "401", "403", "404", "409", "422", "429", "502", "503",
    ] {
        assert!(
            disable["responses"][status].is_object(),
            "disable lacks {status}"
        );
    }
}

#[tokio::test]
async fn auditors_and_admins_export_in_scope_and_the_export_verifies_with_the_served_key() {
    let rig = rig(&[]).await;
    let lead = rig.analyst(Role::Lead, "all").await;
    let done = rig
        .disable(&lead, "contoso", ALICE, Some(&lead.code()))
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let export = "/api/v1/customers/contoso/audit/export";
    for role in Role::ALL {
        let who = rig.analyst(role, "all").await;
        let response = rig.get(&who, export).await;
        if matches!(role, Role::Auditor | Role::Admin) {
            assert_eq!(response.status(), StatusCode::OK, "{role}");
        } else {
            assert_eq!(
                problem_type(response).await,
                (StatusCode::FORBIDDEN, "/problems/forbidden".into()),
                "{role}"
            );
        }
    }
    let outsider = rig.analyst(Role::Auditor, "fabrikam").await;
    assert_eq!(
        problem_type(rig.get(&outsider, export).await).await,
        (StatusCode::FORBIDDEN, "/problems/out-of-scope".into())
    );
    let auditor = rig.analyst(Role::Auditor, "contoso").await;
    for query in [
        "?format=pdf",
        "?from=yesterday",
        "?from=2026-11-02&to=2026-11-01",
        "?since=2026-11-01",
    ] {
        assert_eq!(
            problem_type(rig.get(&auditor, &format!("{export}{query}")).await).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/invalid-input".into()
            ),
            "{query}"
        );
    }
    let admin = rig.analyst(Role::Admin, "all").await;
    assert_eq!(
        problem_type(
            rig.get(&admin, "/api/v1/customers/nowhere/audit/export")
                .await
        )
        .await,
        (StatusCode::NOT_FOUND, "/problems/customer-not-found".into())
    );

    let response = rig.get(&auditor, export).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"killswitch-audit-contoso-"),
        "{disposition}"
    );
    let body = response.bytes().await.unwrap();
    // The public key is public: no credentials needed to fetch it.
    let key: Value = rig
        .app
        .client
        .get(rig.app.url("/api/v1/audit/public-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public =
        killswitch::audit::signing::PublicKey::parse(key["pem"].as_str().unwrap()).unwrap();
    assert_eq!(public.key_id.as_str(), key["key_id"].as_str().unwrap());
    let keys = killswitch::audit::KeyRing::new([public]);
    let verified = killswitch::reports::export::verify::verify(&body[..], &keys, Some("contoso"))
        .unwrap()
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("\"type\":\"action_requested\""));
    assert!(text.contains(&format!("\"email\":\"{}\"", lead.email)));
    assert!(
        text.contains("\"method\":\"totp\""),
        "MFA evidence is in the export"
    );

    // The export is now in the customer's chain: who, what range, which format.
    let newest: Entry = common::entries(&rig.app.store, "contoso")
        .await
        .pop()
        .unwrap();
    assert_eq!(newest.seq, verified.last_seq.unwrap() + 1);
    match (&newest.actor, &newest.event) {
        (
            Actor::Analyst { email, .. },
            AuditEvent::AuditExported {
                format,
                entries,
                from,
                to,
            },
        ) => {
            assert_eq!(email, &auditor.email);
            assert_eq!(
                (format.as_str(), *entries, *from, *to),
                ("jsonl", verified.entries, None, None)
            );
        }
        other => panic!("expected the export to be audited, found {other:?}"),
    }
    for (format, content_type) in [
        ("csv", "text/csv; charset=utf-8"),
        ("ocsf", "application/x-ndjson"),
        ("html", "text/html; charset=utf-8"),
    ] {
        let response = rig
            .get(
                &auditor,
                &format!("{export}?format={format}&from=2026-01-01"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        assert_eq!(response.headers()["content-type"], content_type, "{format}");
    }
}

#[tokio::test]
async fn no_token_secret_or_one_time_code_reaches_any_export_format() {
    let rig = rig(&[]).await;
    let lead = rig.analyst(Role::Lead, "all").await;
    let admin = rig.analyst(Role::Admin, "all").await;
    let code = lead.code();
    assert_eq!(
        rig.disable(&lead, "contoso", ALICE, Some(&code))
            .await
            .status(),
        StatusCode::OK
    );
    let wrong = admin.wrong_code();
    let refused = rig
        .disable(
            &lead,
            "contoso",
            "bob@contoso.onmicrosoft.com",
            Some(&wrong),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let customer = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let webhook = rig
        .app
        .onboarding
        .issue_webhook_secret(
            &customer,
            killswitch::customers::onboarding::SecretIssue::First,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let mut secrets = vec![
        lead.token.clone(),
        admin.token.clone(),
        CLIENT_SECRET.to_owned(),
        webhook.secret.expose_secret().to_owned(),
        mfa::enrollment_uri(&lead.totp, &lead.email)
            .unwrap()
            .split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned(),
        const_hex::encode(&lead.totp),
    ];
    // Codes are six digits, which hashes and times can contain by chance; as a value of their
    // own (a JSON string, a CSV cell, an HTML cell) they must never appear.
    for c in [&code, &wrong] {
        secrets.extend([
            format!("\"{c}\""),
            format!(">{c}<"),
            format!(":{c},"),
            format!(":{c}}}"),
        ]);
    }
    for format in ["jsonl", "csv", "ocsf", "html"] {
        let response = rig
            .get(
                &admin,
                &format!("/api/v1/customers/contoso/audit/export?format={format}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(text.contains(ALICE), "{format} export holds the action");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{format} export contains {secret}"
            );
        }
        for field in [
            "\"otp\"",
            "\"code\"",
            "\"token\"",
            "\"secret\"",
            "\"client_secret\"",
        ] {
            assert!(!text.contains(field), "{format} export has a {field} field");
        }
    }
}

/// One mistake, one answer, on every route that takes a JSON body: 415 without a JSON content
/// type, 400 when the bytes are not JSON, 422 when it is JSON of the wrong shape.
#[tokio::test]
async fn every_json_route_answers_the_same_mistake_the_same_way() {
    let rig = rig(&[]).await;
    let lead = rig.analyst(Role::Lead, "all").await;
    let admin = rig.analyst(Role::Admin, "all").await;
    let routes = [
        (
            &lead,
            reqwest::Method::POST,
            format!("/api/v1/customers/contoso/accounts/{ALICE}/disable"),
        ),
        (
            &lead,
            reqwest::Method::POST,
            format!("/api/v1/customers/contoso/accounts/{ALICE}/enable"),
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/customers/contoso/policy".to_owned(),
        ),
        (
            &admin,
            reqwest::Method::POST,
            "/api/v1/customers/contoso/webhook-secret".to_owned(),
        ),
    ];
    for (who, method, path) in routes {
        let send = |content_type: Option<&'static str>, body: &'static str| {
            let mut request = rig
                .app
                .client
                .request(method.clone(), rig.app.url(&path))
                .bearer_auth(&who.token)
                .body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.send()
        };
        let json = Some("application/json");
        for (content_type, body, status) in [
            (
                None,
                "{\"reason\":\"x\"}",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (json, "{not json", StatusCode::BAD_REQUEST),
            (
                Some("text/plain"),
                "{\"reason\":\"x\"}",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (json, "[1, 2]", StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            let answer = send(content_type, body).await.unwrap();
            assert_eq!(
                problem_type(answer).await,
                (status, "/problems/invalid-body".into()),
                "{method} {path} {content_type:?} {body}"
            );
        }
    }
}
