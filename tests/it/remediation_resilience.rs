//! Invariants 1 and 4 under failure: nothing reaches Graph unless its intent is durably recorded,
//! and every recorded intent ends with exactly one outcome, also across crashes and under load.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::entra::{self, ALICE, CONTOSO, Rig, request};
use fake_entra::{Endpoint, Fault};
use killswitch::audit::event::{AuditEvent, Operation, Outcome};
use killswitch::remediation::action::{ActionRecord, ActionState};
use killswitch::store::ActionFilter;
use uuid::Uuid;

const ALICE_UPN: &str = "alice@contoso.onmicrosoft.com";

async fn exec(rig: &Rig, sql: &str) {
    let mut conn = rig.db.raw().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn all_actions(rig: &Rig) -> Vec<ActionRecord> {
    rig.store
        .actions(&ActionFilter {
            limit: 10_000,
            ..ActionFilter::default()
        })
        .await
        .unwrap()
}

async fn outcomes_of(rig: &Rig, customer: &str, action: &str) -> Vec<Outcome> {
    rig.entries_for(customer, action)
        .await
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::ActionOutcome { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect()
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn when_the_audit_log_cannot_be_written_nothing_is_sent_to_graph() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    audit_down(&rig).await;
    let error = rig
        .remediator
        .execute(request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap_err();
    assert!(
        matches!(error, killswitch::Error::AuditUnavailable(_)),
        "{error:?}"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    assert_eq!(rig.fake.count(Endpoint::GetUser), 0);
    assert!(
        all_actions(&rig).await.is_empty(),
        "the action row rolled back with its entry"
    );
    assert!(rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);

    audit_up(&rig).await;
    let record = rig
        .remediator
        .execute(request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap();
    assert_eq!(
        record.record().state,
        ActionState::Succeeded,
        "service resumes once the log is writable"
    );
}

/// Starts a disable whose Graph call `endpoint` hangs, and kills it (drops the task) while it
/// hangs: the state a process crash leaves behind.
async fn crash_during(rig: &Rig, endpoint: Endpoint) -> Uuid {
    rig.fake.fail_next(endpoint, 1, Fault::Hang);
    let remediator = rig.remediator.clone();
    let task = tokio::spawn(async move {
        remediator
            .execute(request("contoso", Operation::Disable, ALICE_UPN))
            .await
    });
    wait_until("the request hangs in Entra", || rig.fake.hung_count() == 1).await;
    task.abort();
    let _ = task.await;
    let actions = all_actions(rig).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].state,
        ActionState::Requested,
        "the intent is recorded, its outcome is not"
    );
    actions[0].id
}

#[tokio::test]
async fn a_crash_before_the_graph_write_is_carried_through_after_restart() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::GetUser).await;
    rig.fake.release_hung();
    rig.clock.advance(Duration::from_millis(1100));

    let restarted = rig.restart();
    assert_eq!(restarted.reconcile().await.unwrap(), 1);
    assert_eq!(
        restarted.reconcile().await.unwrap(),
        0,
        "reconciled once only"
    );
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Succeeded, "{:?}", record.detail);
    assert!(
        record
            .detail
            .as_deref()
            .unwrap()
            .starts_with("completed after an interruption"),
        "{:?}",
        record.detail
    );
    assert!(
        !rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled,
        "the approved intent was carried out"
    );
    assert_eq!(
        rig.fake.count(Endpoint::PatchUser),
        1,
        "sent once, by the re-drive"
    );
    assert_eq!(record.after.unwrap().account_enabled, Some(false));
    assert_eq!(
        outcomes_of(&rig, "contoso", &id.to_string()).await,
        [Outcome::Succeeded]
    );
    rig.verify("contoso").await;
}

#[tokio::test]
async fn an_interrupted_action_older_than_the_redrive_window_is_recorded_failed_not_sent() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::GetUser).await;
    rig.fake.release_hung();
    rig.clock.advance(Duration::from_secs(901));

    assert_eq!(rig.restart().reconcile().await.unwrap(), 1);
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Failed);
    let detail = record.detail.unwrap();
    assert!(detail.contains("more than 15 min ago"), "{detail}");
    assert!(detail.contains("the account is still enabled"), "{detail}");
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0, "nothing re-sent");
    assert!(rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);
    assert_eq!(
        outcomes_of(&rig, "contoso", &id.to_string()).await,
        [Outcome::Failed]
    );
    rig.verify("contoso").await;
}

#[tokio::test]
async fn an_interrupted_action_is_not_sent_again_when_the_account_had_a_later_action() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::GetUser).await;
    rig.fake.release_hung();
    // Meanwhile a lead decided the account stays enabled: their request stands.
    rig.clock.advance(Duration::from_millis(10));
    let later = rig
        .remediator
        .execute(request("contoso", Operation::Enable, ALICE_UPN))
        .await
        .unwrap();
    assert_eq!(later.record().state, ActionState::Noop);
    rig.clock.advance(Duration::from_millis(1100));

    assert_eq!(rig.restart().reconcile().await.unwrap(), 1);
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Failed);
    let detail = record.detail.unwrap();
    assert!(
        detail.contains(&later.record().id.to_string()) && detail.contains("not sent again"),
        "{detail}"
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    assert!(rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);
    rig.verify("contoso").await;
}

#[tokio::test]
async fn a_crash_after_the_graph_write_is_reconciled_as_succeeded_after_restart() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::PatchUser).await;
    // Entra still applies the PATCH it had received.
    rig.fake.release_hung();
    wait_until("Entra applied the change", || {
        !rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled
    })
    .await;
    rig.clock.advance(Duration::from_millis(1100));

    let restarted = rig.restart();
    assert_eq!(restarted.reconcile().await.unwrap(), 1);
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Succeeded);
    assert_eq!(record.after.clone().unwrap().account_enabled, Some(false));
    assert_eq!(
        outcomes_of(&rig, "contoso", &id.to_string()).await,
        [Outcome::Succeeded]
    );
    rig.verify("contoso").await;
}

#[tokio::test]
async fn reconciliation_leaves_an_action_alone_while_its_owner_still_holds_the_lease() {
    let rig = Rig::new(Duration::from_secs(5)).await;
    rig.fake.fail_next(Endpoint::PatchUser, 1, Fault::Hang);
    let remediator = rig.remediator.clone();
    let running = tokio::spawn(async move {
        remediator
            .execute(request("contoso", Operation::Disable, ALICE_UPN))
            .await
    });
    wait_until("the PATCH hangs", || rig.fake.hung_count() == 1).await;

    // Another instance looks for stale work while the first is still talking to Graph.
    assert_eq!(rig.restart().reconcile().await.unwrap(), 0);
    rig.fake.release_hung();
    let record = running.await.unwrap().unwrap();
    assert_eq!(record.record().state, ActionState::Succeeded);
    assert_eq!(
        outcomes_of(&rig, "contoso", &record.record().id.to_string()).await,
        [Outcome::Succeeded]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_disables_across_twenty_customers_all_end_once() {
    let rig = Rig::new(Duration::from_secs(30)).await;
    let customers: Vec<(String, Uuid)> = (0..20)
        .map(|n| (format!("customer-{n:02}"), Uuid::from_u128(0xC000 + n)))
        .collect();
    for (slug, tenant) in &customers {
        entra::add_tenant(&rig.fake, *tenant, slug);
        for k in 0..10u128 {
            rig.fake.add_user(
                *tenant,
                entra::user(
                    Uuid::from_u128(0x1000 + k),
                    &format!("user{k}@{slug}.onmicrosoft.com"),
                    true,
                ),
            );
        }
        rig.add_customer(slug, *tenant, Default::default()).await;
    }
    rig.fake.fail_next(
        Endpoint::PatchUser,
        40,
        Fault::Throttle {
            retry_after_secs: 1,
        },
    );

    // 200 distinct requests, each with its own idempotency key; 40 of them sent twice at once.
    let mut requests = Vec::new();
    for (slug, _) in &customers {
        for k in 0..10 {
            let mut asked = request(
                slug,
                Operation::Disable,
                &format!("user{k}@{slug}.onmicrosoft.com"),
            );
            asked.idempotency_key = Some(format!("incident-7-{slug}-{k}").parse().unwrap());
            if k < 2 {
                requests.push(asked.clone());
            }
            requests.push(asked);
        }
    }
    assert_eq!(requests.len(), 240);
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|asked| {
            let remediator = rig.remediator.clone();
            tokio::spawn(async move { remediator.execute(asked).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let actions = all_actions(&rig).await;
    assert_eq!(actions.len(), 200, "one action per idempotency key");
    let unfinished: Vec<_> = actions
        .iter()
        .filter(|a| a.state == ActionState::Requested)
        .collect();
    assert!(unfinished.is_empty(), "{unfinished:?}");
    assert!(
        actions.iter().all(|a| a.state == ActionState::Succeeded),
        "{:?}",
        actions.iter().map(|a| &a.state).collect::<Vec<_>>()
    );

    // Each account got exactly one PATCH that Graph accepted; throttled attempts were retried.
    let mut applied: HashMap<(Option<String>, String), usize> = HashMap::new();
    for call in rig
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == Endpoint::PatchUser && c.status == 204)
    {
        *applied.entry((call.tenant, call.path)).or_default() += 1;
    }
    assert_eq!(applied.len(), 200);
    assert!(applied.values().all(|&n| n == 1), "{applied:?}");
    assert_eq!(
        rig.fake.count(Endpoint::PatchUser),
        240,
        "200 accepted + 40 throttled"
    );

    for (slug, _) in &customers {
        let summary = rig.verify(slug).await;
        assert_eq!(
            summary.entries,
            1 + 2 * 10,
            "{slug}: customer_added and a request and an outcome per action"
        );
    }
    let _ = ALICE;
}

#[tokio::test]
async fn a_second_outcome_for_the_same_action_is_refused_and_leaves_no_entry() {
    let rig = Rig::new(Duration::from_secs(5)).await;
    let done = rig
        .remediator
        .execute(request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap();
    let record = done.record();
    let late = killswitch::remediation::action::Finish {
        id: record.id,
        customer: "contoso".parse().unwrap(),
        outcome: Outcome::Failed,
        detail: Some("a late reconciler".into()),
        warnings: vec![],
        target_id: None,
        before: None,
        after: None,
        graph: None,
        duration_ms: 1,
        actor: killswitch::audit::Actor::Service,
    };
    let entries_before = rig.verify("contoso").await.entries;
    assert!(!rig.store.finish_action(&late).await.unwrap());
    assert_eq!(
        rig.verify("contoso").await.entries,
        entries_before,
        "the late entry was rolled back"
    );
    assert_eq!(
        outcomes_of(&rig, "contoso", &record.id.to_string()).await,
        [Outcome::Succeeded]
    );
    assert_eq!(
        rig.store.action(record.id).await.unwrap().unwrap().state,
        ActionState::Succeeded
    );
}

#[tokio::test]
async fn refused_outcomes_among_other_appends_to_the_chain_leave_it_whole() {
    let rig = Rig::new(Duration::from_secs(5)).await;
    let done = rig
        .remediator
        .execute(request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap();
    let record = done.record();
    let entries_before = rig.verify("contoso").await.entries;
    let late = |n: u64| killswitch::remediation::action::Finish {
        id: record.id,
        customer: "contoso".parse().unwrap(),
        outcome: Outcome::Failed,
        detail: Some(format!("late reconciler {n}")),
        warnings: vec![],
        target_id: None,
        before: None,
        after: None,
        graph: None,
        duration_ms: 1,
        actor: killswitch::audit::Actor::Service,
    };
    let chain: killswitch::domain::ChainId = "contoso".parse().unwrap();
    let note = |n: u64| AuditEvent::ConsentFailed {
        tenant_id: None,
        reason: format!("append {n}"),
    };
    // Submitted together, so one write batch (SQLite) seals a refused outcome between appends
    // to the same chain: what it sealed must go, and the appends after it chain onto the last
    // entry that stays.
    let store = &rig.store;
    let service = killswitch::audit::Actor::Service;
    let writes: Vec<futures::future::BoxFuture<'_, Option<u64>>> = (0..3)
        .flat_map(|n| {
            let (chain, service) = (&chain, &service);
            let append: futures::future::BoxFuture<'_, Option<u64>> =
                Box::pin(
                    async move { Some(store.append(chain, service, &note(n)).await.unwrap().seq) },
                );
            let refused: futures::future::BoxFuture<'_, Option<u64>> = Box::pin(async move {
                assert!(!store.finish_action(&late(n)).await.unwrap());
                None
            });
            [append, refused]
        })
        .collect();
    let mut seqs: Vec<u64> = futures::future::join_all(writes)
        .await
        .into_iter()
        .flatten()
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (entries_before + 1..=entries_before + 3).collect::<Vec<_>>()
    );
    assert_eq!(rig.verify("contoso").await.entries, entries_before + 3);
    assert_eq!(
        outcomes_of(&rig, "contoso", &record.id.to_string()).await,
        [Outcome::Succeeded]
    );
}

#[tokio::test]
async fn an_action_entra_will_not_show_is_finished_as_failed_once_reconciliation_gives_up() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::GetUser).await;
    rig.fake.release_hung();
    // Entra stops answering for the tenant (consent withdrawn, tenant gone, an outage).
    rig.fake
        .fail_always(Endpoint::GetUser, Some(Fault::Status(403)));
    rig.clock.advance(Duration::from_millis(1100));

    // Within the give-up time the action waits for the next round.
    assert_eq!(rig.restart().reconcile().await.unwrap(), 0);
    assert_eq!(
        rig.store.action(id).await.unwrap().unwrap().state,
        ActionState::Requested
    );
    // That round held the action for one lease.
    rig.clock.advance(Duration::from_millis(1100));

    let giving_up = rig.restart_with(killswitch::remediation::RemediationSettings {
        give_up_after: Duration::ZERO,
        ..rig.settings.clone()
    });
    assert_eq!(giving_up.reconcile().await.unwrap(), 1);
    assert_eq!(giving_up.reconcile().await.unwrap(), 0, "ended once only");
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Failed);
    assert!(
        record
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("unknown"),
        "{:?}",
        record.detail
    );
    assert_eq!(rig.fake.count(Endpoint::PatchUser), 0);
    assert_eq!(
        outcomes_of(&rig, "contoso", &id.to_string()).await,
        [Outcome::Failed]
    );
    rig.verify("contoso").await;
}

/// Blocks every audit append until [`audit_up`], as a full disk would.
async fn audit_down(rig: &Rig) {
    if rig.db.is_postgres() {
        exec(
            rig,
            "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; \
             CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_down();",
        )
        .await;
    } else {
        exec(rig, "CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk full'); END;").await;
    }
}

async fn audit_up(rig: &Rig) {
    let sql = if rig.db.is_postgres() {
        "DROP TRIGGER audit_down ON audit_entries"
    } else {
        "DROP TRIGGER audit_down"
    };
    exec(rig, sql).await;
}

#[tokio::test]
async fn when_the_outcome_cannot_be_written_the_caller_hears_requested_and_reconciliation_ends_it()
{
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.fake.fail_next(Endpoint::PatchUser, 1, Fault::Hang);
    let remediator = rig.remediator.clone();
    let running = tokio::spawn(async move {
        remediator
            .execute(request("contoso", Operation::Disable, ALICE_UPN))
            .await
    });
    wait_until("the PATCH hangs", || rig.fake.hung_count() == 1).await;
    audit_down(&rig).await;
    rig.fake.release_hung();

    // Entra changed the account, so the caller must not hear "nothing was done".
    let executed = running.await.unwrap().unwrap();
    assert_eq!(executed.record().state, ActionState::Requested);
    assert!(!rig.fake.user(CONTOSO, ALICE_UPN).unwrap().account_enabled);

    audit_up(&rig).await;
    rig.clock.advance(Duration::from_millis(1100));
    assert_eq!(rig.restart().reconcile().await.unwrap(), 1);
    let id = &executed.record().id;
    assert_eq!(
        rig.store.action(*id).await.unwrap().unwrap().state,
        ActionState::Succeeded
    );
    assert_eq!(
        outcomes_of(&rig, "contoso", &id.to_string()).await,
        [Outcome::Succeeded]
    );
    rig.verify("contoso").await;
}

#[tokio::test]
async fn an_unreadable_interrupted_action_does_not_keep_the_others_from_their_outcome() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let id = crash_during(&rig, Endpoint::GetUser).await;
    rig.fake.release_hung();
    // A row no release of killswitch writes: its actor is not JSON.
    exec(
        &rig,
        "INSERT INTO actions (id, customer, operation, account, state, reason, revoke_sessions, \
         request_hash, actor, requested_seq, created_at, lease_until) VALUES \
         ('00000000-0000-4000-8000-0000000000ff', 'contoso', 'disable', 'bob@contoso.onmicrosoft.com', \
         'requested', 'phished', FALSE, 'h', 'not json', 1, '2026-01-01T00:00:00.000000Z', \
         '2026-01-01T00:00:00.000000Z')",
    )
    .await;
    rig.clock.advance(Duration::from_millis(1100));

    assert_eq!(rig.restart().reconcile().await.unwrap(), 1);
    let record = rig.store.action(id).await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Succeeded, "carried through");
}
