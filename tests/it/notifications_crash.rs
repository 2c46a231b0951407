//! A notice survives the process that owed it: `killswitch serve` is killed with SIGKILL after
//! an action committed (once before its notice was routed, once while the SMTP server and the
//! webhook were down), and after a restart every message arrives exactly once.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDb;
use common::entra::{self, CONTOSO};
use common::notify::{self, Receiver, SmtpSink};
use killswitch::audit::Actor;
use killswitch::auth::{Role, Scope, mfa};
use killswitch::customers::Policy;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const ALICE: &str = "alice@contoso.onmicrosoft.com";

/// A `killswitch serve` process, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(db: &TestDb, env: &[(String, String)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_killswitch"))
            .arg("serve")
            .current_dir(db.dir.path())
            .env("KILLSWITCH_DATA_DIR", db.dir.path())
            .env("KILLSWITCH_DATABASE__URL", &db.url)
            .env("KILLSWITCH_SERVER__LISTEN", "127.0.0.1:0")
            .env("KILLSWITCH_LOG__FORMAT", "text")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let listen = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited: {seen}"
            );
            seen.push_str(&line);
            if let Some(at) = line.find("listen=") {
                break line[at + 7..].split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep reading, so a chatty log never blocks the server on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
        Server {
            child,
            base: format!("http://{listen}"),
        }
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let enrolled = services
        .auth
        .enroll(
            "jane@provider.example",
            None,
            Role::Lead,
            Scope::All,
            &Actor::operator(),
        )
        .await
        .unwrap();
    let record = services
        .store
        .analyst(enrolled.analyst.id)
        .await
        .unwrap()
        .unwrap();
    let totp = services
        .auth
        .totp_secret(&record)
        .unwrap()
        .expose_secret()
        .to_vec();
    let token = enrolled.token.expose_secret().to_owned();
    drop(services);

    let mut env: Vec<(String, String)> = entra::settings(&fake.base_url())
        .iter()
        .map(|(k, v)| {
            (
                format!("KILLSWITCH_{}", k.to_uppercase().replace('.', "__")),
                (*v).to_owned(),
            )
        })
        .collect();
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
        let code = mfa::code_at(&totp, chrono::Utc::now().timestamp() as u64).unwrap();
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
