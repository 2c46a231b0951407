//! Black-box tests of the fake over real HTTP, with the kind of client killswitch uses.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_entra::{
    Algorithm, AppCredential, ConsentOutcome, DEFAULT_ROLES, Endpoint, FakeEntra, Fault,
    OTHER_CERT_PEM, PRIVILEGED_AUTH_ADMIN, TEST_CERT_PEM, Tenant, User, sign_client_assertion,
    sign_jwt,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const CLIENT: &str = "6f1c2e58-0c0e-4f5e-9d0e-3b7a2a9c1d10";
const SECRET: &str = "s3cret~value";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const TENANT: Uuid = Uuid::from_u128(0x2b5c1f6e_4a3d_4c8b_9e21_7f0a5d3c9b11);
const DOMAIN: &str = "fabrikam.onmicrosoft.com";
const NO_ROLES_TENANT: Uuid = Uuid::from_u128(0x3c6d2a7f_5b4e_4d9c_8f32_8a1b6e4dac22);
const UNCONSENTED_TENANT: Uuid = Uuid::from_u128(0x4d7e3b80_6c5f_4eab_9043_9b2c7f5ebd33);
const ALICE: Uuid = Uuid::from_u128(0xa11ce000_0000_4000_8000_000000000001);
const BOB_SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1105";

struct Env {
    fake: FakeEntra,
    http: reqwest::Client,
    base: String,
}

fn roles(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| (*r).to_owned()).collect()
}

fn user(id: Uuid, upn: &str) -> User {
    User {
        id,
        user_principal_name: upn.to_owned(),
        display_name: upn.split('@').next().unwrap_or_default().to_owned(),
        account_enabled: true,
        on_premises_sync_enabled: None,
        on_premises_security_identifier: None,
        privileged: false,
    }
}

async fn env() -> Env {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT, AppCredential::Secret(SECRET.into()));
    fake.register_app(
        CLIENT,
        AppCredential::Certificate {
            cert_pem: TEST_CERT_PEM.into(),
        },
    );
    fake.add_tenant(Tenant {
        id: TENANT,
        domain: DOMAIN.into(),
        consented: true,
        granted_roles: roles(&DEFAULT_ROLES),
    });
    fake.add_tenant(Tenant {
        id: NO_ROLES_TENANT,
        domain: "noroles.onmicrosoft.com".into(),
        consented: true,
        granted_roles: vec![],
    });
    fake.add_tenant(Tenant {
        id: UNCONSENTED_TENANT,
        domain: "newcustomer.onmicrosoft.com".into(),
        consented: false,
        granted_roles: vec![],
    });
    fake.add_user(TENANT, user(ALICE, "alice@fabrikam.onmicrosoft.com"));
    fake.add_user(
        TENANT,
        User {
            on_premises_sync_enabled: Some(true),
            on_premises_security_identifier: Some(BOB_SID.into()),
            ..user(Uuid::new_v4(), "bob@fabrikam.onmicrosoft.com")
        },
    );
    fake.add_user(
        TENANT,
        User {
            privileged: true,
            ..user(Uuid::new_v4(), "carol.admin@fabrikam.onmicrosoft.com")
        },
    );
    fake.add_user(
        NO_ROLES_TENANT,
        user(Uuid::new_v4(), "dave@noroles.onmicrosoft.com"),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = fake.base_url();
    Env { fake, http, base }
}

impl Env {
    fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base)
    }

    async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.token_url(tenant))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn secret_token(&self, tenant: &str) -> Response {
        self.token_request(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await
    }

    async fn assertion_token(&self, tenant: &str, assertion: &str) -> Response {
        self.token_request(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await
    }

    async fn access_token(&self, tenant: Uuid) -> String {
        let resp = self.secret_token(&tenant.to_string()).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn graph(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1.0/{path}", self.base))
            .bearer_auth(token)
    }

    async fn patch_enabled(&self, token: &str, user: &str, enabled: bool) -> Response {
        self.graph(reqwest::Method::PATCH, &format!("users/{user}"), token)
            .json(&json!({ "accountEnabled": enabled }))
            .send()
            .await
            .unwrap()
    }
}

fn jwt_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Asserts an AAD-style error and returns its body.
async fn assert_aad_error(resp: Response, status: u16, error: &str, code: u64) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    body
}

/// Asserts a Graph error envelope with all its headers and returns the body.
async fn assert_graph_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    let request_id = headers["request-id"].to_str().unwrap().to_owned();
    Uuid::parse_str(&request_id).unwrap();
    let client_request_id = headers["client-request-id"].to_str().unwrap().to_owned();
    httpdate::parse_http_date(headers["date"].to_str().unwrap()).unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["request-id"], request_id);
    assert_eq!(inner["client-request-id"], client_request_id);
    chrono::NaiveDateTime::parse_from_str(inner["date"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
        .unwrap();
    body
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

#[tokio::test]
async fn secret_flow_issues_a_graph_token_with_the_tenant_roles() {
    let e = env().await;
    for tenant in [TENANT.to_string(), DOMAIN.to_owned()] {
        let resp = e.secret_token(&tenant).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store, no-cache");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        let claims = jwt_payload(body["access_token"].as_str().unwrap());
        assert_eq!(claims["aud"], "https://graph.microsoft.com");
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
        assert_eq!(claims["tid"], TENANT.to_string());
        assert_eq!(claims["appid"], CLIENT);
        assert_eq!(claims["roles"], json!(DEFAULT_ROLES));
        Uuid::parse_str(claims["oid"].as_str().unwrap()).unwrap();
        assert!(claims["exp"].as_i64().unwrap() > claims["nbf"].as_i64().unwrap());
    }
    e.fake.set_token_lifetime(600);
    let body: Value = e.secret_token(DOMAIN).await.json().await.unwrap();
    assert_eq!(body["expires_in"], 600);
}

#[tokio::test]
async fn certificate_flow_accepts_rs256_and_ps256_assertions_for_guid_and_domain() {
    let e = env().await;
    for tenant in [TENANT.to_string(), DOMAIN.to_owned()] {
        let assertion = sign_client_assertion(TEST_CERT_PEM, CLIENT, &e.token_url(&tenant), 600);
        let resp = e.assertion_token(&tenant, &assertion).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    // Audience in the other form than the URL posted to is accepted too.
    let assertion = sign_client_assertion(TEST_CERT_PEM, CLIENT, &e.token_url(DOMAIN), 600);
    let resp = e.assertion_token(&TENANT.to_string(), &assertion).await;
    assert_eq!(resp.status(), 200);
    let claims = jwt_payload(
        resp.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(claims["appidacr"], "2");

    let now = chrono::Utc::now().timestamp();
    let claims = json!({"aud": e.token_url(DOMAIN), "iss": CLIENT, "sub": CLIENT, "jti": "ps-1",
                        "nbf": now, "exp": now + 300});
    let ps256 = sign_jwt(TEST_CERT_PEM, TEST_CERT_PEM, Algorithm::PS256, &claims);
    assert_eq!(e.assertion_token(DOMAIN, &ps256).await.status(), 200);
}

#[tokio::test]
async fn token_errors_carry_the_documented_aadsts_codes() {
    let e = env().await;
    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
    ];

    let resp = e.secret_token("unknown.onmicrosoft.com").await;
    let body = assert_aad_error(resp, 400, "invalid_request", 90002).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Tenant 'unknown.onmicrosoft.com' not found")
    );
    assert_aad_error(
        e.secret_token(&Uuid::new_v4().to_string()).await,
        400,
        "invalid_request",
        90002,
    )
    .await;

    let resp = e
        .token_request(
            DOMAIN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "0000dead-0000-0000-0000-000000000000"),
                ("client_secret", SECRET),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    let body = assert_aad_error(resp, 400, "unauthorized_client", 700016).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Application with identifier '0000dead")
    );

    let resp = e.secret_token(&UNCONSENTED_TENANT.to_string()).await;
    let body = assert_aad_error(resp, 400, "invalid_client", 7000229).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("missing service principal")
    );

    let resp = e
        .token_request(
            DOMAIN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "wrong"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_aad_error(resp, 401, "invalid_client", 7000215).await;

    let resp = e
        .token_request(
            DOMAIN,
            &[base[0], base[1], base[2], ("scope", "User.Read.All")],
        )
        .await;
    assert_aad_error(resp, 400, "invalid_scope", 1002012).await;

    let resp = e
        .token_request(
            DOMAIN,
            &[
                ("grant_type", "password"),
                base[1],
                base[2],
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_aad_error(resp, 400, "unsupported_grant_type", 70003).await;

    let resp = e
        .token_request(DOMAIN, &[base[0], base[2], ("scope", GRAPH_SCOPE)])
        .await;
    assert_aad_error(resp, 400, "invalid_request", 900144).await;

    let resp = e
        .token_request(DOMAIN, &[base[0], base[1], ("scope", GRAPH_SCOPE)])
        .await;
    assert_aad_error(resp, 401, "invalid_client", 7000218).await;

    // The correlation id echoes client-request-id.
    let resp = e
        .http
        .post(e.token_url(DOMAIN))
        .header("client-request-id", "corr-123")
        .form(&[
            base[0],
            base[1],
            ("client_secret", "wrong"),
            ("scope", GRAPH_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["client-request-id"], "corr-123");
    let body = assert_aad_error(resp, 401, "invalid_client", 7000215).await;
    assert_eq!(body["correlation_id"], "corr-123");
}

#[tokio::test]
async fn bad_client_assertions_are_rejected_with_700027() {
    let e = env().await;
    let aud = e.token_url(DOMAIN);
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, iss: &str, exp: i64| json!({"aud": aud, "iss": iss, "sub": iss, "jti": Uuid::new_v4().to_string(), "nbf": now, "exp": exp});
    // (case, assertion, expected part of the description)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "signed by another key, announcing the registered certificate",
            sign_jwt(
                OTHER_CERT_PEM,
                TEST_CERT_PEM,
                Algorithm::RS256,
                &claims(&aud, CLIENT, now + 300),
            ),
            "failed signature validation",
        ),
        (
            "signed by an unregistered certificate",
            sign_client_assertion(OTHER_CERT_PEM, CLIENT, &aud, 300),
            "not registered on application",
        ),
        (
            "wrong x5t#S256",
            {
                let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
                header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode([7u8; 32]));
                let key = TEST_CERT_PEM
                    .find("-----BEGIN PRIVATE KEY-----")
                    .map(|i| &TEST_CERT_PEM[i..])
                    .unwrap();
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).unwrap();
                jsonwebtoken::encode(&header, &claims(&aud, CLIENT, now + 300), &key).unwrap()
            },
            "not registered on application",
        ),
        (
            "wrong audience",
            sign_client_assertion(
                TEST_CERT_PEM,
                CLIENT,
                "https://login.microsoftonline.com/x/oauth2/v2.0/token",
                300,
            ),
            "audience",
        ),
        (
            "expired",
            sign_jwt(
                TEST_CERT_PEM,
                TEST_CERT_PEM,
                Algorithm::RS256,
                &json!({"aud": aud, "iss": CLIENT, "sub": CLIENT,
                     "jti": "x", "nbf": now - 900, "exp": now - 60}),
            ),
            "not within its valid time range",
        ),
        (
            "issuer is not the client",
            sign_jwt(
                TEST_CERT_PEM,
                TEST_CERT_PEM,
                Algorithm::RS256,
                &claims(&aud, "someone-else", now + 300),
            ),
            "'iss' claim",
        ),
        (
            "lifetime over an hour",
            sign_client_assertion(TEST_CERT_PEM, CLIENT, &aud, 7200),
            "lifetime",
        ),
        (
            "no jti",
            sign_jwt(
                TEST_CERT_PEM,
                TEST_CERT_PEM,
                Algorithm::RS256,
                &json!({"aud": aud, "iss": CLIENT, "sub": CLIENT,
                     "nbf": now, "exp": now + 300}),
            ),
            "jti",
        ),
        ("not a JWT", "garbage".to_owned(), "well-formed"),
    ];
    for (name, assertion, expected) in cases {
        let resp = e.assertion_token(DOMAIN, &assertion).await;
        assert_eq!(resp.status(), 401, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{name}");
        assert_eq!(body["error_codes"], json!([700027]), "{name}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(expected), "{name}: {description}");
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

#[tokio::test]
async fn get_patch_and_revoke_with_the_default_roles() {
    let e = env().await;
    let token = e.access_token(TENANT).await;

    let resp = e
        .graph(
            reqwest::Method::GET,
            "users/ALICE@Fabrikam.onmicrosoft.com?$select=accountEnabled,displayName",
            &token,
        )
        .header("client-request-id", "kill-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["client-request-id"], "kill-42");
    Uuid::parse_str(resp.headers()["request-id"].to_str().unwrap()).unwrap();
    assert!(resp.headers().contains_key("date"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(accountEnabled,displayName)/$entity",
            "id": ALICE.to_string(), "accountEnabled": true, "displayName": "alice",
        })
    );

    let resp = e.patch_enabled(&token, &ALICE.to_string(), false).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.headers().contains_key("request-id"));
    assert!(
        !e.fake
            .user(TENANT, "alice@fabrikam.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );

    let resp = e
        .graph(
            reqwest::Method::POST,
            "users/alice@fabrikam.onmicrosoft.com/revokeSignInSessions",
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": true})
    );
    assert_eq!(e.fake.revocations(TENANT, &ALICE.to_string()), 1);

    // Changed behind the client's back, and read back through Graph.
    e.fake.set_account_enabled(TENANT, &ALICE.to_string(), true);
    let body: Value = e
        .graph(
            reqwest::Method::GET,
            &format!("users/{ALICE}?$select=accountEnabled"),
            &token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["accountEnabled"], true);
}

#[tokio::test]
async fn select_and_default_projection() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    let body: Value = e
        .graph(
            reqwest::Method::GET,
            "users/bob@fabrikam.onmicrosoft.com",
            &token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Graph's default projection leaves out accountEnabled and the on-premises properties.
    assert_eq!(body["userPrincipalName"], "bob@fabrikam.onmicrosoft.com");
    assert!(body.get("accountEnabled").is_none());
    assert!(body.get("onPremisesSecurityIdentifier").is_none());
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );

    let body: Value = e
        .graph(
            reqwest::Method::GET,
            "users/bob@fabrikam.onmicrosoft.com?$select=onPremisesSyncEnabled,onPremisesSecurityIdentifier",
            &token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
    assert_eq!(body["onPremisesSyncEnabled"], true);
    assert_eq!(body["onPremisesSecurityIdentifier"], BOB_SID);
    assert!(body["id"].is_string());

    let resp = e
        .graph(
            reqwest::Method::GET,
            "users/bob@fabrikam.onmicrosoft.com?$select=shoeSize",
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 400, "BadRequest").await;
}

#[tokio::test]
async fn filter_by_sid_and_upn() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    let list = |filter: String| {
        e.http
            .get(format!("{}/v1.0/users", e.base))
            .query(&[
                ("$filter", filter),
                (
                    "$select",
                    "id,accountEnabled,onPremisesSecurityIdentifier".to_owned(),
                ),
            ])
            .bearer_auth(&token)
            .send()
    };
    let resp = list(format!("onPremisesSecurityIdentifier eq '{BOB_SID}'"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .starts_with("https://graph.microsoft.com/v1.0/$metadata#users(")
    );
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["onPremisesSecurityIdentifier"], BOB_SID);
    assert_eq!(value[0]["accountEnabled"], true);

    let body: Value = list("userPrincipalName eq 'ALICE@fabrikam.onmicrosoft.com'".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"][0]["id"], ALICE.to_string());
    let body: Value = list("onPremisesSecurityIdentifier eq 'S-1-5-21-0-0-0-1'".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"], json!([]));

    let resp = list("startswith(displayName,'a')".into()).await.unwrap();
    assert_graph_error(resp, 400, "Request_UnsupportedQuery").await;
    let resp = list("displayName eq 'alice'".into()).await.unwrap();
    assert_graph_error(resp, 400, "Request_UnsupportedQuery").await;
}

#[tokio::test]
async fn missing_roles_answer_403() {
    let e = env().await;
    let token = e.access_token(NO_ROLES_TENANT).await;
    assert!(
        jwt_payload(&token).get("roles").is_none(),
        "Entra omits an empty roles claim"
    );
    let upn = "dave@noroles.onmicrosoft.com";
    let resp = e
        .graph(reqwest::Method::GET, &format!("users/{upn}"), &token)
        .send()
        .await
        .unwrap();
    let body = assert_graph_error(resp, 403, "Authorization_RequestDenied").await;
    assert_eq!(
        body["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
    assert_graph_error(
        e.patch_enabled(&token, upn, false).await,
        403,
        "Authorization_RequestDenied",
    )
    .await;
    let resp = e
        .graph(
            reqwest::Method::POST,
            &format!("users/{upn}/revokeSignInSessions"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 403, "Authorization_RequestDenied").await;
    let resp = e
        .graph(reqwest::Method::GET, "users", &token)
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 403, "Authorization_RequestDenied").await;
    assert!(e.fake.user(NO_ROLES_TENANT, upn).unwrap().account_enabled);

    // Read-only consent: reads work, writes do not.
    e.fake
        .set_consent(NO_ROLES_TENANT, true, roles(&["User.Read.All"]));
    let token = e.access_token(NO_ROLES_TENANT).await;
    assert_eq!(
        e.graph(reqwest::Method::GET, &format!("users/{upn}"), &token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_graph_error(
        e.patch_enabled(&token, upn, false).await,
        403,
        "Authorization_RequestDenied",
    )
    .await;

    // User.ReadWrite.All covers everything.
    e.fake
        .set_consent(NO_ROLES_TENANT, true, roles(&["User.ReadWrite.All"]));
    let token = e.access_token(NO_ROLES_TENANT).await;
    assert_eq!(e.patch_enabled(&token, upn, false).await.status(), 204);
    let resp = e
        .graph(
            reqwest::Method::POST,
            &format!("users/{upn}/revokeSignInSessions"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn privileged_users_need_privileged_authentication_administrator() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    let carol = "carol.admin@fabrikam.onmicrosoft.com";
    let body = assert_graph_error(
        e.patch_enabled(&token, carol, false).await,
        403,
        "Authorization_RequestDenied",
    )
    .await;
    assert_eq!(
        body["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
    assert!(e.fake.user(TENANT, carol).unwrap().account_enabled);

    e.fake.grant_directory_role(TENANT, PRIVILEGED_AUTH_ADMIN);
    assert_eq!(e.patch_enabled(&token, carol, false).await.status(), 204);
    assert!(!e.fake.user(TENANT, carol).unwrap().account_enabled);
}

#[tokio::test]
async fn unknown_user_404_shape_and_headers() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    let resp = e
        .graph(
            reqwest::Method::GET,
            "users/ghost@fabrikam.onmicrosoft.com",
            &token,
        )
        .header("client-request-id", "c0ffee00-0000-4000-8000-000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["client-request-id"],
        "c0ffee00-0000-4000-8000-000000000000"
    );
    let body = assert_graph_error(resp, 404, "Request_ResourceNotFound").await;
    assert_eq!(
        body["error"]["message"],
        "Resource 'ghost@fabrikam.onmicrosoft.com' does not exist or one of its queried reference-property objects are not present."
    );
    let id = Uuid::new_v4().to_string();
    assert_graph_error(
        e.patch_enabled(&token, &id, false).await,
        404,
        "Request_ResourceNotFound",
    )
    .await;
    let resp = e
        .graph(
            reqwest::Method::POST,
            &format!("users/{id}/revokeSignInSessions"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 404, "Request_ResourceNotFound").await;
}

#[tokio::test]
async fn patch_body_validation() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    let patch = |body: Value| {
        e.graph(reqwest::Method::PATCH, &format!("users/{ALICE}"), &token)
            .json(&body)
            .send()
    };
    for body in [
        json!({"accountEnabled": "false"}),
        json!({"accountEnabled": false, "displayName": "x"}),
        json!({"foo": 1}),
    ] {
        assert_graph_error(patch(body).await.unwrap(), 400, "Request_BadRequest").await;
    }
    let resp = e
        .graph(reqwest::Method::PATCH, &format!("users/{ALICE}"), &token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 400, "BadRequest").await;
    assert!(
        e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );
}

#[tokio::test]
async fn bad_tokens_answer_401_invalid_authentication_token() {
    let e = env().await;
    let url = format!("{}/v1.0/users/{ALICE}", e.base);
    let resp = e.http.get(&url).send().await.unwrap();
    assert!(resp.headers().contains_key("www-authenticate"));
    let body = assert_graph_error(resp, 401, "InvalidAuthenticationToken").await;
    assert_eq!(body["error"]["message"], "Access token is empty.");
    let resp = e
        .http
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_graph_error(resp, 401, "InvalidAuthenticationToken").await;

    // Expired: lifetime 0 gives a token that is stale at once.
    e.fake.set_token_lifetime(0);
    let stale = e.access_token(TENANT).await;
    let resp = e.http.get(&url).bearer_auth(&stale).send().await.unwrap();
    let body = assert_graph_error(resp, 401, "InvalidAuthenticationToken").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // A token from another fake (another "cloud") does not verify here.
    let other = env().await;
    let foreign = other.access_token(TENANT).await;
    let resp = e.http.get(&url).bearer_auth(&foreign).send().await.unwrap();
    assert_graph_error(resp, 401, "InvalidAuthenticationToken").await;
    // Unauthenticated calls are recorded without a tenant.
    assert!(
        e.fake
            .calls()
            .iter()
            .filter(|c| c.endpoint == Endpoint::GetUser)
            .all(|c| c.tenant.is_none())
    );
}

// ---------------------------------------------------------------------------------------------
// Faults, latency, counters

#[tokio::test]
async fn throttle_then_success_and_fifo_faults() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    e.fake.fail_next(
        Endpoint::PatchUser,
        1,
        Fault::Throttle {
            retry_after_secs: 7,
        },
    );
    e.fake.fail_next(Endpoint::PatchUser, 1, Fault::Status(503));

    let resp = e.patch_enabled(&token, &ALICE.to_string(), false).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let body = assert_graph_error(resp, 429, "TooManyRequests").await;
    assert_eq!(body["error"]["message"], "Too many requests");
    assert!(
        e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled,
        "faulted PATCH changed state"
    );

    let resp = e.patch_enabled(&token, &ALICE.to_string(), false).await;
    assert_graph_error(resp, 503, "serviceNotAvailable").await;
    assert!(
        e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );

    assert_eq!(
        e.patch_enabled(&token, &ALICE.to_string(), false)
            .await
            .status(),
        204
    );
    assert!(
        !e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );

    let statuses: Vec<u16> = e
        .fake
        .calls()
        .iter()
        .filter(|c| c.endpoint == Endpoint::PatchUser)
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [429, 503, 204]);

    // Other status faults, on Graph and on the token endpoint.
    e.fake.fail_next(Endpoint::GetUser, 1, Fault::Status(504));
    e.fake.fail_next(Endpoint::GetUser, 1, Fault::Status(500));
    let get = || {
        e.graph(reqwest::Method::GET, &format!("users/{ALICE}"), &token)
            .send()
    };
    assert_graph_error(get().await.unwrap(), 504, "gatewayTimeout").await;
    assert_graph_error(get().await.unwrap(), 500, "generalException").await;

    e.fake.fail_next(
        Endpoint::Token,
        1,
        Fault::Throttle {
            retry_after_secs: 3,
        },
    );
    let resp = e.secret_token(DOMAIN).await;
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_aad_error(resp, 429, "temporarily_unavailable", 90055).await;
    e.fake.fail_next(Endpoint::Token, 1, Fault::Status(503));
    assert_aad_error(
        e.secret_token(DOMAIN).await,
        503,
        "temporarily_unavailable",
        90033,
    )
    .await;
    assert_eq!(e.secret_token(DOMAIN).await.status(), 200);
}

#[tokio::test]
async fn fail_always_until_cleared() {
    let e = env().await;
    e.fake
        .fail_always(Endpoint::Token, Some(Fault::Status(500)));
    for _ in 0..3 {
        assert_aad_error(e.secret_token(DOMAIN).await, 500, "server_error", 50000).await;
    }
    e.fake.fail_always(Endpoint::Token, None);
    assert_eq!(e.secret_token(DOMAIN).await.status(), 200);
}

#[tokio::test]
async fn drop_connection_is_a_transport_error() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    e.fake
        .fail_next(Endpoint::PatchUser, 1, Fault::DropConnection);
    let err = e
        .graph(reqwest::Method::PATCH, &format!("users/{ALICE}"), &token)
        .json(&json!({"accountEnabled": false}))
        .send()
        .await
        .expect_err("a dropped connection must not produce a status");
    // hyper reports IncompleteMessage: the connection closed before any response.
    assert!(
        err.is_request() && err.status().is_none() && !err.is_timeout(),
        "{err:?}"
    );
    assert!(
        e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );
    let last = e.fake.calls().pop().unwrap();
    assert_eq!((last.endpoint, last.status), (Endpoint::PatchUser, 0));

    // The token endpoint can drop too, and the next call works.
    e.fake.fail_next(Endpoint::Token, 1, Fault::DropConnection);
    assert!(
        e.http
            .post(e.token_url(DOMAIN))
            .form(&[("a", "b")])
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        e.patch_enabled(&token, &ALICE.to_string(), false)
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn hang_until_released_then_proceeds_normally() {
    let e = env().await;
    let token = e.access_token(TENANT).await;
    e.fake.fail_next(Endpoint::PatchUser, 1, Fault::Hang);
    let req = e
        .graph(reqwest::Method::PATCH, &format!("users/{ALICE}"), &token)
        .json(&json!({"accountEnabled": false}))
        .send();
    let pending = tokio::spawn(req);
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.fake.hung_count() == 0 {
        assert!(Instant::now() < deadline, "request never hung");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    assert!(
        e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );
    assert_eq!(e.fake.calls().last().unwrap().status, 0);

    e.fake.release_hung();
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 204);
    assert!(
        !e.fake
            .user(TENANT, &ALICE.to_string())
            .unwrap()
            .account_enabled
    );
    assert_eq!(e.fake.hung_count(), 0);
    assert_eq!(e.fake.calls().last().unwrap().status, 204);
}

#[tokio::test]
async fn latency_applies_to_every_endpoint() {
    let e = env().await;
    e.fake.set_latency(Duration::from_millis(250));
    let started = Instant::now();
    let token = e.access_token(TENANT).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    e.graph(reqwest::Method::GET, &format!("users/{ALICE}"), &token)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    e.fake.set_latency(Duration::ZERO);
    let started = Instant::now();
    e.graph(reqwest::Method::GET, &format!("users/{ALICE}"), &token)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn calls_and_counters() {
    let e = env().await;
    e.secret_token(DOMAIN).await;
    let token = e.access_token(TENANT).await;
    e.access_token(NO_ROLES_TENANT).await;
    e.graph(reqwest::Method::GET, &format!("users/{ALICE}"), &token)
        .header("client-request-id", "abc")
        .send()
        .await
        .unwrap();
    e.patch_enabled(&token, "nobody@fabrikam.onmicrosoft.com", false)
        .await;

    assert_eq!(e.fake.count(Endpoint::Token), 3);
    assert_eq!(
        e.fake.count_for(Endpoint::Token, TENANT),
        2,
        "GUID and domain forms both count"
    );
    assert_eq!(e.fake.count_for(Endpoint::Token, NO_ROLES_TENANT), 1);
    assert_eq!(e.fake.count_for(Endpoint::GetUser, TENANT), 1);
    assert_eq!(e.fake.count(Endpoint::PatchUser), 1);
    assert_eq!(e.fake.count(Endpoint::RevokeSessions), 0);

    let calls = e.fake.calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0].tenant.as_deref(), Some(DOMAIN));
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, format!("/{DOMAIN}/oauth2/v2.0/token"));
    assert_eq!(calls[3].endpoint, Endpoint::GetUser);
    assert_eq!(
        calls[3].tenant.as_deref(),
        Some(TENANT.to_string().as_str())
    );
    assert_eq!(calls[3].client_request_id.as_deref(), Some("abc"));
    assert_eq!(calls[3].status, 200);
    assert_eq!(calls[4].status, 404);

    e.fake.reset_counts();
    assert_eq!(e.fake.count(Endpoint::Token), 0);
    assert!(e.fake.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Admin consent and discovery

#[tokio::test]
async fn admin_consent_accept_grants_default_roles() {
    let e = env().await;
    let tenant = UNCONSENTED_TENANT;
    let resp = e
        .http
        .get(format!(
            "{}/newcustomer.onmicrosoft.com/v2.0/adminconsent",
            e.base
        ))
        .query(&[
            ("client_id", CLIENT),
            ("scope", GRAPH_SCOPE),
            ("redirect_uri", "http://localhost:8080/onboard"),
            ("state", "st-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!(
            "http://localhost:8080/onboard?admin_consent=True&tenant={tenant}&state=st-1&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        )
        .as_str()
    );
    let claims = jwt_payload(&e.access_token(tenant).await);
    assert_eq!(claims["roles"], json!(DEFAULT_ROLES));
    assert_eq!(e.fake.count_for(Endpoint::AdminConsent, tenant), 1);
}

#[tokio::test]
async fn admin_consent_deny_and_errors() {
    let e = env().await;
    let tenant = UNCONSENTED_TENANT;
    e.fake.set_consent_outcome(tenant, ConsentOutcome::Deny);
    let consent = |query: Vec<(&'static str, &'static str)>| {
        e.http
            .get(format!("{}/{tenant}/v2.0/adminconsent", e.base))
            .query(&query)
            .send()
    };
    let resp = consent(vec![
        ("client_id", CLIENT),
        ("redirect_uri", "https://app.example/cb?x=1"),
        ("state", "s"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["x"], "1");
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_subcode"], "cancel");
    assert!(q["error_description"].starts_with("AADSTS65004"));
    assert_eq!(q["state"], "s");
    assert_eq!(q["admin_consent"], "True");
    assert_eq!(q["tenant"], tenant.to_string());
    assert_aad_error(
        e.secret_token(&tenant.to_string()).await,
        400,
        "invalid_client",
        7000229,
    )
    .await;

    // Accept with custom roles.
    e.fake.set_consent_outcome(
        tenant,
        ConsentOutcome::Accept {
            roles: roles(&["User.Read.All"]),
        },
    );
    let resp = consent(vec![
        ("client_id", CLIENT),
        ("redirect_uri", "https://app.example/cb"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        jwt_payload(&e.access_token(tenant).await)["roles"],
        json!(["User.Read.All"])
    );

    let resp = consent(vec![
        ("client_id", "unknown-app"),
        ("redirect_uri", "https://app.example/cb"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("AADSTS700016"));
    let resp = consent(vec![("client_id", CLIENT)]).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("redirect_uri"));
}

#[tokio::test]
async fn discovery_for_known_and_unknown_tenants() {
    let e = env().await;
    for segment in [DOMAIN.to_owned(), TENANT.to_string()] {
        let resp = e
            .http
            .get(format!(
                "{}/{segment}/v2.0/.well-known/openid-configuration",
                e.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["issuer"], format!("{}/{TENANT}/v2.0", e.base));
        assert_eq!(
            doc["token_endpoint"],
            format!("{}/{TENANT}/oauth2/v2.0/token", e.base)
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{}/{TENANT}/oauth2/v2.0/authorize", e.base)
        );
        let jwks = doc["jwks_uri"].as_str().unwrap();
        assert_eq!(e.http.get(jwks).send().await.unwrap().status(), 200);
    }
    let resp = e
        .http
        .get(format!(
            "{}/nowhere.onmicrosoft.com/v2.0/.well-known/openid-configuration",
            e.base
        ))
        .send()
        .await
        .unwrap();
    assert_aad_error(resp, 400, "invalid_tenant", 90002).await;
    assert_eq!(e.fake.count(Endpoint::Discovery), 5);
}

#[tokio::test]
async fn demo_seed_and_fake_users_endpoint() {
    let fake = FakeEntra::start().await;
    let seed = fake.seed_demo();
    assert_eq!(seed.client_id, "00000000-0000-0000-0000-00000000c1d1");
    assert_eq!(
        seed.tenant_id.to_string(),
        "11111111-1111-1111-1111-111111111111"
    );
    let bob = fake
        .user(seed.tenant_id, "bob@contoso.onmicrosoft.com")
        .unwrap();
    assert_eq!(
        bob.on_premises_security_identifier.as_deref(),
        Some(BOB_SID)
    );
    assert!(
        fake.user(seed.tenant_id, "carol.admin@contoso.onmicrosoft.com")
            .unwrap()
            .privileged
    );
    let body: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/_fake/users", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = body["tenants"][0]["users"].as_array().unwrap();
    assert_eq!(users.len(), 4);
    assert!(users.iter().all(|u| u["accountEnabled"] == true));
    assert_eq!(
        fake.count(Endpoint::GetUser),
        0,
        "/_fake is not an Entra endpoint"
    );
}
