//! A full disk on SQLite: the write batch that hit it fails as a whole, nothing of it is kept,
//! and the writer goes on with a fresh connection once there is room again, the chain intact.

use std::sync::Arc;

use killswitch::audit::append::Sealer;
use killswitch::audit::{Actor, AuditEvent, AuditKey};
use killswitch::domain::ChainId;
use killswitch::reports::check;
use killswitch::store::sqlite::SqliteStore;
use killswitch::store::{AuditStore, StoreOptions};

fn event(reason: String) -> AuditEvent {
    AuditEvent::ConsentFailed {
        tenant_id: None,
        reason,
    }
}

#[tokio::test]
async fn after_a_full_disk_the_sqlite_writer_recovers_and_the_chain_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(AuditKey::generate().unwrap());
    let store = SqliteStore::open(
        &format!("sqlite://{}/killswitch.db", dir.path().display()),
        StoreOptions {
            create_if_missing: true,
            migrate: true,
            sealer: Some(Arc::new(Sealer::new(key.clone(), 1000))),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let chain: ChainId = "contoso".parse().unwrap();
    for n in 0..10 {
        store
            .append(&chain, &Actor::Service, &event(format!("before {n}")))
            .await
            .unwrap();
    }

    // The disk is full: the writer's connection may not grow the file any more.
    store
        .write(|conn| {
            Box::pin(async move {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA max_page_count = {pages}"
                )))
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    let big = "x".repeat(200_000);
    let refused = store
        .append(&chain, &Actor::Service, &event(big.clone()))
        .await;
    assert!(refused.is_err(), "the append that needs room must fail");

    // The failed batch took its connection with it; the next one has room again.
    for n in 0..10 {
        store
            .append(&chain, &Actor::Service, &event(format!("after {n}")))
            .await
            .unwrap_or_else(|e| panic!("append {n} after the full disk: {e}"));
    }
    let head = store.head("contoso").await.unwrap().unwrap();
    assert_eq!(head.seq, 20, "the refused append left no entry and no gap");
    let keys = check::keyring(&store, [key.public_key()]).await.unwrap();
    let summary = check::check_chain(&store, &keys, "contoso")
        .await
        .unwrap()
        .unwrap_or_else(|b| panic!("the chain is broken: {b:?}"));
    assert_eq!(summary.entries, 20);
}
