//! `killswitch audit …`: verify stored chains, print the public key, sign checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;
use serde_json::json;

use super::{exit_code, print_json};
use crate::app::Services;
use crate::audit::signing::PublicKey;
use crate::audit::{Actor, AuditKey, KeyRing, Witness};
use crate::config::Settings;
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::reports::check::{self, ChainReport};
use crate::reports::export::verify::{Expected, Verified};
use crate::reports::export::{self, ExportRequest};
use crate::store::{self, Store, StoreOptions};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chains and signed checkpoints stored in the database.
    Check {
        /// Only this customer's chain (`system` for the service's own chain).
        #[arg(long, value_name = "SLUG")]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the public key customers verify exports with (PEM, or JSON with --json).
    PublicKey {
        #[arg(long)]
        json: bool,
    },
    /// Export a customer's audit log (recorded in its chain): jsonl is the verifiable format.
    Export(ExportArgs),
    /// Verify a JSON Lines export: chain, checkpoint and seal signatures, completeness, and
    /// agreement with the witnesses given.
    Verify(VerifyArgs),
    /// Sign a checkpoint over the current head of every chain (or one) that advanced.
    Checkpoint {
        #[arg(long, value_name = "SLUG")]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

// The argument structs carry no doc comment of their own: the variant's is the command's help.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_name = "SLUG")]
    customer: String,
    /// Start of the period (RFC 3339 time or a UTC date), inclusive.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// End of the period (RFC 3339 time or a UTC date), exclusive.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// jsonl, csv, ocsf or html.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --out, print a JSON summary of what was written.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export file (`-` reads standard input).
    file: PathBuf,
    /// A public key to trust (PEM, the JSON of `audit public-key --json`, or base64);
    /// repeat for keys used before a rotation. Default: this server's own key.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Fail unless the export is of this customer.
    #[arg(long, value_name = "SLUG")]
    customer: Option<String>,
    /// A witness the export must agree with: a file holding the witness from a notice (or a
    /// checkpoint line of an earlier export); repeat for several.
    #[arg(long = "witness", value_name = "FILE")]
    witnesses: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub async fn run(command: AuditCommand, settings: &Settings) -> Result<ExitCode> {
    match command {
        AuditCommand::Check { customer, json } => check(settings, customer, json).await,
        AuditCommand::PublicKey { json } => public_key(settings, json),
        AuditCommand::Checkpoint { customer, json } => checkpoint(settings, customer, json).await,
        AuditCommand::Export(args) => export(settings, args).await,
        AuditCommand::Verify(args) => verify(settings, args),
    }
}

/// `--customer` of the chain commands: a customer slug, or `system` for the service's own chain.
fn parse_chain(customer: Option<String>) -> Result<Option<ChainId>> {
    Ok(customer.map(|c| c.parse::<ChainId>()).transpose()?)
}

async fn open_read_only(settings: &Settings) -> Result<Arc<dyn Store>> {
    store::open(
        settings.database.url.expose_secret(),
        StoreOptions {
            max_connections: 2,
            acquire_timeout: settings.database.acquire_timeout,
            ..StoreOptions::default()
        },
    )
    .await
}

async fn check(settings: &Settings, customer: Option<String>, json: bool) -> Result<ExitCode> {
    let chain = parse_chain(customer)?;
    let store = open_read_only(settings).await?;
    let configured = AuditKey::load(&settings.audit.signing_key_file)
        .ok()
        .map(|k| k.public_key());
    let keys = check::keyring(store.as_ref(), configured).await?;
    let reports =
        check::check_store(store.as_ref(), &keys, chain.as_ref().map(ChainId::as_str)).await?;
    let intact = reports.iter().all(|r| r.result.is_ok());
    if json {
        let chains: Vec<_> = reports.iter().map(report_json).collect();
        print_json(&json!({"intact": intact, "chains": chains}))?;
    } else {
        print_reports(&reports);
    }
    Ok(exit_code(intact))
}

pub(super) fn print_reports(reports: &[ChainReport]) {
    if reports.is_empty() {
        println!("no audit entries yet");
    }
    for report in reports {
        match &report.result {
            Ok(s) => println!(
                "{}: intact, {} entries, {} checkpoints verified{}",
                report.chain,
                s.entries,
                s.checkpoints,
                s.last_checkpoint
                    .map(|seq| format!(" (newest at seq {seq})"))
                    .unwrap_or_default()
            ),
            Err(broken) => println!("{}: BROKEN, {broken}", report.chain),
        }
    }
}

pub(super) fn report_json(report: &ChainReport) -> serde_json::Value {
    match &report.result {
        Ok(s) => json!({
            "chain": report.chain,
            "intact": true,
            "entries": s.entries,
            "checkpoints": s.checkpoints,
            "last_checkpoint": s.last_checkpoint,
            "head": s.head.to_hex(),
        }),
        Err(broken) => json!({
            "chain": report.chain,
            "intact": false,
            "first_bad_seq": broken.seq,
            "reason": broken.reason,
        }),
    }
}

fn public_key(settings: &Settings, json: bool) -> Result<ExitCode> {
    let key = AuditKey::load(&settings.audit.signing_key_file)?.public_key();
    if json {
        print_json(&json!({
            "key_id": key.key_id.as_str(),
            "algorithm": "Ed25519",
            "public_key": key.to_base64(),
            "pem": key.to_pem()?,
        }))?;
    } else {
        print!("{}", key.to_pem()?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn checkpoint(settings: &Settings, customer: Option<String>, json: bool) -> Result<ExitCode> {
    let only = parse_chain(customer)?;
    let services = Services::open(settings).await?;
    let chains: Vec<ChainId> = match only {
        Some(chain) => vec![chain],
        None => services
            .store
            .chain_names()
            .await?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect(),
    };
    let mut signed = Vec::new();
    for chain in chains {
        if let Some(cp) = services.store.checkpoint(&chain).await? {
            signed
                .push(json!({"chain": cp.chain, "seq": cp.seq, "hash": cp.hash, "time": cp.time}));
        }
    }
    if json {
        print_json(&json!({ "checkpoints": signed }))?;
    } else if signed.is_empty() {
        println!("every chain's head is already covered by a checkpoint");
    } else {
        for cp in &signed {
            println!(
                "{}: checkpoint signed at seq {}",
                cp["chain"].as_str().unwrap_or_default(),
                cp["seq"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(settings: &Settings, args: ExportArgs) -> Result<ExitCode> {
    let request = ExportRequest {
        customer: args.customer.parse()?,
        from: args.from.as_deref().map(export::parse_bound).transpose()?,
        to: args.to.as_deref().map(export::parse_bound).transpose()?,
        format: args.format.parse()?,
        actor: Actor::operator(),
    };
    let services = Services::open(settings).await?;
    let started =
        export::start(services.store.clone(), services.audit_key.clone(), request).await?;
    let entries = started.window.entry_count();
    let Some(path) = &args.out else {
        write_to_stdout(started.body).await?;
        return Ok(ExitCode::SUCCESS);
    };
    write_export_file(path, started.body).await?;
    // The summary goes to stderr without --json: stdout stays free for the export itself.
    if args.json {
        print_json(&json!({"out": path.display().to_string(), "entries": entries}))?;
    } else {
        eprintln!(
            "exported {entries} entries of `{}` to {}",
            args.customer,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

type ExportBody = BoxStream<'static, Result<Bytes>>;

async fn write_export_file(path: &Path, mut body: ExportBody) -> Result<()> {
    let written = async {
        let context = || format!("cannot write {}", path.display());
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(context(), e))?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?)
                .map_err(|e| Error::io(context(), e))?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if written.is_err() {
        // A partial file must not be mistaken for an export.
        let _ = std::fs::remove_file(path);
    }
    written
}

async fn write_to_stdout(mut body: ExportBody) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let context = || "cannot write to standard output".to_owned();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)
            .map_err(|e| Error::io(context(), e))?;
    }
    out.flush().map_err(|e| Error::io(context(), e))
}

/// Keys from the files given, or this server's own key when none are.
fn verification_keys(settings: &Settings, files: &[PathBuf]) -> Result<KeyRing> {
    if files.is_empty() {
        let key = AuditKey::load(&settings.audit.signing_key_file).map_err(|_| {
            Error::InvalidInput(
                "give the signer's public key with --public-key FILE (from `killswitch audit public-key` or GET /api/v1/audit/public-key)"
                    .to_owned(),
            )
        })?;
        return Ok(KeyRing::new([key.public_key()]));
    }
    let mut keys = KeyRing::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::InvalidInput(format!("cannot read public key {}: {e}", file.display()))
        })?;
        keys.add(
            PublicKey::parse(&text)
                .map_err(|e| Error::InvalidInput(format!("{}: {e}", file.display())))?,
        );
    }
    Ok(keys)
}

/// The witnesses in the files given, each read strictly; a file that holds none is an error
/// of the command line, not a verdict on the export.
fn read_witnesses(files: &[PathBuf]) -> Result<Vec<Witness>> {
    files
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).map_err(|e| {
                Error::InvalidInput(format!("cannot read witness {}: {e}", file.display()))
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::InvalidInput(format!("{}: the witness is not UTF-8 text", file.display()))
            })?;
            Witness::parse(&text)
                .map_err(|e| Error::InvalidInput(format!("{}: {e}", file.display())))
        })
        .collect()
}

fn verify(settings: &Settings, args: VerifyArgs) -> Result<ExitCode> {
    let keys = verification_keys(settings, &args.public_keys)?;
    let witnesses = read_witnesses(&args.witnesses)?;
    let expected = Expected {
        chain: args.customer.as_deref(),
        witnesses: &witnesses,
    };
    let file = args.file.as_path();
    let verdict = if file == Path::new("-") {
        export::verify::verify_with(std::io::stdin().lock(), &keys, expected)
    } else {
        export::verify::verify_file_with(file, &keys, expected)
    }
    .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", file.display())))?;
    let intact = verdict.is_ok();
    match (verdict, args.json) {
        (Ok(v), true) => print_json(&json!({"intact": true, "export": v}))?,
        (Ok(v), false) => println!("{}", describe(&v)),
        (Err(bad), true) => {
            print_json(&json!({"intact": false, "line": bad.line, "reason": bad.reason}))?
        }
        (Err(bad), false) => println!("NOT INTACT: {bad}"),
    }
    Ok(exit_code(intact))
}

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
