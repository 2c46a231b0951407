//! Onboarding against the fake Entra, on SQLite and PostgreSQL: tenant discovery, the admin-consent
//! round trip and every way it can go wrong, and the connection test's answers. Every outcome is
//! in the customer's (or, when no customer can be named, the system) audit chain.

use crate::common;

use common::TestApp;
use common::entra::{self, CLIENT_ID, CLIENT_SECRET, CONTOSO, FABRIKAM};
use fake_entra::{ConsentOutcome, Endpoint, FakeEntra, Fault, Tenant};
use futures::TryStreamExt;
use killswitch::audit::event::AuditEvent;
use killswitch::auth::Role;
use killswitch::customers::Policy;
use killswitch::customers::discovery;
use killswitch::domain::TenantId;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

const NEWCO: Uuid = Uuid::from_u128(0x0E_0C0);

struct Rig {
    app: TestApp,
    fake: FakeEntra,
    admin_token: String,
}

async fn rig(overrides: &[(&str, &str)]) -> Rig {
    let mut settings = vec![("graph.deadline_secs", "2")];
    settings.extend_from_slice(overrides);
    let base = entra::two_tenants(&settings, Policy::default()).await;
    // A customer that has not consented yet.
    base.fake.add_tenant(Tenant {
        id: NEWCO,
        domain: "newco.onmicrosoft.com".into(),
        consented: false,
        granted_roles: vec![],
    });
    entra::add_customer(&base.app.store, "newco", NEWCO, Policy::default()).await;
    let admin = base
        .app
        .enroll("admin@provider.example", Role::Admin, "all")
        .await;
    Rig {
        admin_token: admin.token,
        app: base.app,
        fake: base.fake,
    }
}

impl Rig {
    /// A consent link for `customer`, made through the API by an admin with a code (a fresh
    /// admin each time: a code is good for one action).
    async fn consent_link(&self, customer: &str) -> String {
        let email = format!("admin-{}@provider.example", Uuid::new_v4().simple());
        let admin = self.app.enroll(&email, Role::Admin, "all").await;
        let code = admin.code();
        let response = self
            .app
            .client
            .post(
                self.app
                    .url(&format!("/api/v1/customers/{customer}/consent-link")),
            )
            .bearer_auth(&admin.token)
            .header("X-Killswitch-OTP", code)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What the administrator's browser does: open the link at Entra, and follow the redirect
    /// (whose host is the configured public URL) to this app's callback.
    async fn administrator_opens(&self, link: &str) -> (StatusCode, String) {
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let at_entra = no_redirects.get(link).send().await.unwrap();
        assert_eq!(at_entra.status(), StatusCode::FOUND, "Entra redirects back");
        let location = url::Url::parse(at_entra.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(location.path(), "/consent/callback");
        self.callback(location.query().unwrap_or_default()).await
    }

    async fn callback(&self, query: &str) -> (StatusCode, String) {
        let response = self
            .app
            .client
            .get(self.app.url(&format!("/consent/callback?{query}")))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn events(&self, chain: &str) -> Vec<AuditEvent> {
        common::events(&self.app.store, chain).await
    }

    async fn last_consent_event(&self, chain: &str) -> AuditEvent {
        self.events(chain)
            .await
            .into_iter()
            .rev()
            .find(|e| {
                matches!(
                    e,
                    AuditEvent::ConsentGranted { .. } | AuditEvent::ConsentFailed { .. }
                )
            })
            .unwrap_or_else(|| panic!("no consent outcome in {chain}"))
    }

    async fn verify(&self, chain: &str) {
        common::verify_chain(&self.app.store, chain).await;
    }

    /// The connection test through the API, by a fresh admin with a code.
    async fn test_connection(&self, customer: &str) -> Value {
        let email = format!("admin-{}@provider.example", Uuid::new_v4().simple());
        let admin = self.app.enroll(&email, Role::Admin, "all").await;
        self.app
            .client
            .post(self.app.url(&format!("/api/v1/customers/{customer}/test")))
            .bearer_auth(&admin.token)
            .header("X-Killswitch-OTP", admin.code())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn failed_because(event: &AuditEvent, words: &str) -> bool {
    matches!(event, AuditEvent::ConsentFailed { reason, .. } if reason.contains(words))
}

fn state_of(link: &str) -> String {
    url::Url::parse(link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn the_tenant_is_found_from_a_known_primary_domain_and_an_unknown_one_is_explained() {
    let fake = entra::fake_entra().await;
    let http = reqwest::Client::new();
    let authority = url::Url::parse(&fake.base_url()).unwrap();
    let found = discovery::tenant_of(&http, &authority, "contoso.onmicrosoft.com")
        .await
        .unwrap();
    assert_eq!(found, TenantId::new(CONTOSO));
    let unknown = discovery::tenant_of(&http, &authority, "nobody.onmicrosoft.com")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("knows no tenant") && unknown.contains("Primary domain"),
        "{unknown}"
    );
}

#[tokio::test]
async fn an_administrator_who_accepts_is_recorded_as_consent_granted_after_a_real_token() {
    let rig = rig(&[]).await;
    let link = rig.consent_link("newco").await;
    assert!(
        link.contains(&format!("/{NEWCO}/v2.0/adminconsent?")),
        "{link}"
    );
    let (status, page) = rig.administrator_opens(&link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You can close this page"), "{page}");
    assert!(
        matches!(rig.last_consent_event("newco").await, AuditEvent::ConsentGranted { tenant_id } if tenant_id == NEWCO.to_string())
    );
    let customer: Value = rig
        .app
        .client
        .get(rig.app.url("/api/v1/customers/newco"))
        .bearer_auth(&rig.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        customer["ready"], true,
        "the consent was followed by a passing connection test: {customer}"
    );
    assert!(
        rig.fake.count(Endpoint::Token) >= 1,
        "the consent was proved with a token"
    );
    rig.verify("newco").await;
}

#[tokio::test]
async fn an_error_from_entra_is_recorded_before_anything_else() {
    let rig = rig(&[]).await;
    let link = rig.consent_link("newco").await;
    let query = format!(
        "error=permission_denied&error_description=The+admin+canceled&admin_consent=True&tenant={NEWCO}&state={}",
        url::form_urlencoded::byte_serialize(state_of(&link).as_bytes()).collect::<String>()
    );
    let (status, page) = rig.callback(&query).await;
    assert_eq!(status, 400);
    assert!(page.contains("permission_denied"), "{page}");
    assert!(failed_because(
        &rig.last_consent_event("newco").await,
        "permission_denied"
    ));

    rig.fake.set_consent_outcome(NEWCO, ConsentOutcome::Deny);
    let (status, _) = rig
        .administrator_opens(&rig.consent_link("newco").await)
        .await;
    assert_eq!(status, 400);
    assert!(failed_because(
        &rig.last_consent_event("newco").await,
        "access_denied"
    ));
    rig.verify("newco").await;
}

/// The consent outcomes recorded in `chain`.
async fn consent_events(rig: &Rig, chain: &str) -> Vec<AuditEvent> {
    rig.events(chain)
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::ConsentGranted { .. } | AuditEvent::ConsentFailed { .. }
            )
        })
        .collect()
}

#[tokio::test]
async fn forged_and_replayed_states_are_refused_unrecorded_and_a_link_s_first_use_is_recorded() {
    let rig = rig(&[("onboarding.consent_link_secs", "2")]).await;

    // Forged: the signature does not match a changed payload. Anyone could send that, so it is
    // refused and counted, never written to a chain.
    let link = rig.consent_link("newco").await;
    let state = state_of(&link);
    let (payload, tag) = state.split_once('.').unwrap();
    let forged = format!("{}x.{tag}", payload);
    let query = format!(
        "admin_consent=True&tenant={NEWCO}&state={}",
        url::form_urlencoded::byte_serialize(forged.as_bytes()).collect::<String>()
    );
    let (status, page) = rig.callback(&query).await;
    assert_eq!(status, 400);
    assert!(page.contains("forged or altered"), "{page}");
    assert!(consent_events(&rig, "system").await.is_empty());
    assert!(consent_events(&rig, "newco").await.is_empty());

    // Replayed: the same redirect twice. Only the first use is recorded.
    let (first, _) = rig.administrator_opens(&link).await;
    assert_eq!(first, 200);
    let query = format!(
        "admin_consent=True&tenant={NEWCO}&state={}&error=access_denied&error_description=made+up",
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    let (again, page) = rig.callback(&query).await;
    assert_eq!(again, 400);
    assert!(page.contains("already used"), "{page}");
    let recorded = consent_events(&rig, "newco").await;
    assert!(
        matches!(recorded.as_slice(), [AuditEvent::ConsentGranted { .. }]),
        "{recorded:?}"
    );

    // Another customer's link completed in this customer's tenant, and a tenant nobody named:
    // genuine links on their first use, so recorded in that customer's chain.
    for (customer, tenant) in [
        ("contoso", FABRIKAM.to_string()),
        ("fabrikam", Uuid::new_v4().to_string()),
    ] {
        let link = rig.consent_link(customer).await;
        let query = format!(
            "admin_consent=True&tenant={tenant}&state={}",
            url::form_urlencoded::byte_serialize(state_of(&link).as_bytes()).collect::<String>()
        );
        let (status, page) = rig.callback(&query).await;
        assert_eq!(status, 400, "{page}");
        assert!(
            failed_because(&rig.last_consent_event(customer).await, "another tenant"),
            "{customer}"
        );
    }

    // Expired: the link outlived consent_link_secs; its first use is recorded, once.
    let link = rig.consent_link("newco").await;
    rig.app
        .clock
        .advance(std::time::Duration::from_millis(2100));
    let (status, _) = rig.administrator_opens(&link).await;
    assert_eq!(status, 400);
    assert!(failed_because(
        &rig.last_consent_event("newco").await,
        "expired"
    ));
    let (status, _) = rig.administrator_opens(&link).await;
    assert_eq!(status, 400);
    assert_eq!(consent_events(&rig, "newco").await.len(), 2);

    for chain in ["system", "newco", "contoso", "fabrikam"] {
        rig.verify(chain).await;
    }
}

#[tokio::test]
async fn a_consent_without_the_required_permissions_is_not_taken_for_one() {
    let rig = rig(&[]).await;
    rig.fake.set_consent_outcome(
        NEWCO,
        ConsentOutcome::Accept {
            roles: vec!["User.Read.All".into()],
        },
    );
    let (status, page) = rig
        .administrator_opens(&rig.consent_link("newco").await)
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(failed_because(
        &rig.last_consent_event("newco").await,
        "User.EnableDisableAccount.All"
    ));
    rig.verify("newco").await;
}

#[tokio::test]
async fn the_connection_test_answers_ready_or_the_exact_reason_and_keeps_the_last_success() {
    let rig = rig(&[]).await;
    let ready = rig.test_connection("contoso").await;
    assert_eq!(ready["ready"], true, "{ready}");
    let last_ready = ready["last_ready_at"].clone();
    assert!(last_ready.is_string());

    rig.fake
        .set_consent(CONTOSO, true, vec!["User.Read.All".into()]);
    let missing = rig.test_connection("contoso").await;
    assert_eq!(missing["ready"], false);
    assert!(
        missing["connection_detail"]
            .as_str()
            .unwrap()
            .contains("a permission is missing: User.EnableDisableAccount.All"),
        "{missing}"
    );
    assert_eq!(
        missing["last_ready_at"], last_ready,
        "the last success is kept"
    );

    rig.fake.set_consent(CONTOSO, false, vec![]);
    let not_consented = rig.test_connection("contoso").await;
    assert!(
        not_consented["connection_detail"]
            .as_str()
            .unwrap()
            .starts_with("not consented"),
        "{not_consented}"
    );

    rig.fake.set_consent(
        CONTOSO,
        true,
        fake_entra::DEFAULT_ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
    );
    rig.fake
        .fail_always(Endpoint::ListUsers, Some(Fault::Status(503)));
    let unreachable = rig.test_connection("contoso").await;
    assert!(
        unreachable["connection_detail"]
            .as_str()
            .unwrap()
            .starts_with("Microsoft Graph unreachable"),
        "{unreachable}"
    );
    rig.fake.fail_always(Endpoint::ListUsers, None);

    let events = rig.events("contoso").await;
    let tested: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::ConnectionTested { ready, .. } => Some(*ready),
            _ => None,
        })
        .collect();
    assert_eq!(tested, [true, false, false, false]);
    rig.verify("contoso").await;
}

#[tokio::test]
async fn a_rejected_app_secret_is_reported_as_such() {
    let fake = entra::fake_entra().await;
    let app = entra::spawn_app(&fake, &[("entra.client_secret", "not-the-secret")]).await;
    entra::add_customer(&app.store, "contoso", CONTOSO, Policy::default()).await;
    let admin = app
        .enroll("admin@provider.example", Role::Admin, "all")
        .await;
    let without_code = app
        .client
        .post(app.url("/api/v1/customers/contoso/test"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(without_code.status(), 401, "a connection test needs a code");
    let result: Value = app
        .client
        .post(app.url("/api/v1/customers/contoso/test"))
        .bearer_auth(&admin.token)
        .header("X-Killswitch-OTP", admin.code())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["ready"], false);
    assert!(
        result["connection_detail"]
            .as_str()
            .unwrap()
            .contains("secret or certificate was rejected"),
        "{result}"
    );
    assert!(!result.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn a_lead_replaces_the_policy_with_a_code_and_the_change_is_audited() {
    let rig = rig(&[]).await;
    let lead = rig
        .app
        .enroll("lead@provider.example", Role::Lead, "all")
        .await;
    let policy = serde_json::json!({
        "protected": ["breakglass@contoso.onmicrosoft.com"],
        "max_actions_per_hour": 5,
        "revoke_sessions": true,
        "auto_disable": "critical",
        "contact": "SOC@contoso.example",
    });
    let put = |code: Option<String>| {
        let mut request = rig
            .app
            .client
            .put(rig.app.url("/api/v1/customers/contoso/policy"))
            .bearer_auth(&lead.token)
            .json(&policy);
        if let Some(code) = code {
            request = request.header("X-Killswitch-OTP", code);
        }
        request.send()
    };
    assert_eq!(
        put(None).await.unwrap().status(),
        401,
        "a policy change needs a code"
    );
    let code = lead.code();
    let saved: Value = put(Some(code)).await.unwrap().json().await.unwrap();
    assert_eq!(saved["contact"], "soc@contoso.example");
    let read: Value = rig
        .app
        .client
        .get(rig.app.url("/api/v1/customers/contoso/policy"))
        .bearer_auth(&rig.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["max_actions_per_hour"], 5);
    assert_eq!(read["protected"][0], "breakglass@contoso.onmicrosoft.com");
    let changed = rig
        .events("contoso")
        .await
        .into_iter()
        .find_map(|e| match e {
            AuditEvent::CustomerPolicyChanged { changes } => Some(changes),
            _ => None,
        });
    assert_eq!(changed.unwrap()["after"]["max_actions_per_hour"], 5);
    rig.verify("contoso").await;
}

// Multi-threaded: the fake Entra must keep serving while a CLI command blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_onboards_a_customer_end_to_end() {
    let fake = entra::fake_entra().await;
    let db = common::TestDb::new().await;
    let base = fake.base_url();
    let killswitch = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_killswitch"))
            .args(args)
            .current_dir(db.dir.path())
            .env("KILLSWITCH_DATA_DIR", db.dir.path())
            .env("KILLSWITCH_DATABASE__URL", &db.url)
            .env("KILLSWITCH_ENTRA__AUTHORITY_URL", &base)
            .env("KILLSWITCH_ENTRA__GRAPH_URL", &base)
            .env("KILLSWITCH_ENTRA__CLIENT_ID", CLIENT_ID)
            .env("KILLSWITCH_ENTRA__CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "KILLSWITCH_SERVER__PUBLIC_URL",
                "https://killswitch.provider.example",
            )
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let json = |out: &str| serde_json::from_str::<Value>(out).unwrap();

    let (code, out, err) = killswitch(&[
        "customer",
        "add",
        "--slug",
        "contoso",
        "--name",
        "Contoso Ltd",
        "--domain",
        "contoso.onmicrosoft.com",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["tenant_id"], CONTOSO.to_string());
    let (code, _, err) = killswitch(&[
        "customer",
        "add",
        "--slug",
        "other",
        "--name",
        "X",
        "--domain",
        "contoso.com",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("Primary domain"), "{err}");

    let (code, out, _) = killswitch(&["customer", "consent-link", "contoso", "--json"]);
    assert_eq!(code, 0);
    let link = json(&out)["url"].as_str().unwrap().to_owned();
    assert!(
        link.contains(
            "redirect_uri=https%3A%2F%2Fkillswitch.provider.example%2Fconsent%2Fcallback"
        ),
        "{link}"
    );

    let (code, out, _) = killswitch(&["customer", "test", "contoso", "--json"]);
    assert_eq!(
        (code, json(&out)["connection"]["ready"].clone()),
        (0, Value::Bool(true))
    );
    fake.set_consent(CONTOSO, false, vec![]);
    let (code, out, _) = killswitch(&["customer", "test", "contoso"]);
    assert_eq!(code, 1, "not ready is a non-zero exit");
    assert!(out.contains("NOT READY: not consented"), "{out}");

    let (code, out, _) = killswitch(&["customer", "webhook-secret", "contoso", "--json"]);
    assert_eq!(code, 0);
    let first = json(&out);
    assert!(first["secret"].as_str().unwrap().len() >= 32);
    assert_eq!(
        first["url"],
        "https://killswitch.provider.example/api/v1/webhooks/falcon/contoso"
    );
    assert_eq!(first["header"], "X-CS-Primary-Signature");
    let (code, _, err) = killswitch(&["customer", "webhook-secret", "contoso"]);
    assert_eq!(code, 1, "replacing needs --rotate");
    assert!(err.contains("--rotate"), "{err}");
    let (code, out, _) = killswitch(&[
        "customer",
        "webhook-secret",
        "contoso",
        "--rotate",
        "--json",
    ]);
    assert_eq!(code, 0);
    let rotated = json(&out);
    assert_ne!(rotated["secret"], first["secret"]);
    assert!(rotated["previous_valid_until"].is_string());

    let (code, out, _) = killswitch(&[
        "customer",
        "policy",
        "contoso",
        "--protect",
        "breakglass@contoso.onmicrosoft.com",
        "--max-actions-per-hour",
        "10",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["policy"]["max_actions_per_hour"], 10);

    let (code, out, err) = killswitch(&["audit", "check", "--customer", "contoso"]);
    assert_eq!(code, 0, "{out}{err}");
    let store = db.store(1000).await.0;
    let rows: Vec<_> = store.entries("contoso").try_collect().await.unwrap();
    let kinds: Vec<String> = rows.iter().map(|r| r.event.clone()).collect();
    assert_eq!(
        kinds,
        [
            "customer_added",
            "connection_tested",
            "connection_tested",
            "webhook_secret_issued",
            "webhook_secret_issued",
            "customer_policy_changed"
        ]
    );
    let secrets_in_log = rows.iter().any(|r| {
        r.entry.contains(first["secret"].as_str().unwrap())
            || r.entry.contains(rotated["secret"].as_str().unwrap())
    });
    assert!(
        !secrets_in_log,
        "the audit log never holds a webhook secret"
    );
}
