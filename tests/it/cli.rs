//! The `killswitch` binary as an operator uses it: start and stop, clear one-line failures,
//! `audit check`, `audit public-key`, `migrate`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::TestDb;
use killswitch::audit::{Actor, AuditEvent, AuditKey};
use killswitch::domain::ChainId;
use serde_json::Value;

pub(crate) fn killswitch(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_killswitch"));
    cmd.current_dir(db.dir.path())
        .env("KILLSWITCH_DATA_DIR", db.dir.path())
        .env("KILLSWITCH_DATABASE__URL", &db.url)
        .env_remove("RUST_LOG");
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn assert_one_clear_line(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    for line in stderr.lines() {
        assert!(
            line.starts_with("killswitch: "),
            "every line names the tool: {stderr}"
        );
    }
}

#[tokio::test]
async fn serve_starts_on_defaults_answers_readyz_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let mut child = killswitch(&db)
        .args(["serve"])
        .env("KILLSWITCH_SERVER__LISTEN", "127.0.0.1:0")
        .env("KILLSWITCH_LOG__FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listen = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let record: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        if record["message"] == "killswitch is serving" {
            break record["listen"].as_str().unwrap().to_owned();
        }
    };
    let ready = reqwest::get(format!("http://{listen}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        db.dir.path().join("audit-signing.key").exists(),
        "key generated into the data folder"
    );

    let (code, stdout, _) = run(killswitch(&db).args(["audit", "check"]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("system: intact, 1 entries, 1 checkpoints verified"),
        "{stdout}"
    );
}

#[tokio::test]
async fn malformed_configuration_gives_one_line_per_problem_and_a_non_zero_exit() {
    let db = TestDb::new().await;
    let (code, stdout, stderr) = run(killswitch(&db)
        .args(["serve"])
        .env("KILLSWITCH_SERVER__LISTEN", "everywhere")
        .env("KILLSWITCH_SERVER__REQUEST_TIMEOUT_SECS", "-5")
        .env("KILLSWITCH_LOG__FORMAT", "yaml")
        .env("KILLSWITCH_ENTRA__GRAPH_URL", "http://graph.example.com"));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_one_clear_line(&stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(lines.contains(&"killswitch: configuration: server.listen (from KILLSWITCH_SERVER__LISTEN): `everywhere` is not an address such as 127.0.0.1:8080"), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("entra.graph_url") && l.contains("must use https")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_broken_config_file_or_a_missing_one_is_one_line() {
    let db = TestDb::new().await;
    let bad = db.dir.path().join("bad.toml");
    std::fs::write(&bad, "[server\nlisten = 1\n").unwrap();
    for file in [bad.to_str().unwrap(), "/nonexistent/killswitch.toml"] {
        let (code, _, stderr) = run(killswitch(&db).args(["--config", file, "migrate"]));
        assert_eq!(code, 1);
        assert_one_clear_line(&stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_one_clear_line_not_a_panic() {
    let db = TestDb::new().await;
    for url in [
        "postgres://killswitch:hunter2@127.0.0.1:1/killswitch",
        "sqlite:///nonexistent/folder/killswitch.db",
    ] {
        let (code, _, stderr) = run(killswitch(&db)
            .args(["audit", "check"])
            .env("KILLSWITCH_DATABASE__URL", url)
            .env("KILLSWITCH_DATABASE__ACQUIRE_TIMEOUT_SECS", "2"));
        assert_eq!(code, 1, "{url}");
        assert_one_clear_line(&stderr);
        assert!(
            stderr.starts_with("killswitch: database unavailable: "),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

#[tokio::test]
async fn audit_check_names_the_first_bad_seq_of_a_tampered_chain() {
    let db = TestDb::new().await;
    let key = std::sync::Arc::new(
        AuditKey::load_or_generate(&db.dir.path().join("audit-signing.key"))
            .unwrap()
            .0,
    );
    let store = db.store_with_key(key, 1000).await;
    let chain: ChainId = "contoso".parse().unwrap();
    for n in 0..7 {
        store
            .append(
                &chain,
                &Actor::Service,
                &AuditEvent::ConsentFailed {
                    tenant_id: None,
                    reason: format!("try {n}"),
                },
            )
            .await
            .unwrap();
    }
    store.checkpoint(&chain).await.unwrap();

    let (code, stdout, _) = run(killswitch(&db).args(["audit", "check", "--customer", "contoso"]));
    assert_eq!(
        (code, stdout.trim()),
        (
            0,
            "contoso: intact, 7 entries, 1 checkpoints verified (newest at seq 7)"
        )
    );

    let mut conn = db.raw().await;
    let drop_trigger = if db.is_postgres() {
        "DROP TRIGGER audit_entries_append_only ON audit_entries"
    } else {
        "DROP TRIGGER audit_entries_no_update"
    };
    sqlx::raw_sql(drop_trigger)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("UPDATE audit_entries SET entry = replace(entry, 'try 4', 'try 9') WHERE chain = 'contoso' AND seq = 5")
        .execute(&mut conn)
        .await
        .unwrap();

    let (code, stdout, _) = run(killswitch(&db).args(["audit", "check"]));
    assert_eq!(code, 1);
    assert!(
        stdout.contains("contoso: BROKEN, first bad seq 5: stored hash does not match"),
        "{stdout}"
    );
    assert!(
        stdout.contains("system: intact"),
        "other chains are still checked: {stdout}"
    );

    let (code, stdout, _) = run(killswitch(&db).args(["audit", "check", "--json"]));
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["intact"], false);
    let contoso = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain"] == "contoso")
        .unwrap();
    assert_eq!(contoso["first_bad_seq"], 5);
}

#[tokio::test]
async fn public_key_prints_the_signing_keys_public_half() {
    let db = TestDb::new().await;
    let (code, _, stderr) = run(killswitch(&db).args(["audit", "public-key"]));
    assert_eq!(
        code, 1,
        "no key yet, and none is created by a read-only command"
    );
    assert_one_clear_line(&stderr);

    let (code, stdout, _) = run(killswitch(&db).args(["migrate"]));
    assert_eq!(code, 0, "{stdout}");
    let key = AuditKey::load(&db.dir.path().join("audit-signing.key")).unwrap();

    let (code, pem, _) = run(killswitch(&db).args(["audit", "public-key"]));
    assert_eq!(code, 0);
    assert_eq!(pem, key.public_key().to_pem().unwrap());
    let (_, json, _) = run(killswitch(&db).args(["audit", "public-key", "--json"]));
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["key_id"], key.key_id().as_str());
    assert_eq!(json["algorithm"], "Ed25519");
    assert_eq!(json["public_key"], key.public_key().to_base64());
}

#[tokio::test]
async fn migrate_is_idempotent_and_registers_the_key_once() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let (code, stdout, stderr) = run(killswitch(&db).args(["migrate"]));
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with("database is up to date"), "{stdout}");
    }
    let (code, stdout, _) = run(killswitch(&db).args(["audit", "check", "--json"]));
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["chains"][0]["chain"], "system");
    assert_eq!(report["chains"][0]["entries"], 1);
}

#[tokio::test]
async fn commands_reject_an_invalid_customer_slug_in_one_line() {
    let db = TestDb::new().await;
    let (code, _, stderr) =
        run(killswitch(&db).args(["audit", "check", "--customer", "Not A Slug"]));
    assert_eq!(code, 1);
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("is not a customer slug"), "{stderr}");
}

#[tokio::test]
async fn audit_export_writes_a_file_that_audit_verify_accepts_and_tampering_fails() {
    let db = TestDb::new().await;
    let dir = db.dir.path();
    let tenant = uuid::Uuid::new_v4().to_string();
    let (code, _, stderr) = run(killswitch(&db).args([
        "customer",
        "add",
        "--slug",
        "contoso",
        "--name",
        "Contoso",
        "--domain",
        "contoso.onmicrosoft.com",
        "--tenant-id",
        &tenant,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(killswitch(&db).args([
        "audit",
        "export",
        "--customer",
        "contoso",
        "--out",
        "export.jsonl",
        "--json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["entries"], 1);
    let (_, pem, _) = run(killswitch(&db).args(["audit", "public-key"]));
    std::fs::write(dir.join("key.pem"), &pem).unwrap();
    let (_, json, _) = run(killswitch(&db).args(["audit", "public-key", "--json"]));
    std::fs::write(dir.join("key.json"), &json).unwrap();
    std::fs::write(
        dir.join("other.pem"),
        AuditKey::generate().unwrap().public_key().to_pem().unwrap(),
    )
    .unwrap();

    for key in ["key.pem", "key.json"] {
        let (code, stdout, stderr) = run(killswitch(&db).args([
            "audit",
            "verify",
            "export.jsonl",
            "--public-key",
            key,
            "--customer",
            "contoso",
        ]));
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(
            stdout.starts_with("intact: contoso (Contoso), entries 1 to 1"),
            "{stdout}"
        );
    }
    // Without --public-key, on the server itself, its own key is used.
    let (code, _, stderr) = run(killswitch(&db).args(["audit", "verify", "export.jsonl"]));
    assert_eq!(code, 0, "{stderr}");
    // From standard input.
    let file = std::fs::File::open(dir.join("export.jsonl")).unwrap();
    let (code, _, stderr) = run(killswitch(&db)
        .args(["audit", "verify", "-", "--public-key", "key.pem"])
        .stdin(file));
    assert_eq!(code, 0, "{stderr}");

    let refusals = [
        (vec!["--public-key", "other.pem"], "export.jsonl", "line 1:"),
        (
            vec!["--public-key", "key.pem", "--customer", "fabrikam"],
            "export.jsonl",
            "line 1:",
        ),
        (vec!["--public-key", "key.pem"], "tampered.jsonl", "line 2:"),
    ];
    let original = std::fs::read_to_string(dir.join("export.jsonl")).unwrap();
    std::fs::write(
        dir.join("tampered.jsonl"),
        original.replacen("\"name\":\"Contoso\"", "\"name\":\"C0ntoso\"", 1),
    )
    .unwrap();
    for (args, file, line) in refusals {
        let (code, stdout, stderr) =
            run(killswitch(&db).args(["audit", "verify", file]).args(&args));
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(
            stdout.starts_with(&format!("NOT INTACT: {line}")),
            "{args:?}: {stdout}"
        );
    }
    let (code, stdout, _) = run(killswitch(&db).args([
        "audit",
        "verify",
        "tampered.jsonl",
        "--public-key",
        "key.pem",
        "--json",
    ]));
    assert_eq!(code, 1);
    let verdict: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (verdict["intact"].as_bool(), verdict["line"].as_u64()),
        (Some(false), Some(2))
    );

    let (code, stdout, _) = run(killswitch(&db).args([
        "audit",
        "export",
        "--customer",
        "contoso",
        "--format",
        "csv",
    ]));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("\"seq\",\"time\",\"actor\""), "{stdout}");

    for (args, says) in [
        (
            vec![
                "audit",
                "export",
                "--customer",
                "contoso",
                "--format",
                "pdf",
            ],
            "not an export format",
        ),
        (
            vec![
                "audit",
                "export",
                "--customer",
                "contoso",
                "--from",
                "2026-13-01",
            ],
            "is not a time",
        ),
        (
            vec!["audit", "export", "--customer", "nowhere"],
            "customer `nowhere` not found",
        ),
        (
            vec![
                "audit",
                "verify",
                "missing.jsonl",
                "--public-key",
                "key.pem",
            ],
            "cannot read missing.jsonl",
        ),
        (
            vec![
                "audit",
                "verify",
                "export.jsonl",
                "--public-key",
                "export.jsonl",
            ],
            "export.jsonl",
        ),
    ] {
        let (code, _, stderr) = run(killswitch(&db).args(&args));
        assert_ne!(code, 0, "{args:?}");
        assert_one_clear_line(&stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!dir.join("nowhere").exists());
}
