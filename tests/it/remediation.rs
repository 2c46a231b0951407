//! The remediation pipeline against a fake Entra, on SQLite and on PostgreSQL: every documented
//! outcome, exactly one outcome entry per request, and a chain that verifies afterwards.

use crate::common;

use std::time::Duration;

use common::entra::{self, ALICE, BOB, CONTOSO, DAVE, Rig, request};
use fake_entra::{Endpoint, Fault};
use killswitch::audit::event::{AuditEvent, Operation, Outcome};
use killswitch::customers::Policy;
use killswitch::remediation::Executed;
use killswitch::remediation::action::{ActionRecord, ActionState, Denial};

const ALICE_UPN: &str = "alice@contoso.onmicrosoft.com";

async fn run(rig: &Rig, operation: Operation, account: &str) -> ActionRecord {
    match rig
        .remediator
        .execute(request("contoso", operation, account))
        .await
        .unwrap()
    {
        Executed::Ran(record) => record,
        Executed::Replayed(record) => panic!("unexpected replay of {}", record.id),
    }
}

/// The action has one `action_requested` and then exactly one `action_outcome` with `outcome`.
async fn assert_one_outcome(rig: &Rig, record: &ActionRecord, outcome: Outcome) {
    let events = rig.entries_for("contoso", &record.id.to_string()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(events[0], AuditEvent::ActionRequested { .. }),
        "{events:?}"
    );
    match &events[1] {
        AuditEvent::ActionOutcome {
            outcome: recorded, ..
        } => assert_eq!(recorded, &outcome),
        other => panic!("second entry is {other:?}"),
    }
    assert_eq!(record.state, ActionState::from(outcome));
    assert!(record.finished_at.is_some() && record.outcome_seq.is_some());
    rig.verify("contoso").await;
}

#[tokio::test]
async fn disable_switches_the_account_off_and_records_graphs_evidence() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(&rig, Operation::Disable, ALICE_UPN).await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    assert!(!rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
    assert_eq!(
        record.target_id.as_deref(),
        Some(ALICE.to_string().as_str())
    );
    assert_eq!(record.before.clone().unwrap().account_enabled, Some(true));
    assert_eq!(record.after.clone().unwrap().account_enabled, Some(false));
    let graph = record.graph.clone().unwrap();
    assert!(
        graph.request_id.is_some() && graph.date.is_some(),
        "{graph:?}"
    );
    let sent: Vec<_> = rig
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| c.client_request_id)
        .collect();
    assert!(
        sent.contains(graph.client_request_id.as_ref().unwrap()),
        "our client-request-id reached Graph"
    );
}

#[tokio::test]
async fn enable_switches_a_disabled_account_back_on() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(&rig, Operation::Enable, "dave@contoso.onmicrosoft.com").await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    assert!(
        rig.fake
            .user(CONTOSO, &DAVE.to_string())
            .unwrap()
            .account_enabled
    );
}

#[tokio::test]
async fn an_account_already_in_the_asked_state_is_a_noop_without_a_patch() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(&rig, Operation::Disable, &DAVE.to_string()).await;
    assert_one_outcome(&rig, &record, Outcome::Noop).await;
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
}

#[tokio::test]
async fn an_unknown_account_fails_with_graphs_not_found() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(&rig, Operation::Disable, "mallory@contoso.onmicrosoft.com").await;
    assert_one_outcome(&rig, &record, Outcome::Failed).await;
    assert_eq!(
        record.graph.clone().unwrap().error_code.as_deref(),
        Some("Request_ResourceNotFound")
    );
    assert!(
        record
            .detail
            .unwrap()
            .contains("no account mallory@contoso.onmicrosoft.com")
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
}

#[tokio::test]
async fn a_privileged_account_fails_once_with_the_role_the_customer_must_grant() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(
        &rig,
        Operation::Disable,
        "carol.admin@contoso.onmicrosoft.com",
    )
    .await;
    assert_one_outcome(&rig, &record, Outcome::Failed).await;
    assert_eq!(
        record.graph.clone().unwrap().error_code.as_deref(),
        Some("Authorization_RequestDenied")
    );
    assert!(
        record
            .detail
            .unwrap()
            .contains("Privileged Authentication Administrator")
    );
    assert_eq!(
        rig.fake.count(Endpoint::PatchUser),
        1,
        "a 403 is never retried"
    );

    rig.fake
        .grant_directory_role(CONTOSO, fake_entra::PRIVILEGED_AUTH_ADMIN);
    let record = run(
        &rig,
        Operation::Disable,
        "carol.admin@contoso.onmicrosoft.com",
    )
    .await;
    assert_eq!(
        record.state,
        ActionState::Succeeded,
        "once the customer grants the role, it works"
    );
}

#[tokio::test]
async fn a_protected_account_is_denied_without_any_call_to_entra() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let policy = Policy {
        protected: vec!["breakglass@contoso.onmicrosoft.com".parse().unwrap()],
        ..Policy::default()
    };
    rig.set_policy("contoso", policy).await;
    let record = run(
        &rig,
        Operation::Disable,
        "BreakGlass@contoso.onmicrosoft.com",
    )
    .await;
    assert_one_outcome(&rig, &record, Outcome::Denied).await;
    assert!(rig.fake.calls().is_empty(), "{:?}", rig.fake.calls());
    assert!(
        rig.fake
            .user(CONTOSO, "breakglass@contoso.onmicrosoft.com")
            .unwrap()
            .account_enabled
    );
}

#[tokio::test]
async fn a_protected_account_named_by_its_other_identifier_is_denied_before_any_change() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let policy = Policy {
        protected: vec![entra::BREAKGLASS.to_string().parse().unwrap()],
        ..Policy::default()
    };
    rig.set_policy("contoso", policy).await;
    let record = run(
        &rig,
        Operation::Disable,
        "breakglass@contoso.onmicrosoft.com",
    )
    .await;
    assert_one_outcome(&rig, &record, Outcome::Denied).await;
    assert_eq!(
        record.denial,
        Some(Denial::ProtectedAccount),
        "found on reading it"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
}

#[tokio::test]
async fn the_hourly_limit_denies_further_actions_without_calling_entra() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    rig.set_policy(
        "contoso",
        Policy {
            max_actions_per_hour: 2,
            ..Policy::default()
        },
    )
    .await;
    for account in [
        "alice@contoso.onmicrosoft.com",
        "bob@contoso.onmicrosoft.com",
    ] {
        assert_eq!(
            run(&rig, Operation::Disable, account).await.state,
            ActionState::Succeeded
        );
    }
    let calls_before = rig.fake.calls().len();
    let record = run(
        &rig,
        Operation::Disable,
        "breakglass@contoso.onmicrosoft.com",
    )
    .await;
    assert_one_outcome(&rig, &record, Outcome::Denied).await;
    assert_eq!(record.denial, Some(Denial::HourlyLimit));
    assert!(
        record
            .detail
            .unwrap()
            .starts_with("rate limit: 2 actions in the last hour")
    );
    assert_eq!(
        rig.fake.calls().len(),
        calls_before,
        "no Graph call for a denied action"
    );
}

#[tokio::test]
async fn throttling_twice_then_success_honours_retry_after_and_succeeds() {
    let rig = Rig::new(Duration::from_secs(20)).await;
    rig.fake.fail_next(
        Endpoint::PatchUser,
        2,
        Fault::Throttle {
            retry_after_secs: 1,
        },
    );
    let started = std::time::Instant::now();
    let record = run(&rig, Operation::Disable, ALICE_UPN).await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited as Retry-After asked"
    );
}

#[tokio::test]
async fn server_errors_until_the_deadline_end_as_failed() {
    let rig = Rig::new(Duration::from_secs(2)).await;
    rig.fake
        .fail_always(Endpoint::PatchUser, Some(Fault::Status(503)));
    let record = run(&rig, Operation::Disable, ALICE_UPN).await;
    assert_one_outcome(&rig, &record, Outcome::Failed).await;
    assert!(
        record.detail.as_deref().unwrap().contains("503"),
        "{:?}",
        record.detail
    );
    assert_eq!(
        record.graph.clone().unwrap().error_code.as_deref(),
        Some("serviceNotAvailable")
    );
    assert!(
        rig.fake.count(Endpoint::PatchUser) >= 2,
        "retried before giving up"
    );
    assert!(rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    rig.fake
        .fail_next(Endpoint::PatchUser, 1, Fault::DropConnection);
    let record = run(&rig, Operation::Disable, ALICE_UPN).await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 2);
}

#[tokio::test]
async fn a_synced_account_succeeds_with_the_on_premises_warning() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let record = run(&rig, Operation::Disable, &BOB.to_string()).await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    let warnings = record.warnings.clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("on-premises Active Directory")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn sessions_are_revoked_when_asked() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let mut asked = request("contoso", Operation::Disable, ALICE_UPN);
    asked.revoke_sessions = Some(true);
    let record = rig
        .remediator
        .execute(asked)
        .await
        .unwrap()
        .record()
        .clone();
    assert_eq!(record.state, ActionState::Succeeded);
    assert!(record.revoke_sessions);
    assert_eq!(rig.fake.revocations(CONTOSO, ALICE_UPN), 1);
    assert!(record.warnings.is_empty(), "{:?}", record.warnings);
}

#[tokio::test]
async fn a_tenant_without_consent_fails_with_a_clear_reason_and_no_graph_call() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    rig.fake.set_consent(CONTOSO, false, vec![]);
    let record = run(&rig, Operation::Disable, ALICE_UPN).await;
    assert_one_outcome(&rig, &record, Outcome::Failed).await;
    assert!(
        record
            .detail
            .unwrap()
            .contains("has not granted admin consent")
    );
    assert_eq!(
        rig.fake.count(Endpoint::GetUser) + rig.fake.count(Endpoint::PatchUser),
        0
    );
}

#[tokio::test]
async fn the_certificate_credential_gets_tokens_too() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let remediator = killswitch::remediation::Remediator::new(
        rig.store.clone(),
        std::sync::Arc::new(entra::graph_client(&rig.fake, entra::certificate())),
        rig.settings.clone(),
    );
    let record = remediator
        .execute(request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap();
    assert_eq!(record.record().state, ActionState::Succeeded);
}

#[tokio::test]
async fn an_unknown_customer_is_not_found_and_records_nothing() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let error = rig
        .remediator
        .execute(request("fabrikam", Operation::Disable, ALICE_UPN))
        .await
        .unwrap_err();
    assert!(matches!(error, killswitch::Error::NotFound(_)), "{error:?}");
    assert!(rig.fake.calls().is_empty());
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_action_and_refuses_a_different_one() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let mut first = request("contoso", Operation::Disable, ALICE_UPN);
    first.idempotency_key = Some("incident-42-alice".parse().unwrap());
    let original = rig.remediator.execute(first.clone()).await.unwrap();
    let replay = rig.remediator.execute(first.clone()).await.unwrap();
    assert!(matches!(replay, Executed::Replayed(_)));
    assert_eq!(replay.record().id, original.record().id);
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);

    let mut different = first;
    different.account = "bob@contoso.onmicrosoft.com".parse().unwrap();
    let error = rig.remediator.execute(different).await.unwrap_err();
    assert!(matches!(error, killswitch::Error::Conflict(_)), "{error:?}");
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
}

#[tokio::test]
async fn a_hundred_actions_on_one_tenant_fetch_exactly_one_token() {
    let rig = Rig::new(Duration::from_secs(30)).await;
    rig.set_policy(
        "contoso",
        Policy {
            max_actions_per_hour: 1000,
            ..Policy::default()
        },
    )
    .await;
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let remediator = rig.remediator.clone();
            let operation = if n % 2 == 0 {
                Operation::Disable
            } else {
                Operation::Enable
            };
            tokio::spawn(async move {
                remediator
                    .execute(request("contoso", operation, ALICE_UPN))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        let done = task.await.unwrap();
        assert_ne!(done.record().state, ActionState::Requested);
    }
    assert_eq!(rig.fake.count(Endpoint::Token), 1);
    assert_eq!(
        rig.verify("contoso").await.entries,
        2 + 200,
        "customer added, policy changed, then a request and an outcome each"
    );
}

/// A decision on a pending detection for bob, whose look-up found him as `looked_up` says.
async fn decide_with_look_up(rig: &Rig, looked_up: Option<bool>) -> ActionRecord {
    use killswitch::domain::detection::DetectionState;
    use killswitch::graph::{Answer, GraphUser};
    use killswitch::remediation::Trigger;
    use killswitch::remediation::action::DetectionClaim;

    let id = uuid::Uuid::new_v4();
    let detection = common::stored_detection(id, &format!("ind:look-up:{id}"));
    rig.store
        .record_detection(&detection, &killswitch::audit::event::Actor::Service)
        .await
        .unwrap();
    let read = Answer {
        value: GraphUser {
            id: BOB.to_string(),
            user_principal_name: "bob@contoso.onmicrosoft.com".to_owned(),
            display_name: None,
            account_enabled: looked_up,
            // As the fake holds bob: synced from AD.
            on_premises_sync_enabled: Some(true),
            on_premises_security_identifier: None,
        },
        evidence: killswitch::audit::event::GraphEvidence {
            status: Some(200),
            error_code: None,
            request_id: None,
            client_request_id: None,
            date: None,
        },
    };
    let claim = DetectionClaim {
        detection: detection.id,
        decision: DetectionState::AutoRemediated,
        reason: None,
        target: Some((BOB.to_string(), "bob@contoso.onmicrosoft.com".to_owned())),
    };
    let trigger = Trigger {
        received: std::time::Instant::now(),
        account: read,
    };
    let request = request("contoso", Operation::Disable, &BOB.to_string());
    match rig
        .remediator
        .execute_deciding(request, claim, Some(trigger))
        .await
        .unwrap()
    {
        Executed::Ran(record) => record,
        Executed::Replayed(record) => panic!("unexpected replay of {}", record.id),
    }
}

#[tokio::test]
async fn a_look_up_that_found_the_account_as_asked_is_read_again_after_the_request_is_recorded() {
    // As if the detection's look-up found bob disabled and a lead enabled him before the
    // automatic disable was recorded (the fake holds bob enabled throughout): the later
    // request stands, and bob is disabled, not called a no-op.
    let rig = Rig::new(Duration::from_secs(10)).await;
    rig.fake.reset_counts();
    let record = decide_with_look_up(&rig, Some(false)).await;
    assert_one_outcome(&rig, &record, Outcome::Succeeded).await;
    let before = record
        .before
        .expect("read again after the request was recorded");
    assert_eq!(before.account_enabled, Some(true));
    assert_eq!(
        rig.fake.count(Endpoint::GetUser),
        2,
        "read again, and read back"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
    assert!(
        !rig.fake
            .user(CONTOSO, &BOB.to_string())
            .unwrap()
            .account_enabled
    );

    // A look-up that calls for the change is the read before it: no second read.
    rig.fake
        .set_account_enabled(CONTOSO, &BOB.to_string(), true);
    rig.fake.reset_counts();
    let record = decide_with_look_up(&rig, Some(true)).await;
    assert_eq!(record.state, ActionState::Succeeded);
    assert!(
        record.warnings.iter().any(|w| w.contains("on-premises")),
        "the look-up's sync flag still earns the warning"
    );
    assert_eq!(rig.fake.count(Endpoint::GetUser), 1, "read back only");
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 1);
}
