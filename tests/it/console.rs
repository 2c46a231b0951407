//! The console in a browser's place: the sign-in page, its form for an API token and a
//! one-time code, and what a session started there may do.

use crate::common;

use common::entra::CONTOSO;
use common::{Analyst, TestApp};
use killswitch::audit::event::{Actor, AuditEvent, AuthMethod};
use killswitch::auth::Role;
use killswitch::customers::Policy;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};

/// A client that shows each answer as it is, redirects included.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` among an answer's Set-Cookie headers, with its attributes.
fn set_cookie(answer: &reqwest::Response, name: &str) -> Option<String> {
    answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1
}

/// The sign-in page's form token, and the cookie it is bound to.
async fn open_sign_in(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let page = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let bound = set_cookie(&page, "ks_form").expect("the form's cookie");
    let html = page.text().await.unwrap();
    let field = html
        .split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's token")
        .to_owned();
    (field, cookie_value(&bound).to_owned())
}

async fn submit(
    app: &TestApp,
    client: &reqwest::Client,
    form_cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(app.url("/login"))
        .header("cookie", format!("ks_form={form_cookie}"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn sign_in(app: &TestApp, who: &Analyst, code: &str) -> reqwest::Response {
    let client = browser();
    let (token, bound) = open_sign_in(app, &client).await;
    submit(
        app,
        &client,
        &bound,
        &[
            ("token", &who.token),
            ("code", code),
            ("csrf_token", &token),
        ],
    )
    .await
}

#[tokio::test]
async fn the_sign_in_page_asks_for_a_token_and_a_code_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    let client = browser();
    let page = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("style-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let bound = set_cookie(&page, "ks_form").unwrap();
    assert!(
        bound.contains("SameSite=Strict") && bound.contains("HttpOnly"),
        "{bound}"
    );
    let html = page.text().await.unwrap();
    for field in [
        r#"<label for="token">API token</label>"#,
        r#"name="token" type="password""#,
        r#"<label for="code">One-time code</label>"#,
        r#"autocomplete="one-time-code""#,
        &format!(r#"name="csrf_token" value="{}""#, cookie_value(&bound)),
    ] {
        assert!(html.contains(field), "{field} in {html}");
    }
    assert!(
        !html.contains("/login/sso"),
        "no single sign-on button without a provider"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let script = client
        .get(app.url("/assets/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.unwrap().contains("data-refresh-secs"));
    let sheet = client
        .get(app.url("/assets/console.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(sheet.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(
        sheet
            .text()
            .await
            .unwrap()
            .contains("prefers-color-scheme: dark")
    );
}

#[tokio::test]
async fn a_token_and_a_code_start_a_session_that_acts_as_the_analyst_signed_in_by_token() {
    let app = TestApp::spawn().await;
    common::entra::add_customer(&app.store, "contoso", CONTOSO, Policy::default()).await;
    let admin = app
        .enroll("admin@provider.example", Role::Admin, "all")
        .await;
    let signed_in = sign_in(&app, &admin, &admin.code()).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[LOCATION], "/");
    let session = set_cookie(&signed_in, "ks_session").expect("a session");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let cleared = set_cookie(&signed_in, "ks_form").expect("the form's cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let cookie = format!("ks_session={}", cookie_value(&session));
    let home = browser()
        .get(app.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("admin@provider.example"), "{home}");
    let csrf = home
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    // A change made with that session is recorded as made by token, the way it signed in.
    let changed = browser()
        .put(app.url("/api/v1/customers/contoso/policy"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("x-killswitch-otp", admin.next_code())
        .json(&serde_json::json!({
            "protected": [], "max_actions_per_hour": 30, "revoke_sessions": true,
            "auto_disable": "off", "contact": null,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "{:?}",
        changed.text().await
    );
    let events = common::entries(&app.store, "contoso").await;
    let by_session = events.iter().rev().find_map(|entry| match &entry.actor {
        Actor::Analyst { auth, .. } => Some(*auth),
        _ => None,
    });
    assert_eq!(by_session, Some(AuthMethod::ApiToken), "{events:?}");
}

#[tokio::test]
async fn wrong_reused_and_unknown_credentials_are_refused_on_the_page_and_counted() {
    let app = TestApp::spawn_with(&[("auth.max_failures_per_client", "4")]).await;
    let lead = app.enroll("lead@provider.example", Role::Lead, "all").await;
    let wrong = sign_in(&app, &lead, &lead.wrong_code()).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "ks_session").is_none());
    assert!(wrong.text().await.unwrap().contains("Wrong one-time code"));
    let code = lead.code();
    assert_eq!(
        sign_in(&app, &lead, &code).await.status(),
        StatusCode::SEE_OTHER
    );
    let reused = sign_in(&app, &lead, &code).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(reused.text().await.unwrap().contains("already used"));
    let events = common::events(&app.store, "system").await;
    let failures = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::AuthenticationFailed { analyst_id: Some(id), .. } if *id == lead.id))
        .count();
    assert_eq!(
        failures, 2,
        "the wrong and the reused code are recorded: {events:?}"
    );
    // A token nobody holds writes nothing, and failing again and again is slowed down.
    let stranger = Analyst {
        token: format!("ks_{}", "A".repeat(43)),
        ..lead
    };
    let before = common::entries(&app.store, "system").await.len();
    let mut last = None;
    for _ in 0..6 {
        last = Some(sign_in(&app, &stranger, "123456").await);
    }
    let last = last.unwrap();
    assert_eq!(last.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(last.headers().contains_key(RETRY_AFTER));
    assert_eq!(common::entries(&app.store, "system").await.len(), before);
}

#[tokio::test]
async fn a_form_without_its_cookie_is_refused_before_anything_is_checked() {
    let app = TestApp::spawn().await;
    let lead = app.enroll("lead@provider.example", Role::Lead, "all").await;
    let client = browser();
    let (token, _) = open_sign_in(&app, &client).await;
    let code = lead.code();
    let forged = submit(
        &app,
        &client,
        "another-browsers-cookie",
        &[
            ("token", &lead.token),
            ("code", &code),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "ks_session").is_none());
    // The code was not spent: the genuine form still signs in with it.
    assert_eq!(
        sign_in(&app, &lead, &code).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// A browser signed in as `who` (token and code); its session cookie.
async fn session_of(app: &TestApp, who: &Analyst) -> String {
    let signed_in = sign_in(app, who, &code_now(app, who)).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&signed_in, "ks_session").unwrap();
    format!("ks_session={}", cookie_value(&session))
}

async fn home(app: &TestApp, cookie: &str) -> String {
    browser()
        .get(app.url("/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn home_shows_each_customer_in_scope_with_its_light_what_waits_and_the_last_actions() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let now = killswitch::time::Timestamp::now();
    let contoso = "contoso".parse().unwrap();
    let fabrikam = "fabrikam".parse().unwrap();
    app.store
        .record_connection_check(&contoso, true, "ready", now)
        .await
        .unwrap();
    let reason = "admin consent not granted <for> the remediation app";
    app.store
        .record_connection_check(&fabrikam, false, reason, now)
        .await
        .unwrap();
    let lead = app.enroll("lead@provider.example", Role::Lead, "all").await;
    let cookie = session_of(app, &lead).await;
    let disabled = browser()
        .post(app.url("/api/v1/customers/contoso/accounts/alice@contoso.onmicrosoft.com/disable"))
        .bearer_auth(&lead.token)
        .header("x-killswitch-otp", lead.next_code())
        .json(&serde_json::json!({"reason": "phished at 03:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    let secret = app
        .onboarding
        .issue_webhook_secret(
            &rig.contoso,
            killswitch::customers::onboarding::SecretIssue::First,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let delivered = browser()
        .post(app.url("/api/v1/webhooks/falcon/contoso"))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&secret.secret))
        .json(&serde_json::json!({
            "composite_id": "home:1", "severity": "critical",
            "source_account_upn": "bob@contoso.onmicrosoft.com",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    let html = home(app, &cookie).await;
    assert!(html.contains("1 pending detection<"), "{html}");
    assert!(
        html.contains("critical") && html.contains("bob@contoso.onmicrosoft.com"),
        "{html}"
    );
    assert!(
        html.contains(r#"class="light ready""#) && html.contains("contoso Ltd"),
        "{html}"
    );
    assert!(html.contains(r#"class="light not-ready""#), "{html}");
    assert!(
        html.contains("Not ready: admin consent not granted &#60;for&#62; the remediation app")
            || html
                .contains("Not ready: admin consent not granted &lt;for&gt; the remediation app"),
        "the reason, escaped: {html}"
    );
    assert!(
        html.contains("alice@contoso.onmicrosoft.com") && html.contains("succeeded"),
        "{html}"
    );
    // An analyst of one customer sees that customer only.
    let scoped = app
        .enroll("scoped@provider.example", Role::Analyst, "contoso")
        .await;
    let theirs = home(app, &session_of(app, &scoped).await).await;
    assert!(theirs.contains("contoso Ltd"), "{theirs}");
    assert!(!theirs.contains("fabrikam"), "{theirs}");
}

/// The page's form token for the forms it shows.
fn form_token(html: &str) -> String {
    html.split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token")
        .to_owned()
}

async fn get_page(app: &TestApp, cookie: &str, path: &str) -> reqwest::Response {
    browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn post_form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(app.url(path))
        .header("cookie", cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_analyst_finds_an_account_and_disables_it_from_its_page_with_a_code() {
    let protected = Policy {
        protected: vec!["breakglass@contoso.onmicrosoft.com".parse().unwrap()],
        ..Policy::default()
    };
    let rig = common::entra::two_tenants(&[], protected).await;
    let app = &rig.app;
    let lead = app
        .enroll("lead@provider.example", Role::Lead, "contoso")
        .await;
    let cookie = session_of(app, &lead).await;
    let alice = "/customers/contoso/accounts/alice@contoso.onmicrosoft.com";
    let page = get_page(app, &cookie, alice).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Enabled: it can sign in"), "{html}");
    assert!(html.contains(r#"autocomplete="one-time-code""#), "{html}");
    let csrf = form_token(&html);
    // The code used to sign in is spent: the disable takes the next one.
    let code = lead.next_code();
    let fields = [
        ("reason", "phished at 03:00"),
        ("ticket", "SOC-1"),
        ("revoke_sessions", "on"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let done = post_form(app, &cookie, &format!("{alice}/disable"), &fields).await;
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        done.text().await
    );
    let result = done.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(result.starts_with("/actions/"), "{result}");
    let outcome = get_page(app, &cookie, &result).await.text().await.unwrap();
    assert!(outcome.contains("Done: disabled"), "{outcome}");
    assert!(
        outcome.contains("SOC-1") && outcome.contains("phished at 03:00"),
        "{outcome}"
    );
    let entra = rig
        .fake
        .user(CONTOSO, "alice@contoso.onmicrosoft.com")
        .unwrap();
    assert!(!entra.account_enabled, "the fake Entra agrees");
    // The same code again is refused on the page, and nothing more is sent.
    let again = post_form(app, &cookie, &format!("{alice}/enable"), &fields).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.text().await.unwrap().contains("already used"));
    assert!(
        !rig.fake
            .user(CONTOSO, "alice@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
    // A protected account: recorded as refused, nothing sent.
    let breakglass = "/customers/contoso/accounts/breakglass@contoso.onmicrosoft.com";
    let second = app
        .enroll("lead2@provider.example", Role::Lead, "contoso")
        .await;
    let second_cookie = session_of(app, &second).await;
    let second_csrf = form_token(
        &get_page(app, &second_cookie, breakglass)
            .await
            .text()
            .await
            .unwrap(),
    );
    let code = second.next_code();
    let fields = [
        ("reason", "test"),
        ("code", code.as_str()),
        ("csrf_token", second_csrf.as_str()),
    ];
    let refused = post_form(
        app,
        &second_cookie,
        &format!("{breakglass}/disable"),
        &fields,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    let path = refused.headers()[LOCATION].to_str().unwrap().to_owned();
    let words = get_page(app, &second_cookie, &path)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        words.contains("Refused: not disabled") && words.contains("protected"),
        "{words}"
    );
    assert!(
        rig.fake
            .user(CONTOSO, "breakglass@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
}

#[tokio::test]
async fn another_customers_pages_are_not_found_and_a_form_without_its_token_changes_nothing() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let lead = app
        .enroll("lead@provider.example", Role::Lead, "contoso")
        .await;
    let cookie = session_of(app, &lead).await;
    let bob = "/customers/fabrikam/accounts/bob@fabrikam.onmicrosoft.com";
    let unknown = "/customers/nosuch/accounts/bob@fabrikam.onmicrosoft.com";
    for path in [bob, unknown] {
        assert_eq!(
            get_page(app, &cookie, path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let mine = get_page(
        app,
        &cookie,
        "/customers/contoso/accounts/alice@contoso.onmicrosoft.com",
    )
    .await;
    let csrf = form_token(&mine.text().await.unwrap());
    let code = lead.next_code();
    let theirs = post_form(
        app,
        &cookie,
        &format!("{bob}/disable"),
        &[
            ("reason", "x"),
            ("code", code.as_str()),
            ("csrf_token", csrf.as_str()),
        ],
    )
    .await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    assert!(
        rig.fake
            .user(common::entra::FABRIKAM, "bob@fabrikam.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
    let forged = post_form(
        app,
        &cookie,
        "/customers/contoso/accounts/alice@contoso.onmicrosoft.com/disable",
        &[
            ("reason", "x"),
            ("code", code.as_str()),
            ("csrf_token", "not-the-token"),
        ],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        rig.fake
            .user(CONTOSO, "alice@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
    // Signed out, a page sends the browser to sign in.
    let anonymous = browser().get(app.url(bob)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/login");
}

/// A code of a time step nobody has used yet: the services' clock moves on one step first.
fn fresh_code(app: &TestApp, who: &Analyst) -> String {
    app.clock.advance(std::time::Duration::from_secs(
        killswitch::auth::mfa::STEP_SECS,
    ));
    code_now(app, who)
}

/// The code of the services' clock's time step (which tests move on instead of waiting).
fn code_now(app: &TestApp, who: &Analyst) -> String {
    use killswitch::time::Clock;
    let at = app.clock.now().as_datetime().timestamp() as u64;
    killswitch::auth::mfa::code_at(&who.totp, at).unwrap()
}

/// Two detections for contoso that wait for an analyst; their ids.
async fn pending_detections(rig: &common::entra::TwoTenants) -> Vec<String> {
    let app = &rig.app;
    let secret = app
        .onboarding
        .issue_webhook_secret(
            &rig.contoso,
            killswitch::customers::onboarding::SecretIssue::First,
            &Actor::operator(),
        )
        .await
        .unwrap();
    for (id, upn) in [
        ("queue:1", "alice@contoso.onmicrosoft.com"),
        ("queue:2", "bob@contoso.onmicrosoft.com"),
    ] {
        let delivered = browser()
            .post(app.url("/api/v1/webhooks/falcon/contoso"))
            .bearer_auth(secrecy::ExposeSecret::expose_secret(&secret.secret))
            .json(&serde_json::json!({
                "composite_id": id, "severity": "high", "source_account_upn": upn,
                "tactic": "Credential Access", "technique": "Pass the Ticket",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    }
    let filter = killswitch::domain::detection::DetectionFilter {
        customers: None,
        state: None,
        limit: 10,
        before: None,
    };
    let mut found = app.store.detections(&filter).await.unwrap();
    found.sort_by(|a, b| a.composite_id.cmp(&b.composite_id));
    found.iter().map(|d| d.id.to_string()).collect()
}

#[tokio::test]
async fn the_queue_shows_what_waits_and_a_detection_is_approved_or_dismissed_with_a_code() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let ids = pending_detections(&rig).await;
    let analyst = app
        .enroll("night@provider.example", Role::Analyst, "contoso")
        .await;
    let cookie = session_of(app, &analyst).await;
    let queue = get_page(app, &cookie, "/detections").await;
    assert_eq!(queue.status(), StatusCode::OK);
    let html = queue.text().await.unwrap();
    for id in &ids {
        assert!(html.contains(&format!("/detections/{id}")), "{html}");
    }
    let first = format!("/detections/{}", ids[0]);
    let page = get_page(app, &cookie, &first).await.text().await.unwrap();
    assert!(
        page.contains("Waiting for an analyst") && page.contains("Pass the Ticket"),
        "{page}"
    );
    let csrf = form_token(&page);
    // A dismissal needs its reason: refused on the page, nothing decided.
    let code = fresh_code(app, &analyst);
    let bare = [("code", code.as_str()), ("csrf_token", csrf.as_str())];
    let refused = post_form(app, &cookie, &format!("{first}/dismiss"), &bare).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("reason"));
    let code = fresh_code(app, &analyst);
    let approve = [("code", code.as_str()), ("csrf_token", csrf.as_str())];
    let approved = post_form(app, &cookie, &format!("{first}/approve"), &approve).await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    let outcome = approved.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        outcome.starts_with("/actions/"),
        "lands on its action: {outcome}"
    );
    let words = get_page(app, &cookie, &outcome).await.text().await.unwrap();
    assert!(words.contains("Done: disabled"), "{words}");
    let page = get_page(app, &cookie, &first).await.text().await.unwrap();
    assert!(page.contains("Approved"), "{page}");
    assert!(
        !rig.fake
            .user(CONTOSO, "alice@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled,
        "approving disabled alice"
    );
    // The same code again is refused on the detection's page.
    let second = format!("/detections/{}", ids[1]);
    let dismiss = [
        ("reason", "a known test account"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let reused = post_form(app, &cookie, &format!("{second}/dismiss"), &dismiss).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(reused.text().await.unwrap().contains("already used"));
    let code = fresh_code(app, &analyst);
    let dismiss = [
        ("reason", "a known test account"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let dismissed = post_form(app, &cookie, &format!("{second}/dismiss"), &dismiss).await;
    assert_eq!(dismissed.status(), StatusCode::SEE_OTHER);
    let page = get_page(app, &cookie, &second).await.text().await.unwrap();
    assert!(
        page.contains("Dismissed") && page.contains("a known test account"),
        "{page}"
    );
    assert!(
        rig.fake
            .user(CONTOSO, "bob@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled,
        "dismissing sent nothing"
    );
    // Another customer's analyst finds neither the detection nor the queue's rows.
    let other = app
        .enroll("other@provider.example", Role::Analyst, "fabrikam")
        .await;
    let theirs = session_of(app, &other).await;
    assert_eq!(
        get_page(app, &theirs, &first).await.status(),
        StatusCode::NOT_FOUND
    );
    let html = get_page(app, &theirs, "/detections")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains(&ids[0]), "{html}");
}

#[tokio::test]
async fn the_customer_page_finds_an_account_and_changes_the_policy_with_a_code() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let lead = app
        .enroll("lead@provider.example", Role::Lead, "contoso")
        .await;
    let cookie = session_of(app, &lead).await;
    let page = get_page(app, &cookie, "/customers/contoso").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"action="/customers/contoso/accounts""#),
        "{html}"
    );
    let found = get_page(
        app,
        &cookie,
        "/customers/contoso/accounts?account=alice%40contoso.onmicrosoft.com",
    )
    .await;
    assert_eq!(found.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        found.headers()[LOCATION],
        "/customers/contoso/accounts/alice%40contoso.onmicrosoft.com"
    );
    let empty = get_page(app, &cookie, "/customers/contoso/accounts?account=").await;
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        get_page(app, &cookie, "/customers/fabrikam").await.status(),
        StatusCode::NOT_FOUND
    );
    let csrf = form_token(&html);
    let version = html
        .split(r#"name="policy_version" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let code = fresh_code(app, &lead);
    let policy = [
        ("policy_version", version.as_str()),
        (
            "protected",
            "breakglass@contoso.onmicrosoft.com\r\n\r\nsvc-backup@contoso.onmicrosoft.com",
        ),
        ("max_actions_per_hour", "30"),
        ("auto_disable", "critical"),
        ("contact", "soc@contoso.example"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let saved = post_form(app, &cookie, "/customers/contoso/policy", &policy).await;
    assert_eq!(
        saved.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        saved.text().await
    );
    let stored = app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .policy;
    assert_eq!(stored.protected.len(), 2);
    assert_eq!(stored.max_actions_per_hour, 30);
    assert!(!stored.revoke_sessions, "an unticked box turns it off");
    assert_eq!(stored.contact.as_deref(), Some("soc@contoso.example"));
    // A page opened before that change cannot undo it: refused, and the code not spent.
    let code = fresh_code(app, &lead);
    let stale = [
        ("policy_version", version.as_str()),
        ("max_actions_per_hour", "5"),
        ("auto_disable", "off"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let refused = post_form(app, &cookie, "/customers/contoso/policy", &stale).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("changed since this page was opened"),
        "{html}"
    );
    let version = html
        .split(r#"name="policy_version" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    // A limit that is not a number is refused on the page, and nothing changes; the code
    // the stale page did not spend still works.
    let bad = [
        ("policy_version", version.as_str()),
        ("max_actions_per_hour", "lots"),
        ("auto_disable", "off"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let refused = post_form(app, &cookie, "/customers/contoso/policy", &bad).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("lots"));
    let again = app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.policy.max_actions_per_hour, 30);
    let good = [
        ("policy_version", version.as_str()),
        ("max_actions_per_hour", "40"),
        ("auto_disable", "off"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let saved = post_form(app, &cookie, "/customers/contoso/policy", &good).await;
    assert_eq!(
        saved.status(),
        StatusCode::SEE_OTHER,
        "the unspent code still works"
    );
}

#[tokio::test]
async fn an_auditor_downloads_an_export_and_others_may_not() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let auditor = app
        .enroll("auditor@provider.example", Role::Auditor, "contoso")
        .await;
    let cookie = session_of(app, &auditor).await;
    let page = get_page(app, &cookie, "/audit").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("BEGIN PUBLIC KEY") && html.contains("audit verify"),
        "{html}"
    );
    assert!(
        !html.contains(r#"value="fabrikam""#),
        "only its customers: {html}"
    );
    let csrf = form_token(&html);
    let fields = [
        ("customer", "contoso"),
        ("format", "jsonl"),
        ("from", ""),
        ("to", ""),
        ("csrf_token", csrf.as_str()),
    ];
    let file = post_form(app, &cookie, "/audit/export", &fields).await;
    assert_eq!(file.status(), StatusCode::OK);
    let disposition = file.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let body = file.text().await.unwrap();
    let header: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(header["chain"], "contoso", "{header}");
    let theirs = [("customer", "fabrikam"), ("csrf_token", csrf.as_str())];
    let refused = post_form(app, &cookie, "/audit/export", &theirs).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let analyst = app
        .enroll("night@provider.example", Role::Analyst, "contoso")
        .await;
    let theirs = session_of(app, &analyst).await;
    assert_eq!(
        get_page(app, &theirs, "/audit").await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_admin_enrolls_an_analyst_whose_credentials_are_shown_once_and_can_rotate_them() {
    let rig = common::entra::two_tenants(&[], Policy::default()).await;
    let app = &rig.app;
    let admin = app
        .enroll("admin@provider.example", Role::Admin, "all")
        .await;
    let cookie = session_of(app, &admin).await;
    let page = get_page(app, &cookie, "/admin").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("contoso") && html.contains("admin@provider.example"),
        "{html}"
    );
    let csrf = form_token(&html);
    let code = fresh_code(app, &admin);
    let enroll = [
        ("email", "new@provider.example"),
        ("name", "New <Analyst>"),
        ("role", "analyst"),
        ("customers", "contoso"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let shown = post_form(app, &cookie, "/admin/analysts", &enroll).await;
    assert_eq!(shown.status(), StatusCode::OK);
    assert_eq!(shown.headers()["cache-control"], "no-store");
    let html = shown.text().await.unwrap();
    assert!(
        html.contains("<svg") && html.contains("otpauth://totp/"),
        "{html}"
    );
    let token = html
        .split(r#"id="new-token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let me = browser()
        .get(app.url("/api/v1/customers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "the shown token works");
    let record = app
        .auth
        .by_email("new@provider.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.display_name, "New <Analyst>");
    // Rotating the token ends the old one.
    let code = fresh_code(app, &admin);
    let rotate = [
        ("change", "rotate-token"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let rotated = post_form(
        app,
        &cookie,
        &format!("/admin/analysts/{}", record.id),
        &rotate,
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let old = browser()
        .get(app.url("/api/v1/customers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    // An admin of one customer may not manage analysts; a wrong code changes nothing.
    let narrow = app
        .enroll("narrow@provider.example", Role::Admin, "contoso")
        .await;
    let narrow_cookie = session_of(app, &narrow).await;
    assert_eq!(
        get_page(app, &narrow_cookie, "/admin").await.status(),
        StatusCode::FORBIDDEN
    );
    let disable = [
        ("change", "disable"),
        ("code", "000000"),
        ("csrf_token", csrf.as_str()),
    ];
    let wrong = post_form(
        app,
        &cookie,
        &format!("/admin/analysts/{}", record.id),
        &disable,
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let still = app
        .auth
        .by_email("new@provider.example")
        .await
        .unwrap()
        .unwrap();
    assert!(still.is_active());
    // A rotation ends the sessions the old token opened.
    let victim = app
        .enroll("victim@provider.example", Role::Analyst, "contoso")
        .await;
    let theirs = session_of(app, &victim).await;
    assert!(home(app, &theirs).await.contains("Sign out"));
    let code = fresh_code(app, &admin);
    let rotate = [
        ("change", "rotate-token"),
        ("code", code.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let path = format!("/admin/analysts/{}", victim.id);
    assert_eq!(
        post_form(app, &cookie, &path, &rotate).await.status(),
        StatusCode::OK
    );
    assert!(home(app, &theirs).await.contains("You are not signed in"));
}

#[tokio::test]
async fn an_address_nothing_answers_is_a_page_for_a_browser_and_a_problem_for_the_api() {
    let app = TestApp::spawn().await;
    let page = browser()
        .get(app.url("/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    // A form sent after its session ended says so, and nothing is done.
    let late = browser()
        .post(app.url("/detections/00000000-0000-0000-0000-000000000001/approve"))
        .header("cookie", "ks_session=ended")
        .form(&[("code", "123456"), ("csrf_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    assert!(
        late.text()
            .await
            .unwrap()
            .contains("Your session has ended")
    );
    let api = browser()
        .get(app.url("/api/v1/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.headers()[CONTENT_TYPE], "application/problem+json");
}
