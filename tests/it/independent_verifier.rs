//! docs/audit-format.md is precise enough to verify an export without killswitch: the
//! standard-library Python verifier written from it (docs/verify_export.py) accepts real
//! exports and, for every tampering tried here, refuses them on the same line as
//! `killswitch audit verify`. The document's worked example is regenerated from the code with
//! its published key, so the two cannot drift apart.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use common::TestDb;
use common::export::{Rng, analyst, export_bytes, export_bytes_by, line_of, lines};
use killswitch::audit::event::{
    AccountState, AuthMethod, GraphEvidence, MfaEvidence, Operation, Outcome,
};
use killswitch::audit::records::CheckpointRecord;
use killswitch::audit::signing::{KeyRing, checkpoint_message};
use killswitch::audit::{Actor, AuditEvent, AuditKey, Hash, Witness};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{ChainId, TenantId};
use killswitch::reports::export::Format;
use killswitch::reports::export::jsonl::{CheckpointLine, FORMAT, Header, Seal, VERSION};
use killswitch::reports::export::verify::{
    BadLine, Expected, Verified, verify, verify_file, verify_with,
};
use killswitch::store::Store;
use killswitch::time::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(crate) const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verify_export.py");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit-format.md");

// ---------------------------------------------------------------------------------------------
// Small helpers (the ones shared with tests/it/export.rs are in tests/it/common/export.rs).

fn customer(slug: &str, name: &str, domain: &str, tenant: Uuid) -> Customer {
    Customer {
        slug: slug.parse().unwrap(),
        name: name.to_owned(),
        domain: domain.to_owned(),
        tenant_id: TenantId::new(tenant),
        policy: Policy::default(),
        created_at: Timestamp::now(),
        connection: None,
    }
}

fn chain(slug: &str) -> ChainId {
    ChainId::Customer(slug.parse().unwrap())
}

/// Round `round` of events for `slug`: an action and its outcome, a detection, or a policy
/// change.
async fn events(store: &Arc<dyn Store>, slug: &str, round: usize) {
    let chain = chain(slug);
    let account = format!("user{round}@{slug}.example");
    match round % 3 {
        0 => {
            let action_id = Uuid::new_v4();
            let requested = AuditEvent::ActionRequested {
                action_id,
                operation: Operation::Disable,
                account: account.clone(),
                reason: format!("Falcon detection for {slug}, \"quoted\", with comma"),
                ticket: Some(format!("{slug}-{round}")),
                revoke_sessions: true,
                mfa: Some(MfaEvidence {
                    method: "totp".into(),
                    time_step: 59_859_080 + round as u64,
                    verified_at: Timestamp::now(),
                }),
                request: None,
            };
            store
                .append(&chain, &analyst(slug), &requested)
                .await
                .unwrap();
            let state = |enabled: bool| AccountState {
                id: Uuid::new_v4().to_string(),
                user_principal_name: account.clone(),
                account_enabled: Some(enabled),
                on_premises_sync_enabled: Some(false),
            };
            let finished = AuditEvent::ActionOutcome {
                action_id,
                outcome: Outcome::Succeeded,
                detail: None,
                warnings: vec![],
                before: Some(state(true)),
                after: Some(state(false)),
                graph: Some(GraphEvidence {
                    status: Some(204),
                    error_code: None,
                    request_id: Some(Uuid::new_v4().to_string()),
                    client_request_id: Some(Uuid::new_v4().to_string()),
                    date: None,
                }),
                duration_ms: 120,
            };
            store
                .append(&chain, &Actor::Service, &finished)
                .await
                .unwrap();
        }
        1 => {
            let event = AuditEvent::DetectionReceived {
                detection_id: Uuid::new_v4(),
                composite_id: format!("ind:{slug}:{round}"),
                severity: "critical".into(),
                account: Some(account),
                assurance: "signed".into(),
            };
            let falcon = Actor::Falcon {
                policy: "critical".into(),
                client_ip: None,
            };
            store.append(&chain, &falcon, &event).await.unwrap();
        }
        _ => {
            let event = AuditEvent::CustomerPolicyChanged {
                changes: serde_json::json!({"protected": [format!("breakglass@{slug}.example")]}),
            };
            store.append(&chain, &analyst(slug), &event).await.unwrap();
        }
    }
}

/// What `killswitch audit verify` prints for an intact export.
fn describe(v: &Verified) -> String {
    let range = match (v.first_seq, v.last_seq) {
        (Some(first), Some(last)) => format!("entries {first} to {last}"),
        _ => "no entries".to_owned(),
    };
    let period = format!(
        "{} to {}",
        v.from.as_deref().unwrap_or("the beginning"),
        v.to.as_deref().unwrap_or(&v.exported_at)
    );
    let witnessed = match v.witnesses {
        0 => String::new(),
        n => format!(", agrees with {n} witness(es)"),
    };
    format!(
        "intact: {} ({}), {range} ({} entries, {} signed checkpoint(s)), period {period}, sealed by key {}{witnessed}",
        v.chain, v.customer, v.entries, v.checkpoints, v.key_id
    )
}

// ---------------------------------------------------------------------------------------------
// Running the Python verifier next to the Rust one.

/// One file to verify, with what the Rust verifier says about it.
struct Case {
    label: String,
    file: PathBuf,
    keys: Vec<PathBuf>,
    customer: Option<String>,
    rust: Result<Verified, BadLine>,
    /// The line the tampering is on, where the document promises it is reported there.
    expected_line: Option<u64>,
}

struct Cases<'a> {
    dir: &'a Path,
    cases: Vec<Case>,
}

impl Cases<'_> {
    fn add(
        &mut self,
        label: String,
        bytes: &[u8],
        keys: (&KeyRing, &[PathBuf]),
        customer: Option<&str>,
        expected_line: Option<u64>,
    ) {
        let file = self.dir.join(format!("case-{}.jsonl", self.cases.len()));
        std::fs::write(&file, bytes).unwrap();
        let rust = verify_file(&file, keys.0, customer).unwrap();
        self.cases.push(Case {
            label,
            file,
            keys: keys.1.to_vec(),
            customer: customer.map(str::to_owned),
            rust,
            expected_line,
        });
    }
}

/// The interpreter `python3` starts, looked up once: a version manager's `python3` shim (pyenv)
/// costs a tenth of a second per start, more than a verification.
pub(crate) fn python3() -> &'static Path {
    static INTERPRETER: OnceLock<PathBuf> = OnceLock::new();
    INTERPRETER.get_or_init(|| {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| panic!("these tests need python3 on PATH: {e}"));
        assert!(
            output.status.success(),
            "python3 does not start: {output:?}"
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

fn python(file: &Path, keys: &[PathBuf], customer: Option<&str>) -> Output {
    let mut command = Command::new(python3());
    command.arg(SCRIPT).arg(file);
    for key in keys {
        command.arg("--public-key").arg(key);
    }
    if let Some(customer) = customer {
        command.arg("--customer").arg(customer);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {SCRIPT}: {e}", python3().display()))
}

/// Runs the Python verifier on every case, a few processes at a time.
fn run_python(cases: &[Case]) -> Vec<Output> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let next = AtomicUsize::new(0);
    let outputs: Vec<Mutex<Option<Output>>> = cases.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let output = python(&case.file, &case.keys, case.customer.as_deref());
                    *outputs[i].lock().unwrap() = Some(output);
                }
            });
        }
    });
    outputs
        .into_iter()
        .map(|o| o.into_inner().unwrap().unwrap())
        .collect()
}

/// Every disagreement between the two verifiers, or with the line the document promises.
fn disagreements(cases: &[Case], outputs: &[Output]) -> Vec<String> {
    let mut problems = Vec::new();
    for (case, output) in cases.iter().zip(outputs) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code();
        match &case.rust {
            Ok(verified) => {
                let expected = format!("{}\n", describe(verified));
                if code != Some(0) || stdout != expected {
                    problems.push(format!(
                        "{}: Rust says intact, Python exit {code:?}: {stdout}{stderr}",
                        case.label
                    ));
                }
            }
            Err(bad) => {
                let prefix = format!("NOT INTACT: line {}: ", bad.line);
                if code != Some(1) || !stdout.starts_with(&prefix) {
                    problems.push(format!(
                        "{}: Rust says `{bad}`, Python exit {code:?}: {stdout}{stderr}",
                        case.label
                    ));
                }
                if let Some(line) = case.expected_line
                    && line != bad.line
                {
                    problems.push(format!(
                        "{}: the tampering is on line {line}, Rust reports `{bad}`",
                        case.label
                    ));
                }
            }
        }
        if case.rust.is_ok() && case.expected_line.is_some() {
            problems.push(format!("{}: Rust found nothing wrong", case.label));
        }
    }
    problems
}

/// Three customers whose entries interleave; contoso gets checkpoints at 4 and 8 (every
/// fourth entry) and one signed over its head, which is its last entry.
async fn dataset(db: &TestDb) -> (Arc<dyn Store>, Arc<AuditKey>) {
    let (store, key) = db.store(4).await;
    for slug in ["contoso", "fabrikam", "northwind"] {
        let c = customer(
            slug,
            &format!("{slug} Ltd"),
            &format!("{slug}.example"),
            Uuid::new_v4(),
        );
        store.add_customer(&c, &Actor::operator()).await.unwrap();
    }
    for round in 0..7 {
        for slug in ["contoso", "fabrikam", "northwind"] {
            events(&store, slug, round).await;
        }
    }
    store.checkpoint(&chain("contoso")).await.unwrap();
    (store, key)
}

#[tokio::test]
async fn the_python_verifier_reaches_the_rust_verdict_on_the_same_line() {
    let db = TestDb::new().await;
    let (store, key) = dataset(&db).await;
    let bytes = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;
    let other = export_bytes(&store, &key, "fabrikam", Format::Jsonl, None, None).await;
    // A later export of the same customer: its entries continue this export's chain.
    events(&store, "contoso", 1).await;
    let later = export_bytes(&store, &key, "contoso", Format::Jsonl, None, None).await;

    let dir = db.dir.path();
    let public = key.public_key();
    let intruder = AuditKey::generate().unwrap();
    let key_files = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        vec![path]
    };
    let pem = key_files("key.pem", &public.to_pem().unwrap());
    let json = key_files(
        "key.json",
        &serde_json::json!({"key_id": public.key_id.as_str(), "algorithm": "Ed25519",
            "public_key": public.to_base64(), "pem": public.to_pem().unwrap()})
        .to_string(),
    );
    let base64 = key_files("key.b64", &format!("{}\n", public.to_base64()));
    let intruder_pem = key_files("intruder.pem", &intruder.public_key().to_pem().unwrap());
    let both = [intruder_pem.clone(), pem.clone()].concat();
    let ring = KeyRing::new([public.clone()]);
    let intruder_ring = KeyRing::new([intruder.public_key()]);
    let both_ring = KeyRing::new([intruder.public_key(), public.clone()]);
    let trusted = (&ring, &pem[..]);

    let original = lines(&bytes);
    let n = original.len();
    let kinds: Vec<&str> = original
        .iter()
        .map(|l| {
            if l.starts_with(b"{\"entry\":") {
                "entry"
            } else if l.windows(19).any(|w| w == b"\"type\":\"checkpoint\"") {
                "checkpoint"
            } else if l.windows(13).any(|w| w == b"\"type\":\"seal\"") {
                "seal"
            } else {
                "header"
            }
        })
        .collect();
    assert_eq!(kinds[0], "header");
    assert_eq!(kinds[n - 1], "seal");
    assert!(
        kinds.iter().filter(|k| **k == "checkpoint").count() >= 3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds[n - 2],
        "checkpoint",
        "the head is checkpointed: {kinds:?}"
    );
    assert!(n <= 20, "keep the export small: the Python Ed25519 is slow");

    let mut cases = Cases {
        dir,
        cases: Vec::new(),
    };
    // Intact, with the key in each published form, and with a second key given (rotation).
    for (label, keys) in [("PEM", &pem), ("JSON", &json), ("base64", &base64)] {
        cases.add(
            format!("intact, key as {label}"),
            &bytes,
            (&ring, keys),
            None,
            None,
        );
    }
    cases.add(
        "intact, two keys given".into(),
        &bytes,
        (&both_ring, &both),
        Some("contoso"),
        None,
    );
    let later_lines = lines(&later);
    cases.add("a later export".into(), &later, trusted, None, None);

    // One flipped byte: the first, middle and last byte of every line, and more anywhere.
    let mut offsets = Vec::new();
    let mut start = 0;
    for line in &original {
        offsets.extend([
            (start, 0x01u8),
            (start + line.len() / 2, 0x01),
            (start + line.len() - 1, 0x01),
        ]);
        start += line.len();
    }
    let mut rng = Rng(0x1DE_A5E7);
    offsets.extend((0..16).map(|i| (rng.below(bytes.len()), [0x20, 0x01, 0x04, 0x40][i % 4])));
    for (offset, flip) in offsets {
        let mut changed = bytes.clone();
        changed[offset] ^= flip;
        let line = line_of(&bytes, offset);
        let label = format!(
            "byte {offset} ^ {flip:#04x} ({} line {line})",
            kinds[line as usize - 1]
        );
        cases.add(label, &changed, trusted, None, Some(line));
    }

    // Each line removed, and each pair of adjacent lines swapped.
    for (removed, kind) in kinds.iter().enumerate() {
        let mut l = original.clone();
        l.remove(removed);
        let label = format!("{kind} line {} removed", removed + 1);
        cases.add(label, &l.concat(), trusted, None, Some(removed as u64 + 1));
    }
    for first in 0..n - 1 {
        let mut l = original.clone();
        l.swap(first, first + 1);
        let label = format!(
            "lines {} and {} ({} and {}) swapped",
            first + 1,
            first + 2,
            kinds[first],
            kinds[first + 1]
        );
        cases.add(label, &l.concat(), trusted, None, Some(first as u64 + 1));
    }

    // Lines of another export: appended after the seal, slipped in among the entries, or the
    // next entries of the same chain put in before the seal.
    let foreign = lines(&other);
    let mut appended = original.clone();
    appended.extend(foreign[1..4].iter().cloned());
    let appended = appended.concat();
    cases.add(
        "fabrikam's lines appended".into(),
        &appended,
        trusted,
        None,
        Some(n as u64 + 1),
    );
    let mut inserted = original.clone();
    inserted.insert(3, foreign[2].clone());
    cases.add(
        "a fabrikam entry inserted".into(),
        &inserted.concat(),
        trusted,
        None,
        Some(4),
    );
    let mut header_inserted = original.clone();
    header_inserted.insert(2, foreign[0].clone());
    cases.add(
        "fabrikam's header inserted".into(),
        &header_inserted.concat(),
        trusted,
        None,
        Some(3),
    );
    let mut extended = original.clone();
    let next_entry = later_lines
        .iter()
        .find(|l| l.starts_with(b"{\"entry\":") && !original.contains(l))
        .unwrap()
        .clone();
    extended.insert(n - 1, next_entry);
    cases.add(
        "the next entry of the chain added before the seal".into(),
        &extended.concat(),
        trusted,
        None,
        Some(n as u64),
    );
    let mut seal_swapped = original.clone();
    seal_swapped[n - 1] = later_lines.last().unwrap().clone();
    cases.add(
        "the seal of a later export".into(),
        &seal_swapped.concat(),
        trusted,
        None,
        Some(n as u64),
    );

    // Cut off: inside a line, at a line's end (the seal is then missing), and empty.
    let mut rng = Rng(0x00C0_FFEE);
    let mut cuts: Vec<usize> = (0..6).map(|_| 1 + rng.below(bytes.len() - 1)).collect();
    cuts.push(bytes.len() - original[n - 1].len());
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        let label = format!("cut after byte {cut}");
        cases.add(
            label,
            &bytes[..cut],
            trusted,
            None,
            Some(line_of(&bytes, cut)),
        );
    }
    cases.add("empty".into(), b"", trusted, None, Some(1));

    // A checkpoint re-signed with another key: under its own key id, and under the real one.
    let at = kinds.iter().position(|k| *k == "checkpoint").unwrap();
    let mut checkpoint: Value = serde_json::from_slice(&original[at]).unwrap();
    let message = checkpoint_message(
        checkpoint["chain"].as_str().unwrap(),
        checkpoint["seq"].as_u64().unwrap(),
        &Hash::from_hex(checkpoint["hash"].as_str().unwrap()).unwrap(),
        &checkpoint["time"].as_str().unwrap().parse().unwrap(),
    )
    .unwrap();
    checkpoint["signature"] = Value::String(intruder.sign_bytes(&message));
    let mut resigned = original.clone();
    resigned[at] = [serde_jcs::to_vec(&checkpoint).unwrap(), b"\n".to_vec()].concat();
    cases.add(
        "checkpoint re-signed, key id kept".into(),
        &resigned.concat(),
        trusted,
        None,
        Some(at as u64 + 1),
    );
    checkpoint["key_id"] = Value::String(intruder.key_id().to_string());
    resigned[at] = [serde_jcs::to_vec(&checkpoint).unwrap(), b"\n".to_vec()].concat();
    cases.add(
        "checkpoint re-signed under the other key's id".into(),
        &resigned.concat(),
        trusted,
        None,
        Some(at as u64 + 1),
    );

    // The wrong customer, the wrong key, and a relabelled export.
    cases.add(
        "contoso's export presented as fabrikam's".into(),
        &bytes,
        trusted,
        Some("fabrikam"),
        Some(1),
    );
    cases.add(
        "verified with another key only".into(),
        &bytes,
        (&intruder_ring, &intruder_pem),
        None,
        Some(1),
    );
    let relabelled = String::from_utf8(other.clone()).unwrap().replacen(
        "\"chain\":\"fabrikam\"",
        "\"chain\":\"contoso\"",
        1,
    );
    cases.add(
        "fabrikam's export relabelled as contoso's".into(),
        relabelled.as_bytes(),
        trusted,
        Some("contoso"),
        Some(1),
    );

    let cases = cases.cases;
    for case in cases.iter().take(5) {
        assert!(case.rust.is_ok(), "{}: {:?}", case.label, case.rust);
    }
    let outputs = run_python(&cases);
    let problems = disagreements(&cases, &outputs);
    assert!(
        problems.is_empty(),
        "{} of {} cases disagree:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The worked example of docs/audit-format.md.

/// The published example key: the Ed25519 seed 00 01 02 … 1f. Never use it for anything else.
const EXAMPLE_SEED: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const TENANT: &str = "11111111-2222-3333-4444-555555555555";

fn example_key() -> AuditKey {
    AuditKey::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&EXAMPLE_SEED))
}

fn time(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn alice() -> Actor {
    Actor::Operator {
        user: "alice".into(),
    }
}

/// The example's three events after the customer is added, each with who caused it and when.
fn example_events() -> Vec<(Timestamp, Actor, AuditEvent)> {
    vec![
        (
            time("2026-11-27T09:00:00.000000Z"),
            alice(),
            AuditEvent::CustomerAdded {
                name: "Contoso Ltd".into(),
                domain: "contoso.onmicrosoft.com".into(),
                tenant_id: Some(TENANT.into()),
            },
        ),
        (
            time("2026-11-27T09:12:30.250000Z"),
            Actor::Service,
            AuditEvent::ConsentGranted {
                tenant_id: TENANT.into(),
            },
        ),
        (
            time("2026-11-27T09:40:05.123456Z"),
            Actor::Analyst {
                id: "0b5e1a2c-3d4e-4f60-8a7b-9c0d1e2f3a4b".parse().unwrap(),
                email: "sam@soc.example".into(),
                auth: AuthMethod::Oidc,
                client_ip: None,
            },
            AuditEvent::ActionRequested {
                action_id: "7d3f4e5a-6b7c-4d8e-9f0a-1b2c3d4e5f60".parse().unwrap(),
                operation: Operation::Disable,
                account: "j.doe@contoso.onmicrosoft.com".into(),
                reason: "Falcon: credential theft on LAPTOP-7".into(),
                ticket: Some("INC-1042".into()),
                revoke_sessions: true,
                mfa: Some(MfaEvidence {
                    method: "totp".into(),
                    time_step: 59_859_080,
                    verified_at: time("2026-11-27T09:40:04.981220Z"),
                }),
                request: None,
            },
        ),
    ]
}

struct Example {
    lines: Vec<String>,
    /// The three entries, sealed.
    entries: Vec<killswitch::audit::Sealed>,
    key: AuditKey,
    genesis: Hash,
    first_hash: Hash,
    header_message: String,
    checkpoint_message: String,
    seal_message: String,
    header_sha256: String,
}

/// The example export, built the way the export writer builds one, at fixed times.
fn worked_example() -> Example {
    worked_example_of(example_events())
}

/// An export like the example's (same key, times and checkpoint) of other `events`.
fn worked_example_of(events: Vec<(Timestamp, Actor, AuditEvent)>) -> Example {
    let key = example_key();
    let contoso = chain("contoso");
    let genesis = Hash::genesis("contoso");
    let mut prev = genesis;
    let mut sealed = Vec::new();
    for (i, (at, actor, event)) in events.iter().enumerate() {
        let s = killswitch::audit::entry::seal(&contoso, i as u64 + 1, &prev, *at, actor, event)
            .unwrap();
        prev = s.hash;
        sealed.push(s);
    }
    let checkpoint = CheckpointRecord::from(
        &key.sign_checkpoint("contoso", 2, &sealed[1].hash, sealed[1].time)
            .unwrap(),
    );
    let checkpoint_line = CheckpointLine {
        kind: "checkpoint".into(),
        chain: checkpoint.chain.clone(),
        seq: 2,
        hash: checkpoint.hash.clone(),
        time: checkpoint.time.clone(),
        key_id: checkpoint.key_id.clone(),
        signature: checkpoint.signature.clone(),
    };
    let mut header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        version: VERSION,
        chain: "contoso".into(),
        customer: "Contoso Ltd".into(),
        from: Some("2026-11-27T00:00:00.000000Z".into()),
        to: Some("2026-11-28T00:00:00.000000Z".into()),
        exported_at: "2026-11-28T08:30:00.000000Z".into(),
        first_seq: Some(1),
        last_seq: Some(3),
        prev_hash: Some(genesis.to_hex()),
        key_id: key.key_id().to_string(),
        checkpoint_seqs: vec![2],
        signature: None,
    };
    let header_message = header.message().unwrap();
    header.signature = Some(key.sign_bytes(&header_message));
    let header_line = serde_jcs::to_string(&header).unwrap();
    let header_sha256 = const_hex::encode(Sha256::digest(header_line.as_bytes()));
    let entry_line = |s: &killswitch::audit::Sealed| {
        format!(
            "{{\"entry\":{},\"hash\":\"{}\",\"type\":\"entry\"}}",
            s.json, s.hash
        )
    };
    let mut seal = Seal {
        kind: "seal".into(),
        chain: "contoso".into(),
        entries: 3,
        first_seq: Some(1),
        last_seq: Some(3),
        last_hash: Some(sealed[2].hash.to_hex()),
        header_sha256: header_sha256.clone(),
        time: "2026-11-28T08:30:00.004210Z".into(),
        key_id: key.key_id().to_string(),
        signature: None,
    };
    let seal_message = seal.message().unwrap();
    seal.signature = Some(key.sign_bytes(&seal_message));
    let lines = vec![
        header_line,
        entry_line(&sealed[0]),
        entry_line(&sealed[1]),
        serde_jcs::to_string(&checkpoint_line).unwrap(),
        entry_line(&sealed[2]),
        serde_jcs::to_string(&seal).unwrap(),
    ];
    let checkpoint_message =
        checkpoint_message("contoso", 2, &sealed[1].hash, &sealed[1].time).unwrap();
    Example {
        lines,
        key,
        genesis,
        first_hash: sealed[0].hash,
        header_message: String::from_utf8(header_message).unwrap(),
        checkpoint_message: String::from_utf8(checkpoint_message).unwrap(),
        seal_message: String::from_utf8(seal_message).unwrap(),
        header_sha256,
        entries: sealed,
    }
}

/// The value with every time, hash and signature replaced by a placeholder, so two exports
/// written at different times compare by everything else.
fn mask(value: &Value) -> Value {
    match value {
        Value::String(s) => {
            let hex = s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let time = s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T';
            let signature = s.len() == 88 && s.ends_with("==");
            if hex {
                Value::String("<hash>".into())
            } else if time {
                Value::String("<time>".into())
            } else if signature {
                Value::String("<signature>".into())
            } else {
                value.clone()
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        Value::Object(members) => {
            Value::Object(members.iter().map(|(k, v)| (k.clone(), mask(v))).collect())
        }
        other => other.clone(),
    }
}

#[tokio::test]
async fn the_worked_example_in_the_doc_is_what_the_code_writes() {
    let example = worked_example();
    let public = example.key.public_key();
    let text: String = example.lines.iter().map(|l| format!("{l}\n")).collect();
    let public_pem = public.to_pem().unwrap();
    let seed_hex = const_hex::encode(EXAMPLE_SEED);
    let entry1 = &example.lines[1];
    let entry1_json = &entry1
        ["{\"entry\":".len()..entry1.len() - 64 - ",\"hash\":\"\",\"type\":\"entry\"}".len()];

    // Every line and every number the document shows.
    let doc = std::fs::read_to_string(DOC).unwrap();
    let mut needles: Vec<(String, String)> = example
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("line {}", i + 1), l.clone()))
        .collect();
    needles.extend([
        ("seed".to_owned(), seed_hex.clone()),
        ("public key (base64)".to_owned(), public.to_base64()),
        ("key id".to_owned(), public.key_id.to_string()),
        ("genesis".to_owned(), format!("{}  -", example.genesis)),
        ("entry 1 alone".to_owned(), format!("'{entry1_json}'")),
        (
            "entry 1's hash".to_owned(),
            format!("{}  -", example.first_hash),
        ),
        ("header message".to_owned(), example.header_message.clone()),
        (
            "checkpoint message".to_owned(),
            example.checkpoint_message.clone(),
        ),
        ("seal message".to_owned(), example.seal_message.clone()),
        (
            "header_sha256".to_owned(),
            format!("{}  -", example.header_sha256),
        ),
        (
            "key id command".to_owned(),
            format!(
                "{}  -",
                const_hex::encode(Sha256::digest(public.key.as_bytes()))
            ),
        ),
    ]);
    needles.extend(
        public_pem
            .lines()
            .map(|l| ("public key PEM".to_owned(), l.to_owned())),
    );
    let missing: Vec<&String> = needles
        .iter()
        .filter(|(_, needle)| !doc.contains(needle.as_str()))
        .map(|(what, _)| what)
        .collect();
    assert!(
        missing.is_empty(),
        "docs/audit-format.md lacks {missing:?}; the example is now:\n{text}\nseed {seed_hex}\n\
         public key {}\nkey id {}\ngenesis {}\nentry 1 hash {}\nheader message {}\n\
         checkpoint message {}\nseal message {}\nheader_sha256 {}\n{public_pem}",
        public.to_base64(),
        public.key_id,
        example.genesis,
        example.first_hash,
        example.header_message,
        example.checkpoint_message,
        example.seal_message,
        example.header_sha256,
    );

    // It verifies, with killswitch's verifier and with the Python one, under the published key.
    let ring = KeyRing::new([public.clone()]);
    let verified = verify(text.as_bytes(), &ring, Some("contoso"))
        .unwrap()
        .unwrap();
    assert_eq!((verified.entries, verified.checkpoints), (3, 1));
    let db = TestDb::new().await;
    let file = db.dir.path().join("example.jsonl");
    std::fs::write(&file, &text).unwrap();
    let key_file = db.dir.path().join("example-key.pem");
    std::fs::write(&key_file, &public_pem).unwrap();
    let output = python(&file, &[key_file], Some("contoso"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\n", describe(&verified)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));

    // And the export writer, given the same events and key, writes the same lines but for
    // the times (and so the hashes and signatures that cover them).
    let key = Arc::new(example_key());
    let store = db.store_with_key(key.clone(), 2).await;
    let contoso = customer(
        "contoso",
        "Contoso Ltd",
        "contoso.onmicrosoft.com",
        TENANT.parse().unwrap(),
    );
    store.add_customer(&contoso, &alice()).await.unwrap();
    for (_, actor, event) in example_events().into_iter().skip(1) {
        store
            .append(&chain("contoso"), &actor, &event)
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let written = export_bytes_by(
        &store,
        &key,
        "contoso",
        Format::Jsonl,
        Some(Timestamp::from_datetime(now - chrono::Duration::hours(1))),
        Some(Timestamp::from_datetime(now + chrono::Duration::hours(1))),
        alice(),
    )
    .await;
    let written = String::from_utf8(written).unwrap();
    assert_eq!(written.lines().count(), example.lines.len(), "{written}");
    for (real, shown) in written.lines().zip(&example.lines) {
        let real_value: Value = serde_json::from_str(real).unwrap();
        let shown_value: Value = serde_json::from_str(shown).unwrap();
        assert_eq!(mask(&real_value), mask(&shown_value), "\n{real}\n{shown}");
        // Both canonical, so equal values mean equal bytes but for the masked values.
        assert_eq!(serde_jcs::to_string(&real_value).unwrap(), real);
        assert_eq!(serde_jcs::to_string(&shown_value).unwrap(), *shown);
    }
}

/// The witness example of docs/audit-format.md: what a notice for the example's disable
/// request (entry 3) carries, the example export agreeing with it, and the same log with that
/// entry's reason rewritten afterwards refused on its line, by both verifiers.
#[tokio::test]
async fn the_witness_example_in_the_doc_is_what_the_code_signs_and_refuses() {
    let example = worked_example();
    let entry = &example.entries[2];
    let witness = Witness::sign(&example.key, "contoso", 3, &entry.hash, entry.time).unwrap();
    let witness_line = witness.to_line().unwrap();
    let mut events = example_events();
    if let AuditEvent::ActionRequested { reason, .. } = &mut events[2].2 {
        *reason = "Routine clean-up".into();
    }
    let rewritten = worked_example_of(events);
    assert_ne!(rewritten.entries[2].hash, entry.hash);

    let db = TestDb::new().await;
    let dir = db.dir.path();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let text = |lines: &[String]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let key_file = write(
        "example-key.pem",
        example.key.public_key().to_pem().unwrap(),
    );
    let witness_file = write("witness.json", format!("{witness_line}\n"));
    let ring = KeyRing::new([example.key.public_key()]);
    let expected = Expected {
        chain: Some("contoso"),
        witnesses: std::slice::from_ref(&witness),
    };
    let intact = verify_with(text(&example.lines).as_bytes(), &ring, expected)
        .unwrap()
        .unwrap();
    let intact = describe(&intact);
    let refused = verify_with(text(&rewritten.lines).as_bytes(), &ring, expected)
        .unwrap()
        .unwrap_err();
    let refused = format!("NOT INTACT: {refused}");
    assert!(
        refused.contains("the log was rewritten after the witness"),
        "{refused}"
    );

    let doc = std::fs::read_to_string(DOC).unwrap();
    for (what, shown) in [
        ("witness", &witness_line),
        ("intact", &intact),
        ("refusal", &refused),
    ] {
        assert!(
            doc.contains(shown.as_str()),
            "docs/audit-format.md lacks the {what} line:\n{witness_line}\n{intact}\n{refused}"
        );
    }
    for (file, said) in [
        (write("example.jsonl", text(&example.lines)), &intact),
        (write("rewritten.jsonl", text(&rewritten.lines)), &refused),
    ] {
        let output = Command::new(python3())
            .arg(SCRIPT)
            .arg(&file)
            .arg("--public-key")
            .arg(&key_file)
            .arg("--witness")
            .arg(&witness_file)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{said}\n"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files that break a promise of the format (section 1 and the member tables) and are otherwise
// valid: what the change covers is hashed and signed again with the example key, so each is
// refused by the new check rather than by a hash or a signature.

/// Placeholders a crafted value is written with and then replaced by raw JSON text, for
/// numbers no serializer writes (`1.0`, `2^53`, `-0`).
const RAW_FLOAT: &str = "@float@";
const RAW_BIG: &str = "@big@";
const RAW_MINUS_ZERO: &str = "@minus-zero@";

fn raw(value: &Value) -> String {
    serde_jcs::to_string(value)
        .unwrap()
        .replace(&format!("\"{RAW_FLOAT}\""), "3.0")
        .replace(&format!("\"{RAW_BIG}\""), "9007199254740992")
        .replace(&format!("\"{RAW_MINUS_ZERO}\""), "-0")
}

/// The hash an entry's text says it chains from: its `prev_hash` member, the fifth item of an
/// array, or (in text no parser here reads, too deep or not JSON) the last `"prev_hash"` in it.
fn own_prev(text: &str) -> Hash {
    let own: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let parsed = own
        .get("prev_hash")
        .or_else(|| own.get(4))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let found = || {
        let at = text.rfind("\"prev_hash\":\"")? + "\"prev_hash\":\"".len();
        text.get(at..at + 64).map(str::to_owned)
    };
    parsed
        .or_else(found)
        .and_then(|hex| Hash::from_hex(&hex))
        .unwrap_or_else(|| Hash::genesis("contoso"))
}

/// The worked example taken apart: the header and seal as values, the entries as text.
struct Parts {
    key: AuditKey,
    header: Value,
    entries: Vec<String>,
    checkpoint: Value,
    seal: Value,
}

fn entry_text(line: &str) -> String {
    line["{\"entry\":".len()..line.len() - 64 - ",\"hash\":\"\",\"type\":\"entry\"}".len()]
        .to_owned()
}

impl Parts {
    fn new() -> Parts {
        let example = worked_example();
        let value = |i: usize| -> Value { serde_json::from_str(&example.lines[i]).unwrap() };
        Parts {
            header: value(0),
            entries: [1, 2, 4].map(|i| entry_text(&example.lines[i])).to_vec(),
            checkpoint: value(3),
            seal: value(5),
            key: example.key,
        }
    }

    /// `value` with its `signature` made again over its text without it (placeholders in).
    fn signed(&self, value: &Value) -> String {
        let mut unsigned = value.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        let mut signed = unsigned.clone();
        signed["signature"] = Value::String(self.key.sign_bytes(raw(&unsigned).as_bytes()));
        raw(&signed)
    }

    /// The checkpoint with its signature made again over the message of its values.
    fn checkpoint_line(&self) -> String {
        let mut cp = self.checkpoint.clone();
        let message = serde_json::json!({"chain": cp["chain"], "hash": cp["hash"],
            "seq": cp["seq"], "time": cp["time"], "type": "killswitch-audit-checkpoint-v1"});
        cp["signature"] = Value::String(self.key.sign_bytes(raw(&message).as_bytes()));
        raw(&cp)
    }

    /// The file: entries chained from the header's `prev_hash` (each entry's own `prev_hash`
    /// as written), the checkpoint after entry 2, the seal's `last_hash` and `header_sha256`
    /// made to fit, the header and seal signed again.
    fn file(&self) -> Vec<u8> {
        let header = self.signed(&self.header);
        let mut lines = vec![header.clone()];
        let mut last_hash = None;
        for text in &self.entries {
            let own: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let hash = Hash::link(&own_prev(text), text.as_bytes());
            lines.push(format!(
                "{{\"entry\":{text},\"hash\":\"{hash}\",\"type\":\"entry\"}}"
            ));
            if own["seq"] == 2 {
                lines.push(self.checkpoint_line());
            }
            last_hash = Some(hash.to_hex());
        }
        let mut seal = self.seal.clone();
        seal["last_hash"] = last_hash.map_or(Value::Null, Value::String);
        if self.seal["last_hash"].is_number() {
            seal["last_hash"] = self.seal["last_hash"].clone();
        }
        seal["header_sha256"] = Value::String(const_hex::encode(Sha256::digest(header.as_bytes())));
        lines.push(self.signed(&seal));
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    }

    /// Entry 3 (the last) changed by `edit` on its value, written canonically.
    fn with_last_entry(mut self, edit: impl FnOnce(&mut Value)) -> Parts {
        let mut value: Value = serde_json::from_str(&self.entries[2]).unwrap();
        edit(&mut value);
        self.entries[2] = raw(&value);
        self
    }

    /// Entry 3 (the last) changed by `edit` on its text.
    fn with_last_entry_text(mut self, edit: impl FnOnce(&str) -> String) -> Parts {
        self.entries[2] = edit(&self.entries[2]);
        self
    }
}

/// Moves the member `"name":…` that starts at `member` to the front of the object `text`.
fn member_first(text: &str, member: &str) -> String {
    let at = text.find(member).unwrap();
    let end = text[at..].find(",\"").map_or(text.len() - 1, |e| at + e);
    let moved = &text[at..end];
    let before = text[1..at].trim_end_matches(',');
    let after = text[end..].trim_start_matches(',');
    if after == "}" {
        format!("{{{moved},{before}}}")
    } else {
        format!("{{{moved},{before},{after}")
    }
}

#[tokio::test]
async fn a_file_that_breaks_a_promise_of_the_format_is_refused_by_both_verifiers_on_its_line() {
    let set = |name: &'static str, value: Value| move |v: &mut Value| v[name] = value.clone();
    let header = |edit: &dyn Fn(&mut Value)| {
        let mut p = Parts::new();
        edit(&mut p.header);
        p
    };
    let checkpoint = |edit: &dyn Fn(&mut Value)| {
        let mut p = Parts::new();
        edit(&mut p.checkpoint);
        p
    };
    let seal = |edit: &dyn Fn(&mut Value)| {
        let mut p = Parts::new();
        edit(&mut p.seal);
        p
    };
    let time_form = "is not a time of the form 2026-11-27T09:40:05.123456Z";
    let count = "is not a whole number from 0 to 2^53 - 1";
    let integer = "is not a whole number between -(2^53 - 1) and 2^53 - 1";
    let too_deep = "the line nests arrays and objects deeper than 32 levels";
    let not_json = "the entry is not valid JSON";
    // Empty arrays `levels` deep, a member `n` of entry 3's event (in its place by name).
    let nested_in_event = |levels: usize| {
        let n = format!("\"n\":{}{},", "[".repeat(levels), "]".repeat(levels));
        Parts::new()
            .with_last_entry_text(|t| t.replacen("\"operation\"", &format!("{n}\"operation\""), 1))
            .file()
    };
    let first_line = |line: &str| {
        let file = String::from_utf8(Parts::new().file()).unwrap();
        let (_, rest) = file.split_once('\n').unwrap();
        format!("{line}\n{rest}").into_bytes()
    };
    let reorder_header = |p: Parts| {
        let file = String::from_utf8(p.file()).unwrap();
        let (first, rest) = file.split_once('\n').unwrap();
        format!("{}\n{rest}", member_first(first, "\"type\":\"header\"")).into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u64, String)> = vec![
        // The header, line 1.
        (
            "header: exported_at without fraction",
            header(&set("exported_at", "2026-11-28T08:30:00Z".into())).file(),
            1,
            format!("the header's `exported_at` {time_form}"),
        ),
        (
            "header: from a date",
            header(&set("from", "2026-11-27".into())).file(),
            1,
            format!("the header's `from` {time_form} or null"),
        ),
        (
            "header: version 3.0",
            header(&set("version", RAW_FLOAT.into())).file(),
            1,
            format!("the header's `version` {count}"),
        ),
        (
            "header: last_seq 2^53",
            header(&set("last_seq", RAW_BIG.into())).file(),
            1,
            format!("the header's `last_seq` {count} or null"),
        ),
        (
            "header: customer a number",
            header(&set("customer", 5.into())).file(),
            1,
            "the header's `customer` is not a string".into(),
        ),
        (
            "header: checkpoint_seqs a number",
            header(&set("checkpoint_seqs", 2.into())).file(),
            1,
            "the header's `checkpoint_seqs` is not a list of whole numbers from 0 to 2^53 - 1"
                .into(),
        ),
        (
            "header: an unknown member",
            header(&set("comment", "x".into())).file(),
            1,
            "the header has a member `comment` the format does not define".into(),
        ),
        (
            "header: members reordered",
            reorder_header(Parts::new()),
            1,
            "the header line is not in its canonical form (RFC 8785)".into(),
        ),
        // The last entry, line 5: hashed again, the seal made to fit.
        (
            "entry: members reordered",
            Parts::new()
                .with_last_entry_text(|t| member_first(t, "\"v\":1"))
                .file(),
            5,
            "the entry is not in its canonical form (RFC 8785)".into(),
        ),
        (
            "entry: a space after a colon",
            Parts::new()
                .with_last_entry_text(|t| t.replacen("\"seq\":3", "\"seq\": 3", 1))
                .file(),
            5,
            "the entry is not in its canonical form (RFC 8785)".into(),
        ),
        (
            "entry: time_step 3.0",
            Parts::new()
                .with_last_entry(|v| v["event"]["mfa"]["time_step"] = RAW_FLOAT.into())
                .file(),
            5,
            format!("the entry's `event.mfa.time_step` {integer}"),
        ),
        (
            "entry: time_step 2^53",
            Parts::new()
                .with_last_entry(|v| v["event"]["mfa"]["time_step"] = RAW_BIG.into())
                .file(),
            5,
            format!("the entry's `event.mfa.time_step` {integer}"),
        ),
        (
            "entry: time_step -0",
            Parts::new()
                .with_last_entry(|v| v["event"]["mfa"]["time_step"] = RAW_MINUS_ZERO.into())
                .file(),
            5,
            format!("the entry's `event.mfa.time_step` {integer}"),
        ),
        (
            "entry: time_step 1e400",
            Parts::new()
                .with_last_entry_text(|t| t.replacen("59859080", "1e400", 1))
                .file(),
            5,
            not_json.into(),
        ),
        (
            "entry: a lone surrogate in the reason",
            Parts::new()
                .with_last_entry_text(|t| t.replacen("Falcon: credential", "\\ud800", 1))
                .file(),
            5,
            not_json.into(),
        ),
        (
            "entry: an array of the members in order",
            Parts::new()
                .with_last_entry_text(|t| {
                    let v: Value = serde_json::from_str(t).unwrap();
                    let items = ["v", "chain", "seq", "time", "prev_hash", "event"]
                        .map(|name| v[name].clone());
                    raw(&Value::Array(items.to_vec()))
                })
                .file(),
            5,
            "the entry is not a valid audit entry: an object with v, chain, seq, time, prev_hash and an event with a type".into(),
        ),
        (
            "entry: 127 levels of arrays in the event",
            nested_in_event(127),
            5,
            too_deep.into(),
        ),
        (
            "entry: 450 levels of arrays in the event",
            nested_in_event(450),
            5,
            too_deep.into(),
        ),
        (
            "entry: 30 levels of arrays in the event, 33 on the line",
            nested_in_event(30),
            5,
            too_deep.into(),
        ),
        (
            "a first line of 100,000 [",
            first_line(&"[".repeat(100_000)),
            1,
            too_deep.into(),
        ),
        (
            "entry: time in milliseconds",
            Parts::new()
                .with_last_entry(|v| v["time"] = "2026-11-27T09:40:05.123Z".into())
                .file(),
            5,
            format!("the entry's `time` {time_form}"),
        ),
        (
            "entry: actor a string",
            Parts::new()
                .with_last_entry(|v| v["actor"] = "sam@soc.example".into())
                .file(),
            5,
            "the entry's `actor` is not an object".into(),
        ),
        (
            "entry: an unknown member",
            Parts::new()
                .with_last_entry(|v| v["note"] = "x".into())
                .file(),
            5,
            "the entry has a member `note` the format does not define".into(),
        ),
        // The checkpoint, line 4: signed again.
        (
            "checkpoint: time in centiseconds",
            checkpoint(&set("time", "2026-11-27T09:12:30.25Z".into())).file(),
            4,
            format!("the checkpoint's `time` {time_form}"),
        ),
        (
            "checkpoint: seq 3.0",
            checkpoint(&set("seq", RAW_FLOAT.into())).file(),
            4,
            format!("the checkpoint's `seq` {count}"),
        ),
        (
            "checkpoint: seq 2^53",
            checkpoint(&set("seq", RAW_BIG.into())).file(),
            4,
            format!("the checkpoint's `seq` {count}"),
        ),
        (
            "checkpoint: seq -0",
            checkpoint(&set("seq", RAW_MINUS_ZERO.into())).file(),
            4,
            format!("the checkpoint's `seq` {count}"),
        ),
        (
            "checkpoint: hash a number",
            checkpoint(&set("hash", 5.into())).file(),
            4,
            "the checkpoint's `hash` is not a string".into(),
        ),
        // The seal, line 6: signed again.
        (
            "seal: time with five digits",
            seal(&set("time", "2026-11-28T08:30:00.00421Z".into())).file(),
            6,
            format!("the seal's `time` {time_form}"),
        ),
        (
            "seal: entries 3.0",
            seal(&set("entries", RAW_FLOAT.into())).file(),
            6,
            format!("the seal's `entries` {count}"),
        ),
        (
            "seal: entries 2^53",
            seal(&set("entries", RAW_BIG.into())).file(),
            6,
            format!("the seal's `entries` {count}"),
        ),
        (
            "seal: last_hash a number",
            seal(&set("last_hash", 5.into())).file(),
            6,
            "the seal's `last_hash` is not a string or null".into(),
        ),
        (
            "seal: an unknown member",
            seal(&set("comment", "x".into())).file(),
            6,
            "the seal has a member `comment` the format does not define".into(),
        ),
    ];

    let db = TestDb::new().await;
    let dir = db.dir.path();
    let key_file = dir.join("example-key.pem");
    std::fs::write(&key_file, example_key().public_key().to_pem().unwrap()).unwrap();
    let ring = KeyRing::new([example_key().public_key()]);
    let keys = [key_file];
    let mut crafted = Cases {
        dir,
        cases: Vec::new(),
    };
    // The untouched parts put together again verify: what each case changes is all it changes.
    crafted.add(
        "reassembled".into(),
        &Parts::new().file(),
        (&ring, &keys),
        None,
        None,
    );
    // Nested as deep as a line may be (the line, `entry`, `event`, then 29 arrays): intact.
    crafted.add(
        "32 levels on an entry line".into(),
        &nested_in_event(29),
        (&ring, &keys),
        None,
        None,
    );
    for (label, bytes, line, _) in &cases {
        crafted.add(
            (*label).to_owned(),
            bytes,
            (&ring, &keys),
            None,
            Some(*line),
        );
    }
    let outputs = run_python(&crafted.cases);
    let mut problems = disagreements(&crafted.cases, &outputs);
    assert!(crafted.cases[0].rust.is_ok(), "{:?}", crafted.cases[0].rust);
    assert!(crafted.cases[1].rust.is_ok(), "{:?}", crafted.cases[1].rust);
    for ((label, _, _, reason), (case, output)) in
        cases.iter().zip(crafted.cases.iter().zip(&outputs).skip(2))
    {
        let python = String::from_utf8_lossy(&output.stdout);
        match &case.rust {
            Err(bad) if bad.reason.starts_with(reason.as_str()) => {
                // The same words, to the last, not just the same line.
                let same = format!("NOT INTACT: {bad}\n");
                if python != same {
                    problems.push(format!("{label}: Rust says `{bad}`, Python says {python}"));
                }
            }
            other => problems.push(format!("{label}: Rust says {other:?}, expected `{reason}`")),
        }
        if !python.contains(&format!(": {reason}")) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("");
            problems.push(format!(
                "{label}: Python says {python}{last}, expected `{reason}`"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn a_seal_whose_first_entry_is_not_in_the_file_says_so_in_both_verifiers() {
    // Entry 1 removed, the header made again to start at entry 2, the seal made again with the
    // count and last entry of what is left but still announcing entry 1 first.
    let mut p = Parts::new();
    let first_hash = Hash::link(&Hash::genesis("contoso"), p.entries[0].as_bytes());
    p.entries.remove(0);
    p.header["first_seq"] = 2.into();
    p.header["prev_hash"] = first_hash.to_hex().into();
    p.seal["entries"] = 2.into();
    let bytes = p.file();
    assert_eq!(lines(&bytes).len(), 5);

    let db = TestDb::new().await;
    let file = db.dir.path().join("first-removed.jsonl");
    std::fs::write(&file, &bytes).unwrap();
    let key_file = db.dir.path().join("example-key.pem");
    std::fs::write(&key_file, example_key().public_key().to_pem().unwrap()).unwrap();
    let ring = KeyRing::new([example_key().public_key()]);
    let expected = "line 5: the first entry the seal announces, entry 1, is missing: the file starts at entry 2";
    let rust = verify_file(&file, &ring, None).unwrap().unwrap_err();
    assert_eq!(rust.to_string(), expected);
    let python = python(&file, &[key_file], None);
    assert_eq!(
        String::from_utf8_lossy(&python.stdout),
        format!("NOT INTACT: {expected}\n")
    );
}
