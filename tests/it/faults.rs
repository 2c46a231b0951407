//! The fault matrix: `killswitch serve` is stopped at each named fault point (see
//! `killswitch::fault`) and killed there with SIGKILL, then started again under the same
//! instance name. Every action must end with exactly one outcome that matches the fake Entra,
//! the chains must verify, and no account may get a change nobody asked for. Runs on SQLite
//! and PostgreSQL.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use common::entra::{self, ALICE, BOB, CONTOSO};
use common::serve::{Server, enroll_lead, env_of};
use fake_entra::{Endpoint, FakeEntra};
use killswitch::audit::event::{Actor, AuditEvent};
use killswitch::customers::onboarding::SecretIssue;
use killswitch::customers::{AutoDisable, Policy};
use killswitch::remediation::action::{ActionRecord, ActionState};
use killswitch::store::{ActionFilter, Store};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const ALICE_UPN: &str = "alice@contoso.onmicrosoft.com";

/// What the killed process was doing.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// An analyst disables alice through the API.
    Disable,
    /// Falcon reports alice at high severity; the customer disables automatically.
    AutoDisable,
    /// Falcon reports alice; an analyst approves the detection.
    Approval,
}

/// A database with contoso (its webhook secret issued) and a lead, and the fake Entra.
struct Stage {
    fake: FakeEntra,
    db: TestDb,
    store: Arc<dyn Store>,
    lead: common::Analyst,
    webhook_secret: String,
    env: Vec<(String, String)>,
}

async fn stage(trigger: Trigger) -> Stage {
    let fake = entra::fake_entra().await;
    let db = TestDb::new().await;
    let services = killswitch::app::Services::open(&db.settings(&[]))
        .await
        .unwrap();
    let policy = Policy {
        auto_disable: match trigger {
            Trigger::AutoDisable => AutoDisable::High,
            _ => AutoDisable::Off,
        },
        ..Policy::default()
    };
    let customer = entra::add_customer(&services.store, "contoso", CONTOSO, policy).await;
    let issued = services
        .onboarding
        .issue_webhook_secret(&customer, SecretIssue::First, &Actor::operator())
        .await
        .unwrap();
    let lead = enroll_lead(&services, "lead@provider.example").await;
    let store = services.store.clone();
    let mut env = env_of(entra::settings(&fake.base_url()));
    env.extend(env_of([("instance.id", "instance-a")]));
    Stage {
        fake,
        db,
        store,
        lead,
        webhook_secret: issued.secret.expose_secret().to_owned(),
        env,
    }
}

impl Stage {
    fn armed(&self, point: &str) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("KILLSWITCH_FAULT_POINT".to_owned(), point.to_owned()));
        env
    }

    /// Falcon's webhook for alice at high severity, signed with contoso's secret.
    fn webhook(&self, server: &Server) -> reqwest::RequestBuilder {
        let body = serde_json::to_vec(&json!({
            "composite_id": "cid:ind:fault-matrix",
            "severity": "high",
            "tactic": "Credential Access",
            "source_account_upn": ALICE_UPN,
            "timestamp": "2026-12-01T03:00:00Z",
        }))
        .unwrap();
        common::signed_webhook(
            &reqwest::Client::new(),
            &server.url("/api/v1/webhooks/falcon/contoso"),
            &self.webhook_secret,
            body,
        )
    }

    /// Starts what `trigger` does against `server`; the answer may never come (the process
    /// is killed on the way), so it runs on its own task.
    async fn trigger(&self, server: &Server, trigger: Trigger) {
        let client = reqwest::Client::new();
        let request = match trigger {
            Trigger::Disable => client
                .post(server.url(&format!(
                    "/api/v1/customers/contoso/accounts/{ALICE_UPN}/disable"
                )))
                .bearer_auth(&self.lead.token)
                .header("X-Killswitch-OTP", self.lead.code())
                .json(&json!({"reason": "Falcon ITP: credential theft"})),
            Trigger::AutoDisable => self.webhook(server),
            Trigger::Approval => {
                let pending: Value = self
                    .webhook(server)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(pending["state"], "pending", "{pending}");
                let id = pending["id"].as_str().unwrap();
                client
                    .post(server.url(&format!("/api/v1/detections/{id}/approve")))
                    .bearer_auth(&self.lead.token)
                    .header("X-Killswitch-OTP", self.lead.code())
            }
        };
        tokio::spawn(request.send());
    }

    async fn actions(&self) -> Vec<ActionRecord> {
        self.store
            .actions(&ActionFilter {
                limit: 100,
                ..ActionFilter::default()
            })
            .await
            .unwrap()
    }
}

/// Runs `trigger`, kills the process at `point`, restarts it, and checks the invariants.
/// Returns the settled action's detail.
async fn killed_at(point: &str, trigger: Trigger) -> String {
    let stage = stage(trigger).await;
    let server = Server::start(&stage.db, &stage.armed(point));
    stage.trigger(&server, trigger).await;
    server
        .wait_for_line(
            &format!("{}{point}", killswitch::fault::REACHED),
            Duration::from_secs(30),
        )
        .await;
    server.kill();

    let restarted = Server::start(&stage.db, &stage.env);
    let (actions, detections) = common::settled(&stage.store, 100, 1).await;

    assert_eq!(actions.len(), 1, "one action: {actions:#?}");
    let action = &actions[0];
    assert_eq!(
        action.state,
        ActionState::Succeeded,
        "{point}: {:?}\n{}",
        action.detail,
        restarted.log()
    );
    let alice = stage.fake.user(CONTOSO, ALICE_UPN).unwrap();
    assert!(!alice.account_enabled, "the outcome matches Entra");
    assert!(
        stage
            .fake
            .user(CONTOSO, &BOB.to_string())
            .unwrap()
            .account_enabled,
        "no other account changed"
    );
    let patches: Vec<_> = stage
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == Endpoint::PatchUser)
        .collect();
    assert!(
        !patches.is_empty() && patches.iter().all(|c| c.path.ends_with(&ALICE.to_string())),
        "only alice was changed: {patches:#?}"
    );
    assert_eq!(patches.len(), 1, "one PATCH, whoever sent it: {patches:#?}");

    let outcomes = common::events(&stage.store, "contoso")
        .await
        .into_iter()
        .filter(
            |e| matches!(e, AuditEvent::ActionOutcome { action_id, .. } if *action_id == action.id),
        )
        .count();
    assert_eq!(outcomes, 1, "exactly one outcome entry");
    common::verify_chain(&stage.store, "contoso").await;
    common::verify_chain(&stage.store, "system").await;
    if matches!(trigger, Trigger::AutoDisable | Trigger::Approval) {
        assert_eq!(detections.len(), 1, "the detection is stored once");
        assert_eq!(detections[0].action_id, Some(action.id));
    }
    drop(restarted);
    action.detail.clone().unwrap_or_default()
}

#[tokio::test]
async fn killed_after_admission_before_graph_the_action_is_carried_through() {
    let detail = killed_at("action.admitted", Trigger::Disable).await;
    assert!(
        detail.starts_with("completed after an interruption"),
        "{detail}"
    );
}

#[tokio::test]
async fn killed_after_the_patch_was_sent_the_action_is_settled_from_entra() {
    let detail = killed_at("action.patch_sent", Trigger::Disable).await;
    assert!(
        detail.contains("on reconciliation Entra shows the account disabled"),
        "{detail}"
    );
}

#[tokio::test]
async fn killed_after_graph_answered_the_action_is_settled_from_entra() {
    let detail = killed_at("action.answered", Trigger::Disable).await;
    assert!(
        detail.contains("on reconciliation Entra shows the account disabled"),
        "{detail}"
    );
}

#[tokio::test]
async fn killed_during_the_outcome_commit_the_action_gets_one_outcome() {
    let detail = killed_at("action.outcome_commit", Trigger::Disable).await;
    assert!(
        detail.contains("on reconciliation Entra shows the account disabled"),
        "{detail}"
    );
}

#[tokio::test]
async fn killed_between_storing_a_detection_and_deciding_it_the_automatic_disable_happens() {
    let detail = killed_at("intake.stored", Trigger::AutoDisable).await;
    assert_eq!(detail, "the account is now disabled");
}

#[tokio::test]
async fn killed_during_an_approval_the_approved_disable_is_carried_through() {
    let detail = killed_at("approval.admitted", Trigger::Approval).await;
    assert!(
        detail.starts_with("completed after an interruption"),
        "{detail}"
    );
}

#[tokio::test]
async fn another_instance_leaves_a_live_owners_action_alone_and_takes_it_over_once_its_heartbeat_stops()
 {
    let stage = stage(Trigger::Disable).await;
    let quick = env_of([
        ("instance.heartbeat_secs", "1"),
        ("instance.dead_after_secs", "3"),
        ("remediation.reconcile_interval_secs", "1"),
    ]);
    let mut stalled_env = stage.armed("action.admitted");
    stalled_env.extend(quick.clone());
    let stalled = Server::start(&stage.db, &stalled_env);
    let mut other_env = stage.env.clone();
    other_env.extend(quick);
    other_env.extend(env_of([("instance.id", "instance-b")]));
    let other = Server::start(&stage.db, &other_env);

    stage.trigger(&stalled, Trigger::Disable).await;
    stalled
        .wait_for_line(
            &format!("{}action.admitted", killswitch::fault::REACHED),
            Duration::from_secs(30),
        )
        .await;
    // The owner is alive (it beats every second) though stuck: longer than the heartbeat limit,
    // the other instance must not touch its action.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let actions = stage.actions().await;
    assert_eq!(actions.len(), 1);
    assert!(actions[0].finished_at.is_none(), "left to its live owner");
    assert_eq!(stage.fake.count(Endpoint::PatchUser), 0);

    stalled.kill();
    let killed = Instant::now();
    let (actions, _) = common::settled(&stage.store, 100, 1).await;
    let took = killed.elapsed();
    eprintln!("taken over {took:?} after the owner was killed (heartbeat limit 3 s)");
    assert!(
        took >= Duration::from_secs(1),
        "not before the owner's heartbeat went stale: {took:?}"
    );
    assert_eq!(
        actions[0].state,
        ActionState::Succeeded,
        "{:?}",
        actions[0].detail
    );
    assert!(
        actions[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("completed after an interruption")
    );
    assert!(!stage.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);
    assert_eq!(stage.fake.count(Endpoint::PatchUser), 1);
    common::verify_chain(&stage.store, "contoso").await;
    drop(other);
}

#[tokio::test]
async fn a_second_process_under_the_same_instance_name_replaces_the_first_which_stops() {
    let stage = stage(Trigger::Disable).await;
    let quick = env_of([
        ("instance.heartbeat_secs", "1"),
        ("instance.dead_after_secs", "3"),
    ]);
    let mut env = stage.env.clone();
    env.extend(quick);
    let mut first = Server::start(&stage.db, &env);
    let second = Server::start(&stage.db, &env);
    let status = first.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "a graceful stop: {status:?}");
    assert!(
        first
            .log()
            .contains("another process registered under this instance's name"),
        "{}",
        first.log()
    );
    let ready = reqwest::get(second.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the newer process serves on");
}
