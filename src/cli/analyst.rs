//! `killswitch analyst …`: enroll analysts and manage their credentials.

use std::process::ExitCode;

use clap::Subcommand;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::Services;
use crate::audit::Actor;
use crate::auth::analysts::{AnalystRecord, AnalystStatus, normalize_email};
use crate::auth::{Role, Scope, mfa};
use crate::config::Settings;
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum AnalystCommand {
    /// Enroll an analyst: prints their API token once and the TOTP enrollment URI and QR code.
    Add {
        #[arg(long)]
        email: String,
        /// analyst, lead, auditor or admin.
        #[arg(long)]
        role: String,
        /// `all` or a comma-separated list of customer slugs.
        #[arg(long, default_value = "all")]
        customers: String,
        /// Display name (default: the e-mail's local part).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List analysts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop an analyst's token, sessions and codes from working.
    Disable {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Let a disabled analyst work again.
    Enable {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// A new TOTP secret (lost phone); also lifts a lockout.
    ResetMfa {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// A new API token; the old one stops working at once.
    RotateToken {
        email: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: AnalystCommand, settings: &Settings) -> Result<ExitCode> {
    let services = Services::open(settings).await?;
    let actor = Actor::operator();
    match command {
        AnalystCommand::Add {
            email,
            role,
            customers,
            name,
            json,
        } => {
            let role: Role = role.parse()?;
            let scope: Scope = customers.parse()?;
            if let Scope::Customers(slugs) = &scope {
                for slug in slugs {
                    if services.store.customer(slug).await?.is_none() {
                        return Err(Error::InvalidInput(format!(
                            "there is no customer `{slug}` (see `killswitch customer list`)"
                        )));
                    }
                }
            }
            let enrolled = services
                .auth
                .enroll(&email, name.as_deref(), role, scope, &actor)
                .await?;
            let a = &enrolled.analyst;
            if json {
                println!(
                    "{}",
                    json!({
                        "id": a.id,
                        "email": a.email,
                        "display_name": a.display_name,
                        "role": a.role,
                        "customers": a.customers,
                        "token": enrolled.token.expose_secret(),
                        "otpauth_uri": enrolled.otpauth_uri.expose_secret(),
                    })
                );
            } else {
                println!(
                    "Analyst {} added: role {}, customers {}.",
                    a.email,
                    a.role,
                    a.customers.names().join(", ")
                );
                println!();
                println!("API token (shown once; hand it over through a password manager):");
                println!("  {}", enrolled.token.expose_secret());
                println!();
                print_enrollment(enrolled.otpauth_uri.expose_secret())?;
            }
        }
        AnalystCommand::List { json } => {
            let records = services.store.analysts().await?;
            let now = crate::time::Timestamp::now();
            let mut rows = Vec::new();
            for r in &records {
                let a = r.analyst()?;
                let locked = r.locked_until().filter(|until| *until > now);
                rows.push((a, locked));
            }
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(a, locked)| json!({"id": a.id, "email": a.email, "display_name": a.display_name, "role": a.role, "customers": a.customers, "status": a.status, "locked_until": locked}))
                    .collect();
                println!("{}", json!({ "analysts": list }));
            } else if rows.is_empty() {
                println!(
                    "no analysts yet: add one with `killswitch analyst add --email E --role analyst`"
                );
            } else {
                for (a, locked) in rows {
                    let lock = locked
                        .map(|t| format!(", locked until {t}"))
                        .unwrap_or_default();
                    println!(
                        "{}  {}  customers: {}  {}{lock}",
                        a.email,
                        a.role,
                        a.customers.names().join(","),
                        a.status.as_str()
                    );
                }
            }
        }
        AnalystCommand::Disable { email, json } => {
            set_status(&services, &email, AnalystStatus::Disabled, json, &actor).await?
        }
        AnalystCommand::Enable { email, json } => {
            set_status(&services, &email, AnalystStatus::Active, json, &actor).await?
        }
        AnalystCommand::ResetMfa { email, json } => {
            let record = find(&services, &email).await?;
            let uri = services.auth.reset_mfa(&record, &actor).await?;
            if json {
                println!(
                    "{}",
                    json!({"email": record.email, "otpauth_uri": uri.expose_secret()})
                );
            } else {
                println!(
                    "New one-time code secret for {}; the old one no longer works.",
                    record.email
                );
                println!();
                print_enrollment(uri.expose_secret())?;
            }
        }
        AnalystCommand::RotateToken { email, json } => {
            let record = find(&services, &email).await?;
            let token = services.auth.rotate_token(&record, &actor).await?;
            if json {
                println!(
                    "{}",
                    json!({"email": record.email, "token": token.expose_secret()})
                );
            } else {
                println!(
                    "New API token for {} (shown once; the old one no longer works):",
                    record.email
                );
                println!("  {}", token.expose_secret());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn find(services: &Services, email: &str) -> Result<AnalystRecord> {
    let email = normalize_email(email)?;
    services
        .store
        .analyst_by_email(&email)
        .await?
        .ok_or_else(|| Error::NotFound(format!("analyst {email}")))
}

async fn set_status(
    services: &Services,
    email: &str,
    status: AnalystStatus,
    json: bool,
    actor: &Actor,
) -> Result<()> {
    let record = find(services, email).await?;
    services.auth.set_status(&record, status, actor).await?;
    if json {
        println!("{}", json!({"email": record.email, "status": status}));
    } else {
        println!("{} is now {}", record.email, status.as_str());
    }
    Ok(())
}

fn print_enrollment(uri: &str) -> Result<()> {
    println!(
        "One-time codes: scan this QR code with an authenticator app, or enter the URI by hand."
    );
    println!("{}", mfa::terminal_qr(uri)?);
    println!("  {uri}");
    Ok(())
}
