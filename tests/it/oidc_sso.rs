//! Single sign-on against a real OpenID provider: `oidc-provider` from npm, started from
//! `tests/oidc/provider.mjs` (install it once with `npm ci --prefix tests/oidc`). The browser
//! side is driven with reqwest and a cookie jar, submitting the provider's development login
//! and consent forms the way a person would.

use crate::common;

use std::sync::Arc;

use futures::StreamExt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestApp;
use common::oidc::{self, CLIENT_ID, CLIENT_SECRET, Provider, SIGNING_KEY, SIGNING_KID, repo};
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::auth::{Role, Scope};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

/// Enrolled in killswitch; `stranger` and `unverified` exist only at the provider.
const NIGHT_SHIFT: &str = "night.shift@provider.example";

struct Rig {
    app: TestApp,
    provider: Provider,
}

/// killswitch with single sign-on against a fresh provider; `night.shift@…` is enrolled.
async fn rig() -> Rig {
    rig_with(&[]).await
}

/// [`rig`] with more settings.
async fn rig_with(overrides: &[(&str, &str)]) -> Rig {
    let (app, provider) = oidc::app_with_provider(overrides).await;
    app.auth
        .enroll(
            NIGHT_SHIFT,
            Some("Night Shift"),
            Role::Analyst,
            Scope::All,
            &Actor::operator(),
        )
        .await
        .unwrap();
    Rig { app, provider }
}

/// A browser: a cookie jar, following redirects.
fn browser() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    (client, jar)
}

/// The value of cookie `name` the jar would send to `url`.
fn cookie_value(jar: &Jar, url: &str, name: &str) -> Option<String> {
    let header = jar.cookies(&Url::parse(url).unwrap())?;
    header
        .to_str()
        .unwrap()
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// `action` of the page's form, resolved against the page's URL.
fn form_action(page: &Url, html: &str) -> Url {
    let start = html.find("action=\"").expect("a form") + "action=\"".len();
    let end = html[start..].find('"').unwrap() + start;
    page.join(&html[start..end].replace("&amp;", "&")).unwrap()
}

/// Answers the provider's development login and consent forms as `login` until the flow
/// leaves the provider; returns the last response.
async fn through_provider(
    client: &reqwest::Client,
    mut response: Response,
    login: &str,
) -> Response {
    for _ in 0..4 {
        let on_provider = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/html"))
            && !response.url().path().starts_with("/auth/callback")
            && response.url().path().starts_with("/interaction/");
        if !on_provider || response.status() != StatusCode::OK {
            return response;
        }
        let url = response.url().clone();
        let html = response.text().await.unwrap();
        let action = form_action(&url, &html);
        let form: Vec<(&str, &str)> = if html.contains(r#"name="prompt" value="login""#) {
            vec![("prompt", "login"), ("login", login), ("password", "any")]
        } else if html.contains(r#"name="prompt" value="consent""#) {
            vec![("prompt", "consent")]
        } else {
            panic!("an unexpected provider page at {url}: {html}");
        };
        response = client.post(action).form(&form).send().await.unwrap();
    }
    panic!("the provider kept asking");
}

/// Signs in at killswitch's /login/sso as the provider account `login`; the final response.
async fn sign_in(rig: &Rig, client: &reqwest::Client, login: &str) -> Response {
    let first = client.get(rig.app.url("/login/sso")).send().await.unwrap();
    assert!(
        first.url().as_str().starts_with(&rig.provider.issuer),
        "/login/sso leads to the provider, landed on {}",
        first.url()
    );
    through_provider(client, first, login).await
}

async fn problem_type(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

async fn system_events(rig: &Rig) -> Vec<AuditEvent> {
    common::events(&rig.app.store, "system").await
}

/// The provider's ID token for `login`, by running the authorization-code flow (with PKCE)
/// as killswitch would, but stopping before the browser reaches killswitch's callback.
async fn id_token_from_provider(rig: &Rig, login: &str) -> String {
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/auth/callback" {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    let issuer = &rig.provider.issuer;
    let metadata: Value = client
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(killswitch::secrets::random_bytes::<32>().unwrap());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect_uri = rig.app.url("/auth/callback");
    let authorize = Url::parse_with_params(
        metadata["authorization_endpoint"].as_str().unwrap(),
        [
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", "openid email profile"),
            ("redirect_uri", redirect_uri.as_str()),
            ("state", "test-state"),
            ("nonce", "test-nonce"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let first = client.get(authorize).send().await.unwrap();
    let back = through_provider(&client, first, login).await;
    assert!(back.status().is_redirection(), "status {}", back.status());
    let location = Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/auth/callback");
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let tokens: Value = client
        .post(metadata["token_endpoint"].as_str().unwrap())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token in {tokens}"))
        .to_owned()
}

async fn actions_with_bearer(rig: &Rig, token: &str) -> Response {
    rig.app
        .client
        .get(rig.app.url("/api/v1/actions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A JWT signed with the provider's own (published) key.
fn signed_by_provider_key(claims: &Value) -> String {
    let pem = std::fs::read_to_string(repo(SIGNING_KEY)).unwrap();
    let key = &pem[pem.find("-----BEGIN PRIVATE KEY-----").unwrap()..];
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(SIGNING_KID.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_enrolled_analyst_signs_in_uses_the_api_with_the_session_and_signs_out() {
    let rig = rig().await;
    let (client, jar) = browser();
    let landed = sign_in(&rig, &client, "night.shift").await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert_eq!(landed.url().as_str(), rig.app.url("/"));
    let page = landed.text().await.unwrap();
    assert!(
        page.contains("Signed in as <strong>Night Shift</strong>"),
        "{page}"
    );
    let session = cookie_value(&jar, &rig.app.base, "ks_session").expect("a session cookie");
    let start = page.find(r#"<meta name="csrf-token" content=""#).unwrap() + 33;
    let csrf = page[start..start + page[start..].find('"').unwrap()].to_owned();
    assert!(csrf.len() >= 43, "{csrf}");

    let listed = client
        .get(rig.app.url("/api/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    let refused = client.post(rig.app.url("/logout")).send().await.unwrap();
    assert_eq!(
        problem_type(refused).await,
        (StatusCode::FORBIDDEN, "/problems/csrf".to_owned())
    );
    let out = client
        .post(rig.app.url("/logout"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert!(
        out.text()
            .await
            .unwrap()
            .contains(r#"<a href="/login">Sign in</a>"#)
    );
    assert_eq!(cookie_value(&jar, &rig.app.base, "ks_session"), None);

    // The session is gone on the server too, not just from the jar.
    let replayed = rig
        .app
        .client
        .get(rig.app.url("/api/v1/actions"))
        .header("cookie", format!("ks_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem_type(replayed).await,
        (
            StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated".to_owned()
        )
    );
}

#[tokio::test]
async fn the_providers_id_token_works_as_a_bearer_token_unless_tampered_with_or_expired() {
    let rig = rig().await;
    let token = id_token_from_provider(&rig, "night.shift").await;
    assert_eq!(
        actions_with_bearer(&rig, &token).await.status(),
        StatusCode::OK
    );

    // One character in the middle of the signature changed.
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut chars: Vec<char> = signature.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{head}.{}", chars.into_iter().collect::<String>());
    assert_eq!(
        problem_type(actions_with_bearer(&rig, &tampered).await).await,
        (
            StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated".to_owned()
        )
    );

    // Signed by the provider's published key: accepted while valid, refused once expired
    // beyond the minute of leeway.
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64| {
        json!({
            "iss": rig.provider.issuer, "aud": CLIENT_ID, "sub": "a7c1e0d2-0001",
            "email": NIGHT_SHIFT, "email_verified": true, "iat": now - 600, "exp": exp,
        })
    };
    let valid = signed_by_provider_key(&claims(now + 300));
    assert_eq!(
        actions_with_bearer(&rig, &valid).await.status(),
        StatusCode::OK
    );
    let expired = signed_by_provider_key(&claims(now - 120));
    assert_eq!(
        problem_type(actions_with_bearer(&rig, &expired).await).await,
        (
            StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated".to_owned()
        )
    );
    let stranger = id_token_from_provider(&rig, "stranger").await;
    assert_eq!(
        actions_with_bearer(&rig, &stranger).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn someone_the_provider_knows_but_killswitch_does_not_is_refused_and_audited() {
    let rig = rig().await;
    let (client, jar) = browser();
    let landed = sign_in(&rig, &client, "stranger").await;
    assert_eq!(landed.status(), StatusCode::FORBIDDEN);
    assert!(
        landed
            .url()
            .as_str()
            .starts_with(&rig.app.url("/auth/callback"))
    );
    assert!(
        landed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        landed
            .text()
            .await
            .unwrap()
            .contains("stranger@provider.example")
    );
    assert_eq!(cookie_value(&jar, &rig.app.base, "ks_session"), None);
    let events = system_events(&rig).await;
    assert!(
        events.iter().any(|e| matches!(e,
            AuditEvent::AuthenticationFailed { analyst_id: None, reason, request: Some(_) }
                if reason == "single sign-on for an unknown or disabled analyst: stranger@provider.example")),
        "{events:?}"
    );

    // An e-mail the provider has not verified is not enough either.
    let (client, _) = browser();
    let landed = sign_in(&rig, &client, "unverified").await;
    assert_eq!(landed.status(), StatusCode::FORBIDDEN);
    assert!(system_events(&rig).await.iter().any(|e| matches!(e,
        AuditEvent::AuthenticationFailed { reason, .. } if reason.contains("not verified"))));
}

#[tokio::test]
async fn a_provider_error_and_a_replayed_or_foreign_callback_are_explained_not_obeyed() {
    let rig = rig().await;
    // The person cancels at the provider: it sends them back with error=access_denied.
    let (client, _) = browser();
    let login_page = client.get(rig.app.url("/login/sso")).send().await.unwrap();
    let abort = login_page
        .url()
        .join(&format!("{}/abort", login_page.url().path()))
        .unwrap();
    let back = client.get(abort).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FORBIDDEN);
    assert!(back.text().await.unwrap().contains("access_denied"));

    // A callback this browser did not start (no ks_login cookie), and one replayed.
    let (client, _) = browser();
    let foreign = client
        .get(rig.app.url("/auth/callback?code=abc&state=def"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);

    let jar = Arc::new(Jar::default());
    let stopping = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/auth/callback" {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    let first = stopping
        .get(rig.app.url("/login/sso"))
        .send()
        .await
        .unwrap();
    let back = through_provider(&stopping, first, "night.shift").await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    // The sign-in travels sealed in the binding cookie: not the state itself, not readable.
    let binding = cookie_value(&jar, &callback, "ks_login").expect("a binding cookie");
    let state = Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(!binding.contains(&state), "{binding}");
    let used = stopping.get(&callback).send().await.unwrap();
    assert_eq!((used.status(), used.url().path()), (StatusCode::OK, "/"));
    assert!(cookie_value(&jar, &rig.app.base, "ks_session").is_some());
    // The binding cookie is cleared on use; send it again by hand to reach the replay check.
    let replayed = rig
        .app
        .client
        .get(&callback)
        .header("cookie", format!("ks_login={binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
    assert!(
        replayed
            .text()
            .await
            .unwrap()
            .contains("expired or was already used")
    );
}

#[tokio::test]
async fn the_console_page_offers_sign_in() {
    let rig = rig().await;
    let response = rig.app.client.get(rig.app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<a href="/login">Sign in</a>"#), "{page}");
}

/// Enrolls `email` as an analyst, so only the identity rules can refuse them.
async fn enroll(rig: &Rig, email: &str) {
    rig.app
        .auth
        .enroll(email, None, Role::Analyst, Scope::All, &Actor::operator())
        .await
        .unwrap();
}

#[tokio::test]
async fn only_a_verified_email_names_an_analyst_never_a_missing_flag_or_the_subject() {
    let rig = rig().await;
    for email in [
        "no.flag@provider.example",
        "sub.only@provider.example",
        "unverified@provider.example",
    ] {
        enroll(&rig, email).await;
    }
    for (login, why) in [
        ("no-flag", "no `email_verified` claim"),
        ("unverified", "not verified"),
        ("sub-only", "no `email` claim"),
    ] {
        let (client, jar) = browser();
        let landed = sign_in(&rig, &client, login).await;
        assert_eq!(landed.status(), StatusCode::FORBIDDEN, "{login}");
        assert_eq!(
            cookie_value(&jar, &rig.app.base, "ks_session"),
            None,
            "{login}"
        );
        let events = system_events(&rig).await;
        assert!(
            events.iter().any(|e| matches!(e,
                AuditEvent::AuthenticationFailed { reason, .. } if reason.contains(why))),
            "{login}: {events:?}"
        );
        // The provider's own ID token for them is refused on the API too.
        let token = id_token_from_provider(&rig, login).await;
        assert_eq!(
            actions_with_bearer(&rig, &token).await.status(),
            StatusCode::UNAUTHORIZED,
            "{login}"
        );
    }
}

#[tokio::test]
async fn a_provider_without_email_verified_is_used_through_another_trusted_claim() {
    let rig = rig_with(&[("oidc.identity_claim", "preferred_username")]).await;
    enroll(&rig, "entra.style@provider.example").await;
    let (client, jar) = browser();
    let landed = sign_in(&rig, &client, "entra-style").await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert!(cookie_value(&jar, &rig.app.base, "ks_session").is_some());
    let token = id_token_from_provider(&rig, "entra-style").await;
    assert_eq!(
        actions_with_bearer(&rig, &token).await.status(),
        StatusCode::OK
    );
    // With that setting an e-mail is no identity at all.
    let night_shift = id_token_from_provider(&rig, "night.shift").await;
    assert_eq!(
        actions_with_bearer(&rig, &night_shift).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_for_several_audiences_counts_only_when_issued_to_killswitch() {
    let rig = rig().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |azp: Option<&str>| {
        let mut claims = json!({
            "iss": rig.provider.issuer, "aud": ["another-app", CLIENT_ID], "sub": "a7c1e0d2-0001",
            "email": NIGHT_SHIFT, "email_verified": true, "iat": now, "exp": now + 300,
        });
        if let Some(azp) = azp {
            claims["azp"] = json!(azp);
        }
        claims
    };
    for (azp, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("another-app"), StatusCode::UNAUTHORIZED),
        (Some(CLIENT_ID), StatusCode::OK),
    ] {
        let token = signed_by_provider_key(&claims(azp));
        assert_eq!(
            actions_with_bearer(&rig, &token).await.status(),
            expected,
            "azp {azp:?}"
        );
    }
}

#[tokio::test]
async fn ten_thousand_abandoned_sign_ins_do_not_keep_anyone_out() {
    let rig = rig().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut started = futures::stream::iter(0..10_000)
        .map(|_| no_redirects.get(rig.app.url("/login/sso")).send())
        .buffer_unordered(32);
    let mut redirected = 0;
    while let Some(response) = started.next().await {
        if response.unwrap().status() == StatusCode::SEE_OTHER {
            redirected += 1;
        }
    }
    assert_eq!(redirected, 10_000, "every anonymous sign-in was started");
    let (client, jar) = browser();
    let landed = sign_in(&rig, &client, "night.shift").await;
    assert_eq!(
        (landed.status(), landed.url().path()),
        (StatusCode::OK, "/")
    );
    assert!(cookie_value(&jar, &rig.app.base, "ks_session").is_some());
}

#[tokio::test]
async fn a_made_up_code_with_a_genuine_sign_in_is_refused_and_writes_no_history() {
    let rig = rig().await;
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = client.get(rig.app.url("/login/sso")).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let to_provider = Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = to_provider
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let callback = rig
        .app
        .url(&format!("/auth/callback?code=made-up&state={state}"));
    let binding = cookie_value(&jar, &callback, "ks_login").expect("a binding cookie");
    let before = system_events(&rig).await.len();
    for _ in 0..3 {
        let refused = rig
            .app
            .client
            .get(&callback)
            .header("cookie", format!("ks_login={binding}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    // Anyone can start a sign-in and make up a code: nobody was vouched for, nothing is recorded.
    assert_eq!(system_events(&rig).await.len(), before);
}
