//! Notifications against a real SMTP server and a webhook receiver: what a disable tells the
//! customer and the SOC, exactly once each; delivery that outlasts an SMTP outage; and the
//! record of every attempt.

use crate::common;

use std::time::Duration;

use common::entra::{self, CONTOSO};
use common::notify::{self, Receiver, SmtpSink};
use common::{Analyst, TestApp};
use killswitch::audit::event::AuditEvent;
use killswitch::auth::Role;
use killswitch::customers::Policy;
use serde_json::{Value, json};

const ALICE: &str = "alice@contoso.onmicrosoft.com";
const CONTACTS: &str = "security@contoso.example, ciso@contoso.example";
/// Long enough for a round trip through the worker, short enough to keep the suite quick.
const ARRIVES_WITHIN: Duration = Duration::from_secs(15);

struct Rig {
    app: TestApp,
    smtp: SmtpSink,
    hook: Receiver,
    lead: Analyst,
}

async fn rig(extra: &[(&str, &str)]) -> Rig {
    let smtp = SmtpSink::start(0);
    let hook = Receiver::start().await;
    let mut settings = notify::settings(&smtp, &hook);
    settings.push(("notify.soc_email", notify::SOC_MAILBOX.to_owned()));
    settings.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let policy = Policy {
        contact: Some(CONTACTS.to_owned()),
        ..Policy::default()
    };
    let base = entra::two_tenants(&overrides, policy).await;
    let lead = base
        .app
        .enroll("jane@provider.example", Role::Lead, "all")
        .await;
    Rig {
        app: base.app,
        smtp,
        hook,
        lead,
    }
}

impl Rig {
    /// A one-time code of a time step not yet used: the service's clock moves on one step.
    fn fresh_code(&self) -> String {
        use killswitch::time::Clock;
        self.app.clock.advance(Duration::from_secs(30));
        let now = self.app.clock.now().as_datetime().timestamp() as u64;
        killswitch::auth::mfa::code_at(&self.lead.totp, now).unwrap()
    }

    async fn disable(&self, account: &str) -> Value {
        let response = self
            .app
            .client
            .post(self.app.url(&format!(
                "/api/v1/customers/contoso/accounts/{account}/disable"
            )))
            .bearer_auth(&self.lead.token)
            .header("X-Killswitch-OTP", self.fresh_code())
            .json(&json!({"reason": "Falcon ITP: credential theft <b>", "ticket": "SOC-7"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn notifications(&self) -> Vec<Value> {
        let body: Value = self
            .app
            .client
            .get(self.app.url("/api/v1/notifications"))
            .bearer_auth(&self.lead.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["notifications"].as_array().unwrap().clone()
    }

    /// Waits until there are `count` messages and none is pending (each sent or given up).
    async fn settled(&self, count: usize) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let all = self.notifications().await;
            let done = all.len() >= count && all.iter().all(|n| n["state"] != "pending");
            if done || start.elapsed() > ARRIVES_WITHIN {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn email_to<'m>(messages: &'m [Value], address: &str) -> Vec<&'m Value> {
    messages
        .iter()
        .filter(|m| m["to"].as_array().unwrap().iter().any(|t| t == address))
        .collect()
}

/// The message's text as a mail reader shows it (quoted-printable soft breaks undone).
fn readable(message: &Value) -> String {
    message["data"]
        .as_str()
        .unwrap()
        .replace("=\r\n", "")
        .replace("=3D", "=")
}

#[tokio::test]
async fn a_disable_sends_one_customer_email_and_one_soc_message_with_what_happened() {
    let rig = rig(&[]).await;
    let action = rig.disable(ALICE).await;
    assert_eq!(action["state"], "succeeded");
    let settled = rig.settled(3).await;
    // Let a second delivery, if there were one, arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mail = rig.smtp.messages();
    let hooks = rig.hook.requests();

    let customer = email_to(&mail, "security@contoso.example");
    assert_eq!(customer.len(), 1, "one customer e-mail: {mail:#?}");
    assert_eq!(
        customer[0]["to"],
        json!(["security@contoso.example", "ciso@contoso.example"])
    );
    assert_eq!(
        customer[0]["user"],
        notify::SMTP_USER,
        "sent with authentication"
    );
    let soc = email_to(&mail, notify::SOC_MAILBOX);
    assert_eq!(soc.len(), 1, "one SOC e-mail");
    assert_eq!(mail.len(), 2);
    assert_eq!(hooks.len(), 1, "one SOC webhook");

    let text = readable(customer[0]);
    for fact in [
        "DISABLED",
        ALICE,
        "jane@provider.example",
        "Falcon ITP: credential theft",
        "SOC-7",
        "one-time code",
        "Witness of your audit log",
        "\"type\":\"witness\"",
        "killswitch audit verify",
    ] {
        assert!(
            text.contains(fact),
            "the customer e-mail lacks `{fact}`:\n{text}"
        );
    }
    let graph_request_id = action["graph"]["request_id"].as_str().unwrap();
    assert!(text.contains(graph_request_id), "Graph's request-id");
    let codes: Vec<String> = (-2..=1)
        .map(|step: i64| {
            use killswitch::time::Clock;
            let at = rig.app.clock.now().as_datetime().timestamp() + step * 30;
            killswitch::auth::mfa::code_at(&rig.lead.totp, at as u64).unwrap()
        })
        .collect();
    for code in &codes {
        assert!(!text.contains(&format!(" {code}")), "never the code");
    }
    assert!(!text.contains(&rig.lead.token), "never the token");
    assert!(
        text.contains("&lt;b&gt;"),
        "HTML escapes what the analyst typed"
    );
    assert!(
        !readable(soc[0]).contains("Witness of your audit log"),
        "the witness is the customer's"
    );

    let hook = &hooks[0];
    let (id, timestamp) = (hook.header("webhook-id"), hook.header("webhook-timestamp"));
    let key = killswitch::falcon::signature::standard_key(notify::WEBHOOK_SECRET).unwrap();
    let expected = killswitch::falcon::signature::sign_standard(&key, &id, &timestamp, &hook.body);
    assert_eq!(hook.header("webhook-signature"), expected);
    let body = hook.json();
    assert_eq!(body["type"], "killswitch.action_outcome");
    assert_eq!(body["data"]["outcome"], "succeeded");
    assert_eq!(body["data"]["account"], ALICE);
    assert_eq!(body["data"]["mfa_verified"], true);

    assert_eq!(settled.len(), 3, "{settled:#?}");
    for n in &settled {
        assert_eq!(n["state"], "sent", "{n:#?}");
        assert_eq!(n["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(n["attempts"][0]["ok"], true);
    }
    let events = common::events(&rig.app.store, "contoso").await;
    let sent: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::NotificationSent { .. }))
        .collect();
    assert_eq!(sent.len(), 1, "the customer's notice is in its log");
    let AuditEvent::NotificationSent {
        channel,
        destination,
        ..
    } = sent[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (channel.as_str(), destination.as_str()),
        ("email", CONTACTS)
    );
}

#[tokio::test]
async fn mail_waits_out_an_smtp_outage_and_arrives_once() {
    let mut rig = rig(&[]).await;
    rig.smtp.stop();
    rig.disable(ALICE).await;
    // Two minutes of outage, in the service's time: each attempt fails and backs off.
    for _ in 0..12 {
        rig.app.clock.advance(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let during = rig.notifications().await;
    let emails: Vec<&Value> = during.iter().filter(|n| n["channel"] == "email").collect();
    assert_eq!(emails.len(), 2);
    for n in &emails {
        assert_eq!(n["state"], "pending", "{n:#?}");
        let attempts = n["attempts"].as_array().unwrap();
        assert!(
            attempts.len() >= 3,
            "retried while the server was down: {n:#?}"
        );
        assert!(attempts.iter().all(|a| a["ok"] == false));
        assert!(n["last_error"].as_str().unwrap().contains("SMTP"), "{n:#?}");
    }
    assert!(rig.smtp.messages().is_empty());

    rig.smtp.restart();
    // The next backoff step comes due.
    rig.app.clock.advance(Duration::from_secs(600));
    let mail = rig.smtp.wait_for(2, ARRIVES_WITHIN).await;
    let settled = rig.settled(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.smtp.messages().len(), 2, "each e-mail once: {mail:#?}");
    assert!(settled.iter().all(|n| n["state"] == "sent"), "{settled:#?}");
}

#[tokio::test]
async fn a_message_undelivered_past_the_limit_is_given_up_and_says_why() {
    let rig = rig(&[("notify.give_up_after_secs", "60")]).await;
    rig.hook
        .status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    rig.disable(ALICE).await;
    for _ in 0..10 {
        rig.app.clock.advance(Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let all = rig.settled(3).await;
    let hook = all.iter().find(|n| n["channel"] == "webhook").unwrap();
    assert_eq!(hook["state"], "failed", "{hook:#?}");
    assert!(hook["last_error"].as_str().unwrap().contains("503"));
    assert!(hook["attempts"].as_array().unwrap().len() >= 2);
    assert!(
        all.iter()
            .filter(|n| n["channel"] == "email")
            .all(|n| n["state"] == "sent"),
        "one channel failing holds no other back"
    );
}

#[tokio::test]
async fn a_customer_on_no_notices_gets_none_and_the_soc_still_hears() {
    let rig = rig(&[]).await;
    let mut customer = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut policy = customer.policy.clone();
    policy.notify = killswitch::domain::customer::NotifyMode::Off;
    rig.app
        .store
        .update_policy(&customer, &policy, &killswitch::audit::Actor::operator())
        .await
        .unwrap();
    customer.policy = policy;
    rig.disable(ALICE).await;
    rig.hook.wait_for(1, ARRIVES_WITHIN).await;
    let settled = rig.settled(2).await;
    assert!(
        settled.iter().all(|n| n["audience"] == "soc"),
        "{settled:#?}"
    );
    assert!(email_to(&rig.smtp.messages(), "security@contoso.example").is_empty());
    let _ = CONTOSO;
}

/// The witness line of a customer notice, as the customer would save it.
fn witness_of(message: &Value) -> String {
    readable(message)
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"type\":\"witness\""))
        .unwrap_or_else(|| panic!("no witness line in {message:#?}"))
        .to_owned()
}

#[tokio::test]
async fn the_witness_in_a_notice_verifies_against_a_later_export_and_refuses_a_changed_one() {
    let rig = rig(&[]).await;
    rig.disable(ALICE).await;
    let mail = rig.smtp.wait_for(2, ARRIVES_WITHIN).await;
    let notice = email_to(&mail, "security@contoso.example");
    let witness = witness_of(notice[0]);
    // The log goes on after the notice.
    rig.disable("bob@contoso.onmicrosoft.com").await;

    let dir = rig.app.db.dir.path();
    std::fs::write(dir.join("witness.json"), &witness).unwrap();
    let (code, _, stderr) = crate::cli::run(crate::cli::killswitch(&rig.app.db).args([
        "audit",
        "export",
        "--customer",
        "contoso",
        "--out",
        "export.jsonl",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let verify = |file: &str| {
        crate::cli::run(crate::cli::killswitch(&rig.app.db).args([
            "audit",
            "verify",
            "export.jsonl",
            "--witness",
            file,
        ]))
    };
    let (code, stdout, stderr) = verify("witness.json");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("agrees with 1 witness"), "{stdout}");

    // A witness of another head for that entry (as a rewritten log would need) is refused.
    let mut forged: Value = serde_json::from_str(&witness).unwrap();
    forged["hash"] = json!("0".repeat(64));
    std::fs::write(dir.join("forged.json"), forged.to_string()).unwrap();
    let (code, stdout, _) = verify("forged.json");
    assert_ne!(code, 0);
    assert!(stdout.starts_with("NOT INTACT: line 1:"), "{stdout}");
}

/// The id killswitch gave an e-mail (its `X-Killswitch-Notification` header).
fn notification_id(message: &Value) -> String {
    readable(message)
        .lines()
        .find_map(|l| l.strip_prefix("X-Killswitch-Notification: "))
        .unwrap_or_else(|| panic!("no notification id in {message:#?}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn two_instances_on_one_database_send_each_notification_once() {
    let smtp = SmtpSink::start(0);
    let hook = Receiver::start().await;
    let mut settings = notify::settings(&smtp, &hook);
    settings.push(("notify.soc_email", notify::SOC_MAILBOX.to_owned()));
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = TestApp::spawn_with(&overrides).await;
    entra::add_customer(&first.store, "contoso", CONTOSO, Policy::default()).await;
    // A second instance on the same database and keys, racing the first for every notice.
    let mut second_settings = first.db.settings(&overrides);
    second_settings.server.listen = "127.0.0.1:0".parse().unwrap();
    let services = killswitch::app::Services::open(&second_settings)
        .await
        .unwrap();
    let second = killswitch::app::Application::with_services(second_settings, services)
        .await
        .unwrap();
    tokio::spawn(second.run_until(std::future::pending()));

    const NOTICES: usize = 60;
    let chain = killswitch::domain::ChainId::Customer("contoso".parse().unwrap());
    let appends = (0..NOTICES).map(|i| {
        let event = AuditEvent::ConnectionTested {
            ready: false,
            detail: format!("the tenant answered 503 (check {i})"),
        };
        let (store, chain) = (first.store.clone(), chain.clone());
        async move {
            store
                .append(&chain, &killswitch::audit::Actor::Service, &event)
                .await
                .unwrap()
        }
    });
    futures::future::join_all(appends).await;

    let mail = smtp.wait_for(NOTICES, Duration::from_secs(60)).await;
    let hooks = hook.wait_for(NOTICES, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), NOTICES, "one e-mail per notice");
    assert_eq!(hook.requests().len(), NOTICES, "one webhook per notice");
    let ids: std::collections::BTreeSet<String> = mail.iter().map(notification_id).collect();
    assert_eq!(ids.len(), NOTICES);
    let hook_ids: std::collections::BTreeSet<String> =
        hooks.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(hook_ids.len(), NOTICES);
    let subjects: std::collections::BTreeSet<String> = hooks
        .iter()
        .map(|r| r.json()["data"]["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
}

fn pending_detection() -> killswitch::falcon::records::DetectionRecord {
    let mut detection = common::stored_detection(uuid::Uuid::new_v4(), "ind:1234:5678");
    detection.tactic = Some("Credential Access".into());
    detection.technique = Some("Pass the Hash".into());
    detection
}

/// The webhooks the SOC received, by their event type.
fn hook_types(hook: &Receiver) -> Vec<String> {
    hook.accepted()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_pending_detection_is_announced_then_reminded_until_decided() {
    let rig = rig(&[("notify.pending_reminder_secs", "900")]).await;
    let detection = pending_detection();
    let falcon = killswitch::audit::Actor::Falcon {
        policy: "intake".into(),
        client_ip: None,
    };
    rig.app
        .store
        .record_detection(&detection, &falcon)
        .await
        .unwrap();
    rig.app
        .store
        .set_detection_target(
            detection.id,
            None,
            None,
            Some("auto-disable is off for this customer"),
        )
        .await
        .unwrap();
    rig.hook.wait_for(1, ARRIVES_WITHIN).await;
    assert_eq!(hook_types(&rig.hook), ["killswitch.detection_pending"]);
    let first = rig.hook.accepted()[0].json();
    assert_eq!(
        first["data"]["pending_reason"],
        "auto-disable is off for this customer"
    );

    let quiet = || tokio::time::sleep(Duration::from_millis(1500));
    rig.app.clock.advance(Duration::from_secs(600));
    quiet().await;
    assert_eq!(
        hook_types(&rig.hook).len(),
        1,
        "no reminder before the interval"
    );
    rig.app.clock.advance(Duration::from_secs(301));
    rig.hook.wait_for(2, ARRIVES_WITHIN).await;
    quiet().await;
    assert_eq!(
        hook_types(&rig.hook),
        [
            "killswitch.detection_pending",
            "killswitch.detection_reminder"
        ],
        "one reminder"
    );
    rig.app.clock.advance(Duration::from_secs(900));
    rig.hook.wait_for(3, ARRIVES_WITHIN).await;
    assert_eq!(hook_types(&rig.hook).len(), 3, "and again");

    let dismissed = killswitch::store::Decision {
        id: detection.id,
        customer: "contoso".parse().unwrap(),
        state: killswitch::domain::detection::DetectionState::Dismissed,
        action_id: None,
        reason: Some("benign: the user's own new laptop".into()),
        actor: killswitch::audit::Actor::operator(),
    };
    assert!(rig.app.store.decide_detection(&dismissed).await.unwrap());
    rig.app.clock.advance(Duration::from_secs(1800));
    quiet().await;
    assert_eq!(hook_types(&rig.hook).len(), 3, "no reminder once decided");
}

#[tokio::test]
async fn a_customer_on_the_digest_gets_one_message_a_day_listing_the_actions_with_a_witness() {
    use chrono::Timelike;
    use killswitch::time::Clock;
    let now = killswitch::time::Timestamp::now().as_datetime();
    let hour = (now.hour() + 1) % 24;
    let rig = rig(&[("notify.digest_hour_utc", &hour.to_string())]).await;
    let customer = rig
        .app
        .store
        .customer(&"contoso".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut policy = customer.policy.clone();
    policy.notify = killswitch::domain::customer::NotifyMode::Digest;
    rig.app
        .store
        .update_policy(&customer, &policy, &killswitch::audit::Actor::operator())
        .await
        .unwrap();
    rig.disable(ALICE).await;
    rig.disable("bob@contoso.onmicrosoft.com").await;
    rig.smtp.wait_for(2, ARRIVES_WITHIN).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        email_to(&rig.smtp.messages(), "security@contoso.example").is_empty(),
        "no notice per action on the digest"
    );

    // Past the digest's hour.
    let clock_now = rig.app.clock.now().as_datetime();
    let to_hour = 60 - u64::from(clock_now.minute()) + 1;
    rig.app.clock.advance(Duration::from_secs(to_hour * 60));
    let start = std::time::Instant::now();
    while email_to(&rig.smtp.messages(), "security@contoso.example").is_empty()
        && start.elapsed() < ARRIVES_WITHIN
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mail = rig.smtp.messages();
    let digests = email_to(&mail, "security@contoso.example");
    assert_eq!(digests.len(), 1, "one digest");
    let text = readable(digests[0]);
    assert!(text.contains("daily digest: 2 action(s)"), "{text}");
    assert!(text.contains(ALICE) && text.contains("bob@contoso.onmicrosoft.com"));
    assert!(text.contains("\"type\":\"witness\""), "{text}");
}

#[tokio::test]
async fn a_customer_with_its_own_webhook_receives_each_notice_signed_with_its_secret() {
    let rig = rig(&[]).await;
    let theirs = Receiver::start().await;
    let (code, stdout, stderr) = crate::cli::run(crate::cli::killswitch(&rig.app.db).args([
        "customer",
        "policy",
        "contoso",
        "--webhook-url",
        &theirs.url,
        "--json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let secret = printed["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{printed}");
    assert_eq!(printed["policy"]["webhook_url"], theirs.url.as_str());
    let events = common::events(&rig.app.store, "contoso").await;
    let recorded = serde_json::to_string(&events).unwrap();
    assert!(
        !recorded.contains(&secret[6..]),
        "the secret is never recorded"
    );

    rig.disable(ALICE).await;
    let delivered = theirs.wait_for(1, ARRIVES_WITHIN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(theirs.accepted().len(), 1, "one notice");
    let notice = &delivered[0];
    let key = killswitch::falcon::signature::standard_key(&secret).unwrap();
    let (id, timestamp) = (
        notice.header("webhook-id"),
        notice.header("webhook-timestamp"),
    );
    assert_eq!(
        notice.header("webhook-signature"),
        killswitch::falcon::signature::sign_standard(&key, &id, &timestamp, &notice.body)
    );
    let body = notice.json();
    assert_eq!(body["type"], "killswitch.action_outcome");
    assert_eq!(body["data"]["account"], ALICE);
    assert_eq!(body["data"]["witness"]["type"], "witness");
    assert!(
        rig.hook
            .accepted()
            .iter()
            .all(|r| r.json()["data"].get("witness").is_none()),
        "the SOC's copy carries no witness"
    );
}

/// An app whose only channel is SOC e-mail through `smtp` (with `extra` settings).
async fn soc_mail_app(smtp: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let url = smtp.url();
    let mut settings = vec![
        ("notify.smtp_url", url.as_str()),
        ("notify.from", notify::FROM),
        ("notify.soc_email", notify::SOC_MAILBOX),
        ("notify.poll_interval_ms", "20"),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

fn everything() -> killswitch::notify::NotificationFilter {
    killswitch::notify::NotificationFilter {
        limit: 100,
        ..Default::default()
    }
}

/// A failed connection test, which the SOC hears of.
async fn connection_failed(app: &TestApp) {
    entra::add_customer(&app.store, "contoso", CONTOSO, Policy::default()).await;
    let event = AuditEvent::ConnectionTested {
        ready: false,
        detail: "the tenant answered 503".into(),
    };
    let chain = killswitch::domain::ChainId::Customer("contoso".parse().unwrap());
    app.store
        .append(&chain, &killswitch::audit::Actor::Service, &event)
        .await
        .unwrap();
}

#[tokio::test]
async fn mail_goes_over_starttls_and_implicit_tls_with_authentication() {
    for mode in ["starttls", "implicit"] {
        let tls = notify::Tls::new(mode);
        let ca = tls.ca();
        let smtp = SmtpSink::start_with(0, Some(tls));
        let app = soc_mail_app(&smtp, &[("notify.smtp_ca_file", ca.as_str())]).await;
        connection_failed(&app).await;
        let mail = smtp.wait_for(1, ARRIVES_WITHIN).await;
        let listed = app.store.notifications(&everything()).await.unwrap();
        assert_eq!(mail.len(), 1, "{mode}: {listed:#?}");
        assert_eq!(mail[0]["secure"], true, "{mode}: sent over TLS");
        assert_eq!(mail[0]["user"], notify::SMTP_USER, "{mode}: authenticated");
        assert!(readable(&mail[0]).contains("Connection test FAILED"));
    }
}

#[tokio::test]
async fn starttls_that_the_server_does_not_offer_or_an_unknown_certificate_sends_nothing() {
    // The URL asks for STARTTLS; the server offers none: nothing goes out in plain text.
    let plain = SmtpSink::start(0);
    let url = plain.url().replace("tls=none", "tls=starttls");
    let app = TestApp::spawn_with(&[
        ("notify.smtp_url", url.as_str()),
        ("notify.from", notify::FROM),
        ("notify.soc_email", notify::SOC_MAILBOX),
        ("notify.poll_interval_ms", "20"),
    ])
    .await;
    connection_failed(&app).await;
    // A certificate nobody vouches for (no notify.smtp_ca_file) is refused too.
    let unknown = SmtpSink::start_with(0, Some(notify::Tls::new("implicit")));
    let other = soc_mail_app(&unknown, &[]).await;
    connection_failed(&other).await;
    for app in [&app, &other] {
        let start = std::time::Instant::now();
        let failed = loop {
            let all = app.store.notifications(&everything()).await.unwrap();
            if all.iter().any(|n| n.attempts > 0 && n.last_error.is_some())
                || start.elapsed() > ARRIVES_WITHIN
            {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let error = failed[0].last_error.clone().unwrap_or_default();
        assert!(error.starts_with("SMTP"), "{error}");
    }
    assert!(plain.messages().is_empty() && unknown.messages().is_empty());
}

#[tokio::test]
async fn a_lockout_is_announced_to_the_soc_once() {
    let rig = rig(&[("mfa.max_failures", "3")]).await;
    for _ in 0..3 {
        let response = rig
            .app
            .client
            .post(rig.app.url(&format!(
                "/api/v1/customers/contoso/accounts/{ALICE}/disable"
            )))
            .bearer_auth(&rig.lead.token)
            .header("X-Killswitch-OTP", rig.lead.wrong_code())
            .json(&json!({"reason": "Falcon ITP: credential theft"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    rig.hook.wait_for(1, ARRIVES_WITHIN).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(hook_types(&rig.hook), ["killswitch.analyst_locked_out"]);
    let body = rig.hook.accepted()[0].json();
    assert_eq!(body["data"]["analyst_id"], rig.lead.id.to_string());
}
