//! A customer's witnesses: the signed seq and head hash of its chain that a notice carries. An
//! export agrees with a witness of an entry it holds unless the log was rewritten after the
//! witness was issued; the library, `killswitch audit verify --witness` and
//! docs/verify_export.py reach the same verdict, in the same words, on the same line.

use crate::cli::{killswitch, run};
use crate::common;
use crate::independent_verifier::{SCRIPT, python3};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::TestDb;
use common::export::{analyst, export_bytes, lines};
use killswitch::audit::append::Appended;
use killswitch::audit::event::Operation;
use killswitch::audit::{Actor, AuditEvent, AuditKey, KeyRing, Witness};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{ChainId, TenantId};
use killswitch::reports::export::Format;
use killswitch::reports::export::verify::{BadLine, Expected, Verified, verify_file_with};
use killswitch::store::Store;
use killswitch::time::Timestamp;
use serde_json::Value;
use uuid::Uuid;

async fn add_customer(store: &Arc<dyn Store>, slug: &str) {
    let customer = Customer {
        slug: slug.parse().unwrap(),
        name: format!("{slug} Ltd"),
        domain: format!("{slug}.example"),
        tenant_id: TenantId::new(Uuid::new_v4()),
        policy: Policy::default(),
        created_at: Timestamp::now(),
        connection: None,
    };
    store
        .add_customer(&customer, &Actor::operator())
        .await
        .unwrap();
}

/// Disable requests for `accounts` on `slug`'s chain, each with the reason `reason(i)`; what
/// each append wrote.
async fn disables(
    store: &Arc<dyn Store>,
    slug: &str,
    accounts: std::ops::Range<usize>,
    reason: impl Fn(usize) -> String,
) -> Vec<Appended> {
    let chain = ChainId::Customer(slug.parse().unwrap());
    let mut appended = Vec::new();
    for i in accounts {
        let event = AuditEvent::ActionRequested {
            action_id: Uuid::new_v4(),
            operation: Operation::Disable,
            account: format!("user{i}@{slug}.example"),
            reason: reason(i),
            ticket: Some(format!("INC-{i}")),
            revoke_sessions: false,
            mfa: None,
            request: None,
        };
        appended.push(store.append(&chain, &analyst(slug), &event).await.unwrap());
    }
    appended
}

fn reason(i: usize) -> String {
    format!("Falcon: credential theft on LAPTOP-{i}")
}

/// The 1-based line of `bytes` holding entry `seq`.
fn line_of_entry(bytes: &[u8], seq: u64) -> u64 {
    let at = lines(bytes)
        .iter()
        .position(|line| {
            line.starts_with(b"{\"entry\":")
                && serde_json::from_slice::<Value>(line).unwrap()["entry"]["seq"] == seq
        })
        .unwrap_or_else(|| panic!("no entry {seq} in the export"));
    at as u64 + 1
}

/// The first and last entry an export's header declares.
fn held(bytes: &[u8]) -> (u64, u64) {
    let header: Value = serde_json::from_slice(&lines(bytes)[0]).unwrap();
    let seq = |name: &str| header[name].as_u64().unwrap();
    (seq("first_seq"), seq("last_seq"))
}

/// Files in the test's folder.
struct Files<'a>(&'a Path);

impl Files<'_> {
    fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn witness(&self, name: &str, witness: &Witness) -> PathBuf {
        self.write(name, format!("{}\n", witness.to_line().unwrap()))
    }
}

/// What the library, the `killswitch` binary and the Python script say of one export.
struct Verdicts {
    library: Result<Verified, BadLine>,
    cli: (i32, String, String),
    python: (i32, String, String),
}

fn verdicts(db: &TestDb, export: &Path, key: &Path, witnesses: &[&Path]) -> Verdicts {
    let ring = KeyRing::new([killswitch::audit::signing::PublicKey::parse(
        &std::fs::read_to_string(key).unwrap(),
    )
    .unwrap()]);
    let parsed: Vec<Witness> = witnesses
        .iter()
        .map(|w| Witness::parse(&std::fs::read_to_string(w).unwrap()).unwrap())
        .collect();
    let expected = Expected {
        chain: None,
        witnesses: &parsed,
    };
    let library = verify_file_with(export, &ring, expected).unwrap();
    let mut args = vec![export.as_os_str(), "--public-key".as_ref(), key.as_os_str()];
    for w in witnesses {
        args.extend(["--witness".as_ref(), w.as_os_str()]);
    }
    let cli = run(killswitch(db).args(["audit", "verify"]).args(&args));
    let python = run(Command::new(python3()).arg(SCRIPT).args(&args));
    Verdicts {
        library,
        cli,
        python,
    }
}

impl Verdicts {
    fn agree(&self, witnesses: u64) {
        let verified = self.library.as_ref().unwrap_or_else(|bad| panic!("{bad}"));
        assert_eq!(verified.witnesses, witnesses);
        let (code, stdout, stderr) = &self.cli;
        assert_eq!(*code, 0, "{stdout}{stderr}");
        let said = format!(", agrees with {witnesses} witness(es)\n");
        assert!(
            stdout.starts_with("intact: ") && stdout.ends_with(&said),
            "{stdout}"
        );
        assert_eq!(self.python.1, *stdout, "{}", self.python.2);
        assert_eq!(self.python.0, 0);
    }

    fn refuse(&self, line: u64, reason: &str) {
        let expected = BadLine {
            line,
            reason: reason.to_owned(),
        };
        assert_eq!(self.library.as_ref().err(), Some(&expected));
        let printed = format!("NOT INTACT: {expected}\n");
        for (who, (code, stdout, stderr)) in [("killswitch", &self.cli), ("python", &self.python)] {
            assert_eq!(
                (*code, stdout.as_str()),
                (1, printed.as_str()),
                "{who}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn a_witness_of_entry_n_agrees_with_a_later_export_in_the_library_the_cli_and_python() {
    let db = TestDb::new().await;
    let (store, key) = db.store(4).await;
    add_customer(&store, "contoso").await;
    let before = disables(&store, "contoso", 0..3, reason).await;
    let witness = Witness::from_appended(&key, &before[2]).unwrap();
    assert_eq!(witness.seq, 4, "entry 1 records the customer");
    // The log goes on after the witness was handed out.
    disables(&store, "contoso", 3..7, reason).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;

    let files = Files(db.dir.path());
    let export = files.write("export.jsonl", &bytes);
    let key_file = files.write("key.pem", key.public_key().to_pem().unwrap());
    let witness_file = files.witness("witness.json", &witness);
    verdicts(&db, &export, &key_file, &[&witness_file]).agree(1);

    // A checkpoint line copied out of an earlier export is a witness too.
    let checkpoint = lines(&bytes)
        .into_iter()
        .find(|l| l.ends_with(b"\"type\":\"checkpoint\"}\n"))
        .unwrap();
    let checkpoint_file = files.write("checkpoint.json", checkpoint);
    verdicts(&db, &export, &key_file, &[&witness_file, &checkpoint_file]).agree(2);
}

#[tokio::test]
async fn a_log_rewritten_after_the_witness_is_refused_on_the_witnessed_entrys_line_by_all_three() {
    let original = TestDb::new().await;
    let (store, key) = original.store(4).await;
    add_customer(&store, "contoso").await;
    let witnessed = disables(&store, "contoso", 0..3, reason).await;
    let witness = Witness::from_appended(&key, &witnessed[2]).unwrap();

    // The same log written again with the same key, one reason before the witnessed entry
    // changed: every hash, checkpoint and seal made anew, so the export verifies on its own.
    let db = TestDb::new().await;
    let rewritten = db.store_with_key(key.clone(), 4).await;
    add_customer(&rewritten, "contoso").await;
    let changed = |i| match i {
        1 => "routine clean-up".to_owned(),
        i => reason(i),
    };
    let rewritten_at = disables(&rewritten, "contoso", 0..3, changed).await;
    disables(&rewritten, "contoso", 3..5, reason).await;
    let bytes = export_bytes(&rewritten, &key, "contoso", Format::Jsonl, None, None).await;

    let files = Files(db.dir.path());
    let export = files.write("rewritten.jsonl", &bytes);
    let key_file = files.write("key.pem", key.public_key().to_pem().unwrap());
    let alone = verdicts(&db, &export, &key_file, &[]);
    assert!(alone.library.is_ok(), "{:?}", alone.library);
    assert_eq!((alone.cli.0, alone.python.0), (0, 0), "{}", alone.python.1);
    assert_eq!(alone.cli.1, alone.python.1);

    let witness_file = files.witness("witness.json", &witness);
    let line = line_of_entry(&bytes, witness.seq);
    let reason = format!(
        "entry {} has hash {} but the witness issued {} says {}: the log was rewritten after the witness",
        witness.seq, rewritten_at[2].hash, witness.time, witness.hash
    );
    verdicts(&db, &export, &key_file, &[&witness_file]).refuse(line, &reason);

    let (code, stdout, _) = run(killswitch(&db).args(["audit", "verify"]).args([
        export.as_os_str(),
        "--public-key".as_ref(),
        key_file.as_os_str(),
        "--witness".as_ref(),
        witness_file.as_os_str(),
        "--json".as_ref(),
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        serde_json::json!({"intact": false, "line": line, "reason": reason})
    );
}

#[tokio::test]
async fn a_forged_witness_another_chains_or_one_of_an_entry_the_export_lacks_is_refused() {
    let db = TestDb::new().await;
    let (store, key) = db.store(1000).await;
    add_customer(&store, "contoso").await;
    add_customer(&store, "fabrikam").await;
    let contoso = disables(&store, "contoso", 0..3, reason).await;
    let fabrikam = disables(&store, "fabrikam", 0..1, reason).await;
    let later = disables(&store, "contoso", 3..6, reason).await;
    let w = Witness::from_appended(&key, &contoso[2]).unwrap();
    let whole = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let last = lines(&whole).len() as u64;
    // A period starting after the witnessed entry: from the first entry written later.
    let from = later.iter().map(|a| a.time).find(|t| *t > w.time).unwrap();
    let after = export_bytes(&store, &key, "contoso", Format::Jsonl, Some(from), None).await;
    // The witness of an entry written after the export.
    let head = disables(&store, "contoso", 6..7, reason).await;
    let newer = Witness::from_appended(&key, &head[0]).unwrap();

    let files = Files(db.dir.path());
    let key_file = files.write("key.pem", key.public_key().to_pem().unwrap());
    let export = files.write("export.jsonl", &whole);
    let intruder = AuditKey::generate().unwrap();
    let unknown = Witness::sign(&intruder, "contoso", w.seq, &w.hash, w.time).unwrap();
    let forged = Witness {
        key_id: key.key_id().clone(),
        ..unknown.clone()
    };
    let moved = Witness {
        seq: w.seq + 1,
        ..w.clone()
    };
    let of = |w: &Witness| format!("the witness of entry {} issued {}", w.seq, w.time);
    let cases = [
        (
            unknown.clone(),
            format!(
                "{} is signed with key {}, which is not among the public keys given",
                of(&unknown),
                intruder.key_id()
            ),
        ),
        (
            forged.clone(),
            format!(
                "{} does not verify with key {}: it is forged or was changed",
                of(&forged),
                key.key_id()
            ),
        ),
        (
            moved.clone(),
            format!(
                "{} does not verify with key {}: it is forged or was changed",
                of(&moved),
                key.key_id()
            ),
        ),
    ];
    for (i, (witness, reason)) in cases.iter().enumerate() {
        let file = files.witness(&format!("bad-{i}.json"), witness);
        verdicts(&db, &export, &key_file, &[&file]).refuse(1, reason);
    }
    let theirs = Witness::from_appended(&key, &fabrikam[0]).unwrap();
    let theirs_file = files.witness("fabrikam.json", &theirs);
    let reason = format!(
        "{} is of chain `fabrikam`, but this is an export of `contoso`",
        of(&theirs)
    );
    verdicts(&db, &export, &key_file, &[&theirs_file]).refuse(1, &reason);

    // Entries the export does not hold cannot be checked: refused on the seal's line.
    let not_held = |w: &Witness, first: u64, last: u64| {
        format!(
            "the witness issued {} is of entry {}, which this export does not hold (it holds entries {first} to {last}): export a period that includes entry {}",
            w.time, w.seq, w.seq
        )
    };
    let newer_file = files.witness("newer.json", &newer);
    let (first, last_seq) = held(&whole);
    assert!(newer.seq > last_seq);
    let reason = not_held(&newer, first, last_seq);
    verdicts(&db, &export, &key_file, &[&newer_file]).refuse(last, &reason);
    let witness_file = files.witness("witness.json", &w);
    let export_after = files.write("after.jsonl", &after);
    let (first, last_seq) = held(&after);
    assert!(first > w.seq, "the period starts after entry {}", w.seq);
    let reason = not_held(&w, first, last_seq);
    verdicts(&db, &export_after, &key_file, &[&witness_file])
        .refuse(lines(&after).len() as u64, &reason);
}

#[tokio::test]
async fn a_witness_file_that_holds_no_witness_is_one_clear_line_from_both_commands() {
    let db = TestDb::new().await;
    let (store, key) = db.store(1000).await;
    add_customer(&store, "contoso").await;
    let appended = disables(&store, "contoso", 0..1, reason).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let files = Files(db.dir.path());
    let export = files.write("export.jsonl", &bytes);
    let key_file = files.write("key.pem", key.public_key().to_pem().unwrap());
    let line = Witness::from_appended(&key, &appended[0])
        .unwrap()
        .to_line()
        .unwrap();
    for (text, says) in [
        (
            line.replacen("\"seq\":2,", "", 1),
            "the witness has no `seq`",
        ),
        (
            line.replacen("\"seq\":2", "\"seq\":2,\"note\":\"x\"", 1),
            "the witness has a member `note` a witness does not have",
        ),
        (
            line.replacen("\"seq\":2", "\"seq\":2,\"seq\":3", 1),
            "the witness has the member `seq` twice",
        ),
        (
            line.replacen(".", ",", 1),
            "the witness's `time` is not a time of the form 2026-11-27T09:40:05.123456Z",
        ),
        (format!("{line}x"), "the witness is not valid JSON"),
    ] {
        assert!(text != line, "{says}: the change did not apply");
        let file = files.write("broken.json", &text);
        let expected = format!("{}: {says}", file.display());
        let (code, stdout, stderr) = run(killswitch(&db).args(["audit", "verify"]).args([
            export.as_os_str(),
            "--public-key".as_ref(),
            key_file.as_os_str(),
            "--witness".as_ref(),
            file.as_os_str(),
        ]));
        assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
        assert_eq!(stderr, format!("killswitch: {expected}\n"));
        let (code, stdout, stderr) = run(Command::new(python3())
            .arg(SCRIPT)
            .arg(&export)
            .arg("--public-key")
            .arg(&key_file)
            .arg("--witness")
            .arg(&file));
        assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
        assert_eq!(stderr, format!("{expected}\n"));
    }
}
