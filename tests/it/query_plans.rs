//! The hot path's queries use an index on both databases: their cost must not grow with the
//! audit log, the actions or the detections already stored. Each query is EXPLAINed as the
//! store sends it (SQLite: `EXPLAIN QUERY PLAN`; PostgreSQL: `EXPLAIN` with sequential scans
//! priced out, so a plan that still scans a table has no index to use).

use crate::common::TestDb;

use killswitch::store::domain_sql::ACTION_COLUMNS;
use killswitch::store::{
    ANALYST_COLUMNS, DETECTION_COLUMNS, audit_sql, detections_sql, domain_sql, onboarding_sql,
};
use sqlx::{Any, Row};

/// A value bound to a placeholder.
#[derive(Clone, Copy)]
enum Bind {
    Text(&'static str),
    Int(i64),
}

const NOW: Bind = Bind::Text("2026-12-01T03:00:00.000000Z");
const CHAIN: Bind = Bind::Text("contoso");

/// The reads each action, webhook and reconciliation round makes, by what they are for.
fn hot_queries() -> Vec<(&'static str, String, Vec<Bind>)> {
    let text = |s: &str| s.to_owned();
    vec![
        (
            "action: the analyst behind a token",
            format!("SELECT {ANALYST_COLUMNS} FROM analysts WHERE token_hash = $1"),
            vec![Bind::Text("h")],
        ),
        (
            "action: the customer",
            text(domain_sql::SELECT_CUSTOMER),
            vec![CHAIN],
        ),
        (
            "action: a replayed idempotency key",
            format!(
                "SELECT {ACTION_COLUMNS} FROM actions WHERE customer = $1 AND idempotency_key = $2"
            ),
            vec![CHAIN, Bind::Text("k")],
        ),
        (
            "action: the customer's hourly limit",
            text(
                "SELECT COUNT(*) FROM actions WHERE customer = $1 AND created_at > $2 AND state <> 'denied'",
            ),
            vec![CHAIN, NOW],
        ),
        (
            "action: the chain's head",
            text(audit_sql::SELECT_HEAD),
            vec![CHAIN],
        ),
        (
            "action: read back",
            domain_sql::select_action_sql(),
            vec![Bind::Text("00000000-0000-0000-0000-000000000001")],
        ),
        (
            "webhook: the customer and its secrets",
            text(onboarding_sql::CUSTOMER_WITH_SECRETS),
            vec![CHAIN, NOW],
        ),
        (
            "webhook: a detection already known",
            format!(
                "SELECT {DETECTION_COLUMNS} FROM detections WHERE customer = $1 AND composite_id = $2"
            ),
            vec![CHAIN, Bind::Text("cid")],
        ),
        (
            "reconciliation: interrupted actions",
            domain_sql::stale_actions_sql(),
            vec![NOW, NOW, Bind::Text("")],
        ),
        (
            "reconciliation: undecided detections",
            detections_sql::undecided_sql(),
            vec![NOW, NOW, Bind::Text("")],
        ),
        (
            "checkpoint: the last signed seq",
            text(audit_sql::LAST_CHECKPOINT_SEQ),
            vec![CHAIN],
        ),
        (
            "export: a range of entries",
            text(audit_sql::SELECT_ENTRY_RANGE),
            vec![CHAIN, Bind::Int(1), Bind::Int(1000)],
        ),
    ]
}

/// The plan's lines, one per step.
async fn plan(db: &TestDb, sql: &str, binds: &[Bind]) -> Vec<String> {
    let mut conn = db.raw().await;
    let explain = if db.is_postgres() {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut conn)
            .await
            .unwrap();
        format!("EXPLAIN {sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {sql}")
    };
    let mut query = sqlx::query::<Any>(sqlx::AssertSqlSafe(explain));
    for bind in binds {
        query = match *bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(n) => query.bind(n),
        };
    }
    let column = if db.is_postgres() { 0 } else { 3 };
    query
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot EXPLAIN {sql}: {e}"))
        .iter()
        .map(|row| row.get::<String, _>(column))
        .collect()
}

/// A step that reads a whole table rather than searching an index.
fn scans_a_table(step: &str) -> bool {
    let step = step.trim();
    // SQLite: "SCAN actions" (a partial index of unfinished actions, or of undecided
    // detections, is small by design).
    let partial = ["actions_unfinished", "detections_undecided"];
    let sqlite_scan =
        step.starts_with("SCAN ") && !partial.iter().any(|index| step.contains(index));
    let postgres_scan = step.contains("Seq Scan on");
    sqlite_scan || postgres_scan
}

#[tokio::test]
async fn the_hot_path_queries_search_an_index_on_both_databases() {
    let db = TestDb::new().await;
    // Open once, so the schema is migrated.
    let _ = db.store(1000).await;
    let mut scans = Vec::new();
    for (what, sql, binds) in hot_queries() {
        let steps = plan(&db, &sql, &binds).await;
        assert!(!steps.is_empty(), "{what}: no plan");
        if steps.iter().any(|s| scans_a_table(s)) {
            scans.push(format!("{what}:\n  {}", steps.join("\n  ")));
        }
    }
    assert!(
        scans.is_empty(),
        "table scans on the hot path ({}):\n{}",
        db.backend().name(),
        scans.join("\n")
    );
}
