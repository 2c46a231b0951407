//! Upgrades: a database written by an earlier release keeps its meaning after the new
//! migrations run (on SQLite and PostgreSQL), and a released migration is never edited: each
//! file must still have the SHA-256 recorded in `migrations/manifest.sha256`.

use std::collections::BTreeMap;
use std::path::Path;

use killswitch::remediation::action::{ActionState, Denial};
use killswitch::store::{ActionFilter, Backend};
use sha2::{Digest, Sha256};
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

/// What disagrees between the migration files under `root` (the repository's `migrations/`)
/// and `root/manifest.sha256`, the SHA-256 of each file as it was released; empty when all agree.
fn manifest_problems(root: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(root.join(MANIFEST))
        .unwrap_or_else(|e| panic!("cannot read migrations/{MANIFEST}: {e}"));
    let mut problems = Vec::new();
    let mut listed = BTreeMap::new();
    for (n, line) in manifest.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        match line.split_once("  ") {
            Some((hash, path)) if hash.len() == 64 && !path.is_empty() => {
                if listed.insert(path.to_owned(), hash.to_owned()).is_some() {
                    problems.push(format!("{path} is listed twice in migrations/{MANIFEST}"));
                }
            }
            _ => problems.push(format!(
                "line {} of migrations/{MANIFEST} is not `<sha256>  <path>`",
                n + 1
            )),
        }
    }
    for (path, released) in &listed {
        match std::fs::read(root.join(path)) {
            Ok(bytes) if const_hex::encode(Sha256::digest(&bytes)) == *released => {}
            Ok(_) => problems.push(format!(
                "migration {path} changed after release; applied migrations never change, \
                 add a new migration instead"
            )),
            Err(_) => problems.push(format!(
                "migration {path} is listed in migrations/{MANIFEST} but is gone; a released \
                 migration is never removed or renamed"
            )),
        }
    }
    for folder in ["sqlite", "postgres"] {
        let mut files: Vec<String> = std::fs::read_dir(root.join(folder))
            .unwrap()
            .map(|file| format!("{folder}/{}", file.unwrap().file_name().to_string_lossy()))
            .collect();
        files.sort();
        for path in files {
            if !listed.contains_key(&path) {
                problems.push(format!(
                    "migration {path} is not in the manifest: add it to \
                     migrations/{MANIFEST} (see migrations/README.md)"
                ));
            }
        }
    }
    problems
}

const MANIFEST: &str = "manifest.sha256";

#[test]
fn released_migrations_are_unchanged_and_every_migration_is_in_the_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let problems = manifest_problems(&root);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_manifest_check_names_a_changed_an_unlisted_and_a_removed_migration() {
    let released = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let copy = tempfile::tempdir().unwrap();
    let root = copy.path();
    std::fs::copy(released.join(MANIFEST), root.join(MANIFEST)).unwrap();
    for folder in ["sqlite", "postgres"] {
        std::fs::create_dir(root.join(folder)).unwrap();
        for file in std::fs::read_dir(released.join(folder)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), root.join(folder).join(file.file_name())).unwrap();
        }
    }
    // Only files the manifest lists: a migration being added beside this test is not one.
    let listed: Vec<String> = std::fs::read_to_string(root.join(MANIFEST))
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once("  ").map(|(_, path)| path.to_owned()))
        .collect();
    for folder in ["sqlite", "postgres"] {
        for file in std::fs::read_dir(root.join(folder)).unwrap() {
            let file = file.unwrap();
            let path = format!("{folder}/{}", file.file_name().to_string_lossy());
            if !listed.contains(&path) {
                std::fs::remove_file(file.path()).unwrap();
            }
        }
    }
    assert_eq!(manifest_problems(root), Vec::<String>::new());

    let mut edited = std::fs::read_to_string(root.join("sqlite/0003_analysts.sql")).unwrap();
    edited.push_str("\n-- a harmless-looking comment\n");
    std::fs::write(root.join("sqlite/0003_analysts.sql"), edited).unwrap();
    std::fs::remove_file(root.join("postgres/0005_detections.sql")).unwrap();
    std::fs::write(root.join("postgres/0099_new.sql"), "SELECT 1;\n").unwrap();
    assert_eq!(
        manifest_problems(root),
        [
            "migration postgres/0005_detections.sql is listed in migrations/manifest.sha256 but \
             is gone; a released migration is never removed or renamed",
            "migration sqlite/0003_analysts.sql changed after release; applied migrations never \
             change, add a new migration instead",
            "migration postgres/0099_new.sql is not in the manifest: add it to \
             migrations/manifest.sha256 (see migrations/README.md)",
        ]
    );
}
