//! Recovery after a crash, and two instances under load, with real `killswitch serve`
//! processes (this build's binary) killed with SIGKILL.
//!
//! (a) Restart → settled: 500 disables in flight on one instance with 50 ms per Graph call, the
//!     instance killed once all are recorded, and started again on the same address (so under
//!     the same instance name): time from the restart until every interrupted action has its
//!     outcome. Aim ≤ 10 s. Then the same with no restart, a second instance taking over once
//!     the dead one's heartbeat is older than `instance.dead_after_secs` (10 s).
//! (b) Two instances on one PostgreSQL: 10,000 disables/enables across 50 customers and
//!     10,000 signed webhooks, 100 in flight, clients alternating, one instance killed halfway
//!     and restarted: requests/s, actions settled, duplicate PATCHes (must be 0).
//!
//! Run: `cargo bench --bench recovery` (SQLite for (a); (b) needs PostgreSQL); add
//! `BENCH_DATABASE_URL=postgres://…` to run both on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/it/common/mod.rs"]
mod common;
#[path = "../tests/it/load.rs"]
mod load;

use std::time::Duration;

use common::TestDb;
use load::LoadSize;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let server = std::env::var("BENCH_DATABASE_URL").ok();
    let backend = if server.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    println!("(a) restart → every interrupted action settled ({backend}, 50 ms per Graph call)");
    let db = TestDb::on(server.as_deref()).await;
    let restarted = load::recovery(&db, 500, Duration::from_millis(50), true).await;
    println!(
        "    {} interrupted; listening {:.2?} after the kill; all settled {:.2?} after the restart (aim ≤ 10 s); {} carried through, {} duplicate PATCHes",
        restarted.interrupted,
        restarted.listening_after.unwrap_or_default(),
        restarted.settled_after,
        restarted.redriven,
        restarted.duplicate_patches
    );
    let db = TestDb::on(server.as_deref()).await;
    let taken_over = load::recovery(&db, 500, Duration::from_millis(50), false).await;
    println!(
        "    not restarted: the other instance settled all {} {:.2?} after the kill (heartbeat limit 10 s, aim ≤ 10 s after it); {} carried through, {} duplicate PATCHes",
        taken_over.interrupted,
        taken_over.settled_after,
        taken_over.redriven,
        taken_over.duplicate_patches
    );

    let Some(server) = server else {
        println!("(b) two instances need PostgreSQL: set BENCH_DATABASE_URL=postgres://…");
        return;
    };
    println!("(b) two instances on one PostgreSQL, one killed halfway and restarted");
    let db = TestDb::on(Some(&server)).await;
    let report = load::run(
        &db,
        LoadSize {
            customers: 50,
            actions: 10_000,
            webhooks: 10_000,
            in_flight: 100,
        },
    )
    .await;
    println!("    {report} (duplicates must be 0)");
}
