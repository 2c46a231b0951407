//! Upgrades: a database written by an earlier release keeps its meaning after the new
//! migrations run (on SQLite and PostgreSQL).

use killswitch::remediation::action::{ActionState, Denial};
use killswitch::store::{ActionFilter, Backend};
use sqlx::Connection;

use crate::common::TestDb;

/// Applies the migrations an earlier release shipped: those numbered up to `last`.
async fn migrate_to(db: &TestDb, last: i64) {
    match db.backend() {
        Backend::Sqlite => {
            let url = format!("{}?mode=rwc", db.url);
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let migrator = &killswitch::store::sqlite::MIGRATOR;
            migrator.run_to(last, &mut conn).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let migrator = &killswitch::store::postgres::MIGRATOR;
            migrator.run_to(last, &mut conn).await.unwrap();
        }
    }
}

/// An action row as release 0006 wrote a denial: the kind only in the detail's words.
fn denied_row(id: &str, detail: &str) -> String {
    format!(
        "INSERT INTO actions (id, customer, operation, account, state, reason, revoke_sessions, \
         request_hash, actor, detail, requested_seq, outcome_seq, created_at, lease_until, finished_at, duration_ms) \
         VALUES ('{id}', 'contoso', 'disable', 'alice@contoso.example', 'denied', 'phished', FALSE, 'h', \
         '{{\"type\":\"service\"}}', '{detail}', 1, 2, '2026-11-01T03:00:00.000000Z', \
         '2026-11-01T03:00:00.000000Z', '2026-11-01T03:00:00.000000Z', 0)"
    )
}

#[tokio::test]
async fn actions_denied_before_the_denial_column_keep_their_kind_after_the_upgrade() {
    let db = TestDb::new().await;
    migrate_to(&db, 6).await;
    let mut raw = db.raw().await;
    for sql in [
        "INSERT INTO customers (slug, name, domain, tenant_id, policy, created_at, updated_at) VALUES \
         ('contoso', 'Contoso', 'contoso.example', '11111111-1111-1111-1111-111111111111', '{}', \
         '2026-11-01T03:00:00.000000Z', '2026-11-01T03:00:00.000000Z')"
            .to_owned(),
        denied_row(
            "00000000-0000-4000-8000-000000000001",
            "rate limit: 5 actions in the last hour for this customer, the policy allows 5; nothing was sent to Entra",
        ),
        denied_row(
            "00000000-0000-4000-8000-000000000002",
            "the account is on the customer''s protected list (break-glass or service account); nothing was sent to Entra",
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    drop(raw);

    let (store, _key) = db.store(1000).await;
    // A release before the column, still running beside this one during an upgrade, writes a
    // denial without its kind.
    let mut raw = db.raw().await;
    sqlx::query(sqlx::AssertSqlSafe(denied_row(
        "00000000-0000-4000-8000-000000000003",
        "rate limit: 6 actions in the last hour for this customer, the policy allows 5; nothing was sent to Entra",
    )))
    .execute(&mut raw)
    .await
    .unwrap();
    drop(raw);
    let filter = ActionFilter {
        limit: 10,
        ..ActionFilter::default()
    };
    let mut actions = store.actions(&filter).await.unwrap();
    actions.sort_by_key(|a| a.id);
    let kinds: Vec<_> = actions.iter().map(|a| (a.state, a.denial)).collect();
    assert_eq!(
        kinds,
        [
            (ActionState::Denied, Some(Denial::HourlyLimit)),
            (ActionState::Denied, Some(Denial::ProtectedAccount)),
            (ActionState::Denied, Some(Denial::HourlyLimit)),
        ]
    );
}
