//! `killswitch analyst …`: enroll analysts and manage their credentials.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

use super::print_json;
use crate::app::Services;
use crate::audit::Actor;
use crate::auth::analysts::{Analyst, AnalystRecord, AnalystStatus, normalize_email};
use crate::auth::gate::Enrollment;
use crate::auth::{Role, Scope, mfa};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::time::Timestamp;

#[derive(Debug, Subcommand)]
pub enum AnalystCommand {
    /// Enroll an analyst: prints their API token once and the TOTP enrollment URI and QR code.
    Add(AddArgs),
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

// No doc comment of its own: the variant's is the command's help.
#[derive(Debug, Args)]
pub struct AddArgs {
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
}

pub async fn run(command: AnalystCommand, settings: &Settings) -> Result<ExitCode> {
    let services = Services::open(settings).await?;
    match command {
        AnalystCommand::Add(args) => add(&services, args).await,
        AnalystCommand::List { json } => list(&services, json).await,
        AnalystCommand::Disable { email, json } => {
            set_status(&services, &email, AnalystStatus::Disabled, json).await
        }
        AnalystCommand::Enable { email, json } => {
            set_status(&services, &email, AnalystStatus::Active, json).await
        }
        AnalystCommand::ResetMfa { email, json } => reset_mfa(&services, &email, json).await,
        AnalystCommand::RotateToken { email, json } => rotate_token(&services, &email, json).await,
    }
}

async fn add(services: &Services, args: AddArgs) -> Result<ExitCode> {
    let role: Role = args.role.parse()?;
    let scope: Scope = args.customers.parse()?;
    crate::customers::require_known(services.store.as_ref(), &scope).await?;
    let enrolled = services
        .auth
        .enroll(
            &args.email,
            args.name.as_deref(),
            role,
            scope,
            &Actor::operator(),
        )
        .await?;
    if args.json {
        let a = &enrolled.analyst;
        print_json(&json!({
            "id": a.id,
            "email": a.email,
            "display_name": a.display_name,
            "role": a.role,
            "customers": a.customers,
            "token": enrolled.token.expose_secret(),
            "otpauth_uri": enrolled.otpauth_uri.expose_secret(),
        }))?;
    } else {
        print_enrolled(&enrolled)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_enrolled(enrolled: &Enrollment) -> Result<()> {
    let a = &enrolled.analyst;
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
    print_enrollment(enrolled.otpauth_uri.expose_secret())
}

async fn list(services: &Services, json: bool) -> Result<ExitCode> {
    let records = services.store.analysts().await?;
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for r in &records {
        let a = r.analyst()?;
        // A lockout that has run out is no longer worth showing.
        let locked = r.locked_until().filter(|until| *until > now);
        rows.push((a, locked));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(a, locked)| json!({"id": a.id, "email": a.email, "display_name": a.display_name, "role": a.role, "customers": a.customers, "status": a.status, "locked_until": locked}))
            .collect();
        print_json(&json!({ "analysts": list }))?;
    } else if rows.is_empty() {
        println!("no analysts yet: add one with `killswitch analyst add --email E --role analyst`");
    } else {
        for (a, locked) in &rows {
            print_analyst_line(a, *locked);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_analyst_line(a: &Analyst, locked: Option<Timestamp>) {
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

async fn set_status(
    services: &Services,
    email: &str,
    status: AnalystStatus,
    json: bool,
) -> Result<ExitCode> {
    let record = find(services, email).await?;
    services
        .auth
        .set_status(&record, status, &Actor::operator())
        .await?;
    if json {
        print_json(&json!({"email": record.email, "status": status}))?;
    } else {
        println!("{} is now {}", record.email, status.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

async fn reset_mfa(services: &Services, email: &str, json: bool) -> Result<ExitCode> {
    let record = find(services, email).await?;
    let uri = services.auth.reset_mfa(&record, &Actor::operator()).await?;
    if json {
        print_json(&json!({"email": record.email, "otpauth_uri": uri.expose_secret()}))?;
    } else {
        println!(
            "New one-time code secret for {}; the old one no longer works.",
            record.email
        );
        println!();
        print_enrollment(uri.expose_secret())?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate_token(services: &Services, email: &str, json: bool) -> Result<ExitCode> {
    let record = find(services, email).await?;
    let token = services
        .auth
        .rotate_token(&record, &Actor::operator())
        .await?;
    if json {
        print_json(&json!({"email": record.email, "token": token.expose_secret()}))?;
    } else {
        println!(
            "New API token for {} (shown once; the old one no longer works):",
            record.email
        );
        println!("  {}", token.expose_secret());
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

fn print_enrollment(uri: &str) -> Result<()> {
    println!(
        "One-time codes: scan this QR code with an authenticator app, or enter the URI by hand."
    );
    println!("{}", mfa::terminal_qr(uri)?);
    println!("  {uri}");
    Ok(())
}
