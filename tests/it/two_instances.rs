//! Two `killswitch serve` processes on one PostgreSQL database under load, clients alternating
//! between them; one is killed with SIGKILL halfway and restarted. Every request is answered or
//! its action settled, each action has exactly one outcome, no account gets a PATCH beyond its
//! action and documented re-drives, every chain verifies, every detection is stored once.
//! Several instances are a PostgreSQL deployment: on SQLite the test has nothing to run.

use crate::common::TestDb;
use crate::load::{self, LoadSize};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgresql_keep_every_invariant_when_one_is_killed_under_load() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("two instances run on PostgreSQL only; skipped on SQLite");
        return;
    }
    let report = load::run(
        &db,
        LoadSize {
            customers: 50,
            actions: 2_000,
            webhooks: 2_000,
            in_flight: 100,
        },
    )
    .await;
    eprintln!("{report}");
    assert_eq!(report.duplicate_patches, 0);
}
