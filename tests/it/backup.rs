//! `killswitch backup FILE`: a copy of the SQLite database taken while the service writes
//! verifies, restores into a new data folder, and the restored service carries its chains on;
//! an existing file is never overwritten, and PostgreSQL is pointed at pg_dump.

use crate::cli::{killswitch, run};
use crate::common::{TestDb, entra};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use killswitch::app::Services;
use killswitch::audit::event::Operation;
use killswitch::audit::{Actor, AuditEvent};
use killswitch::customers::Policy;
use killswitch::domain::ChainId;
use killswitch::store::Store;
use serde_json::Value;

const ALICE_UPN: &str = "alice@contoso.onmicrosoft.com";

/// Entries per chain, from the JSON of `audit check` or `backup`.
fn entries_per_chain(report: &Value) -> BTreeMap<String, u64> {
    assert_eq!(report["intact"], true, "{report}");
    report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["intact"], true, "{c}");
            (
                c["chain"].as_str().unwrap().to_owned(),
                c["entries"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn audit_check(db: &TestDb) -> BTreeMap<String, u64> {
    let (code, stdout, stderr) = run(killswitch(db).args(["audit", "check", "--json"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    entries_per_chain(&serde_json::from_str(&stdout).unwrap())
}

/// Every file in `dir`: a backup leaves its target and nothing else (no partial copy).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn append_note(store: &Arc<dyn Store>, chain: &ChainId, n: u64) {
    store
        .append(
            chain,
            &Actor::Service,
            &AuditEvent::ConsentFailed {
                tenant_id: None,
                reason: format!("note {n}"),
            },
        )
        .await
        .unwrap();
}

/// Disables and enables alice in turn, and appends to a second chain (signing a checkpoint
/// now and then), until `stop`; counts what it did in `done`.
fn write_load(
    services: &Services,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let remediator = services.remediator.clone().unwrap();
    let (stop_actions, done_actions) = (stop.clone(), done.clone());
    let actions = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop_actions.load(Ordering::Relaxed) {
            let operation = if n.is_multiple_of(2) {
                Operation::Disable
            } else {
                Operation::Enable
            };
            remediator
                .execute(entra::request("contoso", operation, ALICE_UPN))
                .await
                .unwrap();
            n += 1;
            done_actions.fetch_add(1, Ordering::Relaxed);
        }
    });
    let store = services.store.clone();
    let notes = tokio::spawn(async move {
        let chain: ChainId = "northwind".parse().unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            append_note(&store, &chain, n).await;
            if n.is_multiple_of(25) {
                store.checkpoint(&chain).await.unwrap();
            }
            n += 1;
            done.fetch_add(1, Ordering::Relaxed);
        }
    });
    vec![actions, notes]
}

async fn wait_for(done: &AtomicU64, at_least: u64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while done.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the write load made no progress");
}

/// The data folder an operator restores into: the backup as its database, and the two key
/// files, which are not in the database, copied beside it.
fn restore(backup: &Path, from: &TestDb) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(backup, dir.path().join("killswitch.db")).unwrap();
    for key in ["audit-signing.key", "mfa-encryption.key"] {
        std::fs::copy(from.dir.path().join(key), dir.path().join(key)).unwrap();
    }
    TestDb {
        url: format!("sqlite://{}/killswitch.db", dir.path().display()),
        dir,
    }
}

#[tokio::test]
async fn a_backup_taken_under_write_load_verifies_restores_and_the_restored_service_continues_the_chains()
 {
    let db = TestDb::new().await;
    if db.is_postgres() {
        // `backup` copies SQLite only; PostgreSQL is backed up with pg_dump (docs/operations.md)
        // and its refusal is tested below.
        return;
    }
    let fake = entra::fake_entra().await;
    let base = fake.base_url();
    let entra_settings = entra::settings(&base);
    let services = Services::open(&db.settings(&entra_settings)).await.unwrap();
    let policy = Policy {
        max_actions_per_hour: 100_000,
        ..Policy::default()
    };
    entra::add_customer(&services.store, "contoso", entra::CONTOSO, policy).await;

    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = write_load(&services, stop.clone(), done.clone());
    wait_for(&done, 30).await;
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("killswitch-backup.db");
    let mut command = killswitch(&db);
    command.args(["backup", "--json"]).arg(&file);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run(&mut command))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Writes go on after the copy was taken: the copy is a snapshot, not the end state.
    let after_backup = done.load(Ordering::Relaxed);
    wait_for(&done, after_backup + 20).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let report: Value = serde_json::from_str(&stdout).unwrap();
    let backed_up = entries_per_chain(&report);
    assert_eq!(
        backed_up.keys().collect::<Vec<_>>(),
        ["contoso", "northwind", "system"],
        "{report}"
    );
    assert_eq!(report["path"], file.display().to_string());
    assert_eq!(
        report["bytes"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    assert_eq!(files_in(backups.path()), ["killswitch-backup.db"]);
    let live = audit_check(&db);
    assert!(
        live["northwind"] > backed_up["northwind"] || live["contoso"] > backed_up["contoso"],
        "live {live:?}, backed up {backed_up:?}"
    );

    let restored = restore(&file, &db);
    assert_eq!(audit_check(&restored), backed_up);

    let services = Services::open(&restored.settings(&entra_settings))
        .await
        .unwrap();
    services
        .remediator
        .clone()
        .unwrap()
        .execute(entra::request("contoso", Operation::Disable, ALICE_UPN))
        .await
        .unwrap();
    append_note(&services.store, &"northwind".parse().unwrap(), 1_000).await;
    drop(services);
    let mut expected = backed_up.clone();
    *expected.get_mut("contoso").unwrap() += 2;
    *expected.get_mut("northwind").unwrap() += 1;
    assert_eq!(
        audit_check(&restored),
        expected,
        "the restored service appends to the chains it found, with the same key"
    );
}

#[tokio::test]
async fn backup_refuses_an_existing_file_and_leaves_it_as_it_was() {
    let db = TestDb::new().await;
    if db.is_postgres() {
        // On PostgreSQL `backup` refuses before looking at the file (tested below).
        return;
    }
    let (code, _, stderr) = run(killswitch(&db).args(["migrate"]));
    assert_eq!(code, 0, "{stderr}");
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("monday.db");
    std::fs::write(&file, "last week's backup").unwrap();

    let (code, stdout, stderr) = run(killswitch(&db).arg("backup").arg(&file));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim(),
        format!(
            "killswitch: {} exists; backup never overwrites a file: give a new name",
            file.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "last week's backup"
    );
    assert_eq!(files_in(backups.path()), ["monday.db"]);
}

#[tokio::test]
async fn a_copy_whose_chain_does_not_verify_is_deleted_and_the_backup_fails() {
    let db = TestDb::new().await;
    if db.is_postgres() {
        // SQLite only, like the command.
        return;
    }
    let (code, _, stderr) = run(killswitch(&db).args(["migrate"]));
    assert_eq!(code, 0, "{stderr}");
    let mut conn = db.raw().await;
    for sql in [
        "DROP TRIGGER audit_entries_no_update",
        "UPDATE audit_entries SET entry = replace(entry, 'key_registered', 'key_registerex') WHERE chain = 'system' AND seq = 1",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    drop(conn);
    let backups = tempfile::tempdir().unwrap();

    let (code, stdout, stderr) = run(killswitch(&db)
        .args(["backup", "--json"])
        .arg(backups.path().join("b.db")));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .starts_with("killswitch: the copy's chain system does not verify (first bad seq 1: "),
        "{stderr}"
    );
    assert!(
        files_in(backups.path()).is_empty(),
        "{:?}",
        files_in(backups.path())
    );
}

#[tokio::test]
async fn backup_on_postgresql_is_one_line_pointing_to_pg_dump() {
    let db = TestDb::new().await;
    // Refused before connecting: on SQLite runs, an address where no server listens will do.
    let url = if db.is_postgres() {
        db.url.clone()
    } else {
        "postgres://killswitch@127.0.0.1:1/killswitch".to_owned()
    };
    let file = db.dir.path().join("backup.db");
    let (code, stdout, stderr) = run(killswitch(&db)
        .env("KILLSWITCH_DATABASE__URL", &url)
        .args(["backup", "--json"])
        .arg(&file));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "killswitch: backup copies the SQLite database only; back up PostgreSQL with \
         `pg_dump --format=custom` (see docs/operations.md)"
    );
    assert!(!file.exists());
}
