//! `killswitch audit …`: verify stored chains, print the public key, sign checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::Services;
use crate::audit::check::{self, ChainReport};
use crate::audit::export::{self, ExportRequest, verify::Verified};
use crate::audit::signing::PublicKey;
use crate::audit::{Actor, AuditKey, KeyRing};
use crate::config::Settings;
use crate::domain::ChainId;
use crate::error::{Error, Result};
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
    Export {
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
    },
    /// Verify a JSON Lines export: chain, checkpoint and seal signatures, completeness.
    Verify {
        /// The export file (`-` reads standard input).
        file: PathBuf,
        /// A public key to trust (PEM, the JSON of `audit public-key --json`, or base64);
        /// repeat for keys used before a rotation. Default: this server's own key.
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// Fail unless the export is of this customer.
        #[arg(long, value_name = "SLUG")]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint over the current head of every chain (or one) that advanced.
    Checkpoint {
        #[arg(long, value_name = "SLUG")]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: AuditCommand, settings: &Settings) -> Result<ExitCode> {
    match command {
        AuditCommand::Check { customer, json } => check(settings, customer, json).await,
        AuditCommand::PublicKey { json } => public_key(settings, json),
        AuditCommand::Checkpoint { customer, json } => checkpoint(settings, customer, json).await,
        AuditCommand::Export {
            customer,
            from,
            to,
            format,
            out,
            json,
        } => {
            export(
                settings,
                ExportArgs {
                    customer,
                    from,
                    to,
                    format,
                    out,
                    json,
                },
            )
            .await
        }
        AuditCommand::Verify {
            file,
            public_keys,
            customer,
            json,
        } => verify(settings, &file, &public_keys, customer.as_deref(), json),
    }
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
    let chain = customer.map(|c| c.parse::<ChainId>()).transpose()?;
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
        println!("{}", json!({"intact": intact, "chains": chains}));
    } else {
        if reports.is_empty() {
            println!("no audit entries yet");
        }
        for report in &reports {
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
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report_json(report: &ChainReport) -> serde_json::Value {
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
        println!(
            "{}",
            json!({
                "key_id": key.key_id.as_str(),
                "algorithm": "Ed25519",
                "public_key": key.to_base64(),
                "pem": key.to_pem()?,
            })
        );
    } else {
        print!("{}", key.to_pem()?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn checkpoint(settings: &Settings, customer: Option<String>, json: bool) -> Result<ExitCode> {
    let only = customer.map(|c| c.parse::<ChainId>()).transpose()?;
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
        println!("{}", json!({ "checkpoints": signed }));
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

struct ExportArgs {
    customer: String,
    from: Option<String>,
    to: Option<String>,
    format: String,
    out: Option<PathBuf>,
    json: bool,
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
    let mut body = started.body;
    match &args.out {
        Some(path) => {
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
            if let Err(e) = written {
                // A partial file must not be mistaken for an export.
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
            if args.json {
                println!(
                    "{}",
                    json!({"out": path.display().to_string(), "entries": entries})
                );
            } else {
                eprintln!(
                    "exported {entries} entries of `{}` to {}",
                    args.customer,
                    path.display()
                );
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let context = || "cannot write to standard output".to_owned();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?)
                    .map_err(|e| Error::io(context(), e))?;
            }
            out.flush().map_err(|e| Error::io(context(), e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn verify(
    settings: &Settings,
    file: &Path,
    key_files: &[PathBuf],
    customer: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let keys = verification_keys(settings, key_files)?;
    let verdict = if file == Path::new("-") {
        export::verify::verify(std::io::stdin().lock(), &keys, customer)
    } else {
        export::verify::verify_file(file, &keys, customer)
    }
    .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", file.display())))?;
    match verdict {
        Ok(v) => {
            if json {
                println!("{}", json!({"intact": true, "export": v}));
            } else {
                println!("{}", describe(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(bad) => {
            if json {
                println!(
                    "{}",
                    json!({"intact": false, "line": bad.line, "reason": bad.reason})
                );
            } else {
                println!("NOT INTACT: {bad}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
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
    format!(
        "intact: {} ({}), {range} ({} entries, {} signed checkpoint(s)), period {period}, sealed by key {}",
        v.chain, v.customer, v.entries, v.checkpoints, v.key_id
    )
}
