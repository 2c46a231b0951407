//! `killswitch audit …`: verify stored chains, print the public key, sign checkpoints.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::Services;
use crate::audit::AuditKey;
use crate::audit::check::{self, ChainReport};
use crate::config::Settings;
use crate::domain::ChainId;
use crate::error::Result;
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
