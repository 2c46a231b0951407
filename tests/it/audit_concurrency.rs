//! Invariant 3 under load: concurrent writers never fork or gap a chain (PostgreSQL: 16 × 1,000
//! appends to one customer; SQLite: 8 × 500), and chains of different customers stay apart.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;

use common::TestDb;
use futures::TryStreamExt;
use killswitch::audit::{Actor, AuditEvent, Entry};
use killswitch::domain::ChainId;
use killswitch::store::Store;

fn event(writer: usize, n: usize) -> AuditEvent {
    AuditEvent::ConsentFailed {
        tenant_id: None,
        reason: format!("writer {writer} append {n}"),
    }
}

async fn hammer(store: Arc<dyn Store>, chain: ChainId, writer: usize, appends: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(appends);
    for n in 0..appends {
        seqs.push(
            store
                .append(&chain, &Actor::Service, &event(writer, n))
                .await
                .unwrap()
                .seq,
        );
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_one_customer_leave_a_gap_free_fork_free_chain() {
    let db = TestDb::new().await;
    let (writers, appends) = if db.is_postgres() {
        (16, 1000)
    } else {
        (8, 500)
    };
    let (store, _) = db.store(1000).await;
    let chain: ChainId = "contoso".parse().unwrap();

    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(hammer(store.clone(), chain.clone(), w, appends)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's appends must stay in order"
        );
        all.extend(seqs);
    }
    let total = writers * appends;
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=total as u64).collect::<Vec<_>>(),
        "every seq handed out exactly once"
    );

    // Every event is stored exactly once, and the stored chain verifies end to end.
    let stored: Vec<_> = store.entries("contoso").try_collect().await.unwrap();
    let reasons: HashSet<String> = stored
        .iter()
        .map(
            |row| match serde_json::from_str::<Entry>(&row.entry).unwrap().event {
                AuditEvent::ConsentFailed { reason, .. } => reason,
                other => panic!("unexpected {other:?}"),
            },
        )
        .collect();
    assert_eq!(reasons.len(), total);
    let summary = common::verify_chain(&store, "contoso").await;
    assert_eq!(summary.entries, total as u64);
    assert_eq!(
        summary.checkpoints,
        (total / 1000) as u64,
        "a checkpoint at every 1,000th entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_many_customers_keep_each_chain_separate_and_whole() {
    let db = TestDb::new().await;
    let (store, _) = db.store(50).await;
    let customers = ["contoso", "fabrikam", "northwind", "tailspin"];
    let tasks: Vec<_> = customers
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            let chain: ChainId = name.parse().unwrap();
            let store = store.clone();
            (0..3).map(move |w| tokio::spawn(hammer(store.clone(), chain.clone(), i * 10 + w, 100)))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (i, name) in customers.iter().enumerate() {
        let summary = common::verify_chain(&store, name).await;
        assert_eq!((summary.entries, summary.checkpoints), (300, 6), "{name}");
        let stored: Vec<_> = store.entries(name).try_collect().await.unwrap();
        for row in stored {
            let entry: Entry = serde_json::from_str(&row.entry).unwrap();
            let AuditEvent::ConsentFailed { reason, .. } = entry.event else {
                panic!()
            };
            let writer: usize = reason.split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(
                writer / 10,
                i,
                "{name} holds an entry written for another customer"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_interleave_appends_without_forking() {
    // Two stores on one database stand for two processes: the server and a CLI command beside
    // it (SQLite), or two instances behind a load balancer (PostgreSQL).
    let db = TestDb::new().await;
    let (first, key) = db.store(1000).await;
    let second = db.store_with_key(key.clone(), 1000).await;
    let chain: ChainId = "contoso".parse().unwrap();
    for round in 0..20 {
        let store = if round % 3 == 0 { &second } else { &first };
        store
            .append(&chain, &Actor::Service, &event(round, round))
            .await
            .unwrap();
    }
    let both = [
        tokio::spawn(hammer(first.clone(), chain.clone(), 100, 200)),
        tokio::spawn(hammer(second.clone(), chain.clone(), 200, 200)),
    ];
    for task in both {
        task.await.unwrap();
    }
    let summary = common::verify_chain(&first, "contoso").await;
    assert_eq!(summary.entries, 420);
}

/// Appends to several chains at once, every other one an event that calls for a notice, so the
/// writer's batches mix both: each entry that calls for a notice owes exactly one, naming that
/// entry, and no other entry owes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_written_together_each_owe_their_own_notice_and_no_other() {
    let db = TestDb::new().await;
    let (store, _) = db.store(1000).await;
    let chains: Vec<ChainId> = ["contoso", "fabrikam", "northwind"]
        .iter()
        .map(|name| name.parse().unwrap())
        .collect();
    let tasks: Vec<_> = (0..12usize)
        .map(|writer| {
            let (store, chain) = (store.clone(), chains[writer % chains.len()].clone());
            tokio::spawn(async move {
                let mut owed = Vec::new();
                for n in 0..40 {
                    let (event, notice) = if (writer + n) % 2 == 0 {
                        (event(writer, n), true)
                    } else {
                        let detail = format!("writer {writer} append {n}");
                        (
                            AuditEvent::ConnectionTested {
                                ready: true,
                                detail,
                            },
                            false,
                        )
                    };
                    let appended = store.append(&chain, &Actor::Service, &event).await.unwrap();
                    if notice {
                        owed.push((chain.as_str().to_owned(), appended.seq as i64));
                    }
                }
                owed
            })
        })
        .collect();
    let mut expected = Vec::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    expected.sort_unstable();

    let notices = store.owed_notices(10_000).await.unwrap();
    let mut owed: Vec<(String, i64)> = notices
        .iter()
        .map(|notice| (notice.chain.clone(), notice.seq))
        .collect();
    owed.sort_unstable();
    assert_eq!(owed, expected, "one notice per entry that calls for one");
    for notice in &notices {
        assert_eq!(notice.kind, "consent_failed");
        let entry: Entry = serde_json::from_str(&notice.entry).unwrap();
        assert_eq!(
            (entry.chain.as_str(), entry.seq as i64),
            (notice.chain.as_str(), notice.seq)
        );
        assert!(matches!(entry.event, AuditEvent::ConsentFailed { .. }));
    }
    for chain in &chains {
        assert_eq!(
            common::verify_chain(&store, chain.as_str()).await.entries,
            160
        );
    }
}
