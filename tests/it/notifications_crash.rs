//! A notice survives the process that owed it: `killswitch serve` is killed with SIGKILL after
//! an action committed (once before its notice was routed, once while the SMTP server and the
//! webhook were down), and after a restart every message arrives exactly once.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;
use common::entra::{self, CONTOSO};
use common::notify::{self, Receiver, SmtpSink};
use common::serve::{Server, enroll_lead, env_of};
use killswitch::customers::Policy;
use serde_json::{Value, json};

const ALICE: &str = "alice@contoso.onmicrosoft.com";

async fn notifications(client: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!("{base}/api/v1/notifications"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn notices_committed_before_a_sigkill_are_delivered_once_after_restart() {
    let fake = entra::fake_entra().await;
    let db = TestDb::new().await;
    let mut smtp = SmtpSink::start(0);
    smtp.stop();
    let hook = Receiver::start().await;
    hook.status.store(503, std::sync::atomic::Ordering::SeqCst);

    // The customer and a lead, written beside the server as an operator would.
    let services = killswitch::app::Services::open(&db.settings(&[]))
        .await
        .unwrap();
    let policy = Policy {
        contact: Some("security@contoso.example".to_owned()),
        ..Policy::default()
    };
    entra::add_customer(&services.store, "contoso", CONTOSO, policy).await;
    let lead = enroll_lead(&services, "jane@provider.example").await;
    let token = lead.token.clone();
    drop(services);

    let mut env = env_of(entra::settings(&fake.base_url()));
    for (key, value) in notify::settings(&smtp, &hook) {
        env.push((
            format!("KILLSWITCH_{}", key.to_uppercase().replace('.', "__")),
            value,
        ));
    }
    env.push((
        "KILLSWITCH_NOTIFY__SOC_EMAIL".to_owned(),
        notify::SOC_MAILBOX.to_owned(),
    ));
    let with_poll = |ms: &str| {
        let mut env = env.clone();
        env.retain(|(k, _)| k != "KILLSWITCH_NOTIFY__POLL_INTERVAL_MS");
        env.push((
            "KILLSWITCH_NOTIFY__POLL_INTERVAL_MS".to_owned(),
            ms.to_owned(),
        ));
        env
    };
    let client = reqwest::Client::new();
    let disable = |base: String, account: &'static str| {
        let code = lead.code();
        let request = client
            .post(format!(
                "{base}/api/v1/customers/contoso/accounts/{account}/disable"
            ))
            .bearer_auth(&token)
            .header("X-Killswitch-OTP", code)
            .json(&json!({"reason": "Falcon ITP: credential theft"}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    };

    // 1. Killed after the action committed and before its notice was routed: the worker looks
    // only once a minute, and has already looked at start.
    let server = Server::start(&db, &with_poll("60000"));
    disable(server.base.clone(), ALICE).await;
    assert!(
        notifications(&client, &server.base, &token)
            .await
            .is_empty(),
        "not yet routed"
    );
    server.kill();

    // 2. Restarted while the SMTP server and the webhook are down: routed, tried, failed;
    // killed again with every message pending.
    let server = Server::start(&db, &with_poll("20"));
    let start = Instant::now();
    let pending = loop {
        let all = notifications(&client, &server.base, &token).await;
        let tried = all.len() == 3
            && all
                .iter()
                .all(|n| !n["attempts"].as_array().unwrap().is_empty());
        if tried || start.elapsed() > Duration::from_secs(20) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        pending.len(),
        3,
        "customer e-mail, SOC e-mail, SOC webhook: {pending:#?}"
    );
    assert!(
        pending.iter().all(|n| n["state"] == "pending"),
        "{pending:#?}"
    );
    server.kill();
    assert!(smtp.messages().is_empty());

    // 3. Everything back: each message arrives, once.
    smtp.restart();
    hook.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let server = Server::start(&db, &with_poll("20"));
    let mail = smtp.wait_for(2, Duration::from_secs(30)).await;
    hook.wait_for(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(smtp.messages().len(), 2, "{mail:#?}");
    assert_eq!(hook.accepted().len(), 1, "one webhook delivered");
    let settled = notifications(&client, &server.base, &token).await;
    assert!(settled.iter().all(|n| n["state"] == "sent"), "{settled:#?}");
}
