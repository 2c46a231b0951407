//! Invariant 7: a whole session of use, logged at debug level, never shows a token, a secret or
//! a one-time code.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::entra::{self, CLIENT_SECRET, CONTOSO};
use killswitch::auth::Role;
use killswitch::customers::Policy;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `needle` occurs in `haystack` as a whole word (not inside a longer run of letters and
/// digits, such as a UUID or a hash that happens to contain the same six digits).
fn occurs(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        let joins = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        !joins(before) && !joins(after)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logged_at_debug_level_leaks_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let fake = entra::fake_entra().await;
    let app = entra::spawn_app(&fake, &[("log.level", "debug")]).await;
    entra::add_customer(&app.store, "contoso", CONTOSO, Policy::default()).await;
    let analyst = app
        .enroll("night@provider.example", Role::Analyst, "all")
        .await;
    let token = analyst.token.clone();
    let totp_secret = analyst
        .otpauth_uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let code = analyst.code();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 7) % 1_000_000);

    let act = |account: &'static str, otp: String| {
        app.client
            .post(app.url(&format!(
                "/api/v1/customers/contoso/accounts/{account}/disable"
            )))
            .bearer_auth(&token)
            .header("X-Killswitch-OTP", otp)
            .json(&json!({"reason": "log check"}))
            .send()
    };
    assert_eq!(
        act("alice@contoso.onmicrosoft.com", wrong.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        act("alice@contoso.onmicrosoft.com", code.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        act("bob@contoso.onmicrosoft.com", code.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    let bad = app
        .client
        .get(app.url("/api/v1/actions"))
        .bearer_auth("ks_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let listed = app
        .client
        .get(app.url("/api/v1/actions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let mfa_key = std::fs::read_to_string(app.db.dir.path().join("mfa-encryption.key")).unwrap();
    let signing_key = std::fs::read_to_string(app.db.dir.path().join("audit-signing.key")).unwrap();
    let signing_key_body = signing_key.lines().nth(1).unwrap().to_owned();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request"),
        "the capture saw the service's logs"
    );
    for (what, secret) in [
        ("API token", token.as_str()),
        ("API token body", &token[3..]),
        ("TOTP secret", totp_secret.as_str()),
        ("one-time code", code.as_str()),
        ("wrong one-time code", wrong.as_str()),
        ("app client secret", CLIENT_SECRET),
        ("encryption key", mfa_key.trim()),
        ("audit signing key", signing_key_body.as_str()),
    ] {
        assert!(!occurs(&logs, secret), "the logs contain the {what}");
    }
}
