//! `killswitch customer …`: onboard customers and set their guard rails.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

use super::{exit_code, print_json};
use crate::app::Services;
use crate::audit::Actor;
use crate::config::Settings;
use crate::customers::onboarding::{IssuedSecret, SecretIssue};
use crate::customers::{AutoDisable, Customer, Policy};
use crate::domain::{AccountRef, CustomerSlug};
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Add a customer; the tenant id is looked up from its primary domain unless given.
    Add(AddArgs),
    /// List customers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The admin-consent link to send the customer's global administrator (single use, expiring).
    ConsentLink {
        slug: String,
        #[arg(long)]
        json: bool,
    },
    /// Check that killswitch can act in the customer's tenant: token, permissions, one Graph read.
    Test {
        slug: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue the secret Falcon signs webhooks with, and print what to paste into Falcon.
    WebhookSecret(WebhookSecretArgs),
    /// Show or change a customer's policy (every change is audited).
    Policy(PolicyArgs),
}

// The argument structs carry no doc comment of their own: the variant's is the command's help.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    slug: String,
    #[arg(long)]
    name: String,
    /// The tenant's primary domain, `<name>.onmicrosoft.com`.
    #[arg(long)]
    domain: String,
    #[arg(long, value_name = "GUID")]
    tenant_id: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WebhookSecretArgs {
    slug: String,
    /// Replace the current secret; it keeps working for falcon.secret_grace_hours, and any
    /// secret older than it stops now.
    #[arg(long)]
    rotate: bool,
    /// Replace the current secret and stop every earlier one at once (a leaked secret).
    #[arg(long)]
    revoke: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    slug: String,
    /// Never touch this account (UPN or object id); repeatable.
    #[arg(long, value_name = "ACCOUNT")]
    protect: Vec<String>,
    #[arg(long, value_name = "ACCOUNT")]
    unprotect: Vec<String>,
    /// Disable on Falcon detections of at least this severity without waiting for an analyst.
    #[arg(long, value_name = "off|high|critical")]
    auto_disable: Option<String>,
    #[arg(long, value_name = "N")]
    max_actions_per_hour: Option<u32>,
    #[arg(long, value_name = "on|off")]
    revoke_sessions: Option<String>,
    /// The customer's security contacts (comma-separated; "" for none): each action on the
    /// tenant is notified there.
    #[arg(long, value_name = "EMAIL[,EMAIL…]")]
    contact: Option<String>,
    /// How the contacts hear of actions: a notice each, a daily digest, or not at all.
    #[arg(long, value_name = "immediate|digest|off")]
    notify: Option<String>,
    /// The customer's own HTTPS endpoint for action notices, signed with Standard Webhooks
    /// ("" for none); the signing secret is printed.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(command: CustomerCommand, settings: &Settings) -> Result<ExitCode> {
    let services = Services::open(settings).await?;
    match command {
        CustomerCommand::Add(args) => add(&services, settings, args).await,
        CustomerCommand::List { json } => list(&services, json).await,
        CustomerCommand::ConsentLink { slug, json } => consent_link(&services, &slug, json).await,
        CustomerCommand::Test { slug, json } => test(&services, &slug, json).await,
        CustomerCommand::WebhookSecret(args) => webhook_secret(&services, args).await,
        CustomerCommand::Policy(args) => policy(&services, args).await,
    }
}

async fn add(services: &Services, settings: &Settings, args: AddArgs) -> Result<ExitCode> {
    let asked = crate::customers::NewCustomer {
        slug: &args.slug,
        name: &args.name,
        domain: &args.domain,
        tenant_id: args.tenant_id.as_deref(),
    };
    let customer = crate::customers::register(
        services.store.as_ref(),
        &settings.entra.authority_url,
        &asked,
        "--name",
        &Actor::operator(),
    )
    .await?;
    if args.json {
        print_json(&customer)?;
    } else {
        println!(
            "customer {} added: {} ({}, tenant {})",
            customer.slug, customer.name, customer.domain, customer.tenant_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(services: &Services, json: bool) -> Result<ExitCode> {
    let customers = services.store.customers().await?;
    if json {
        print_json(&json!({ "customers": customers }))?;
    } else if customers.is_empty() {
        println!(
            "no customers yet: add one with `killswitch customer add --slug S --name N --domain D`"
        );
    } else {
        for c in customers {
            println!(
                "{}  {}  {}  tenant {}",
                c.slug, c.name, c.domain, c.tenant_id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn consent_link(services: &Services, slug: &str, json: bool) -> Result<ExitCode> {
    let customer = find(services, slug).await?;
    let link = services.onboarding.consent_link(&customer).await?;
    if json {
        print_json(
            &json!({"customer": link.customer, "url": link.url, "expires_at": link.expires_at}),
        )?;
    } else {
        println!(
            "Send this link to {}'s global administrator (works once, until {}):",
            customer.name, link.expires_at
        );
        println!();
        println!("  {}", link.url);
        println!();
        println!(
            "They review the requested permissions, press Accept, and land on a page they can close."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails (exit 1) when the tenant is not ready, so a script can gate on it.
async fn test(services: &Services, slug: &str, json: bool) -> Result<ExitCode> {
    let customer = find(services, slug).await?;
    let connection = services
        .onboarding
        .test_connection(&customer, &Actor::operator())
        .await?;
    if json {
        print_json(&json!({"customer": customer.slug, "connection": connection}))?;
    } else {
        if connection.ready {
            println!("{}: {}", customer.slug, connection.detail);
        } else {
            println!("{}: NOT READY: {}", customer.slug, connection.detail);
        }
        match connection.last_ready_at {
            Some(at) => println!("  last successful check: {at}"),
            None => println!("  no successful check yet"),
        }
    }
    Ok(exit_code(connection.ready))
}

async fn webhook_secret(services: &Services, args: WebhookSecretArgs) -> Result<ExitCode> {
    let customer = find(services, &args.slug).await?;
    let issue = SecretIssue::from_flags(args.rotate, args.revoke);
    let issued = services
        .onboarding
        .issue_webhook_secret(&customer, issue, &Actor::operator())
        .await?;
    if args.json {
        print_json(&json!({
            "customer": customer.slug,
            "url": issued.url,
            "secret": issued.secret.expose_secret(),
            "header": issued.header,
            "previous_valid_until": issued.previous_valid_until,
        }))?;
    } else {
        print_falcon_configuration(&customer, issue, &issued);
    }
    Ok(ExitCode::SUCCESS)
}

/// The fields of Falcon's Webhook app, in the order its form asks for them.
fn print_falcon_configuration(customer: &Customer, issue: SecretIssue, issued: &IssuedSecret) {
    println!(
        "Falcon Store \"Webhook\" app, configuration for {}:",
        customer.name
    );
    println!("  URL:               {}", issued.url);
    println!("  HMAC secret key:   {}", issued.secret.expose_secret());
    println!("  Signature header:  {}", issued.header);
    println!("  Algorithm:         hmac-sha256");
    match (issue, issued.previous_valid_until) {
        (SecretIssue::Revoke, Some(_)) => {
            println!();
            println!(
                "Every earlier secret stopped working now; update the Falcon workflow at once."
            );
        }
        (_, Some(until)) => {
            println!();
            println!(
                "The previous secret keeps working until {until}; update the Falcon workflow before then."
            );
        }
        (_, None) => {}
    }
    println!();
    println!(
        "Other senders (Standard Webhooks): give them the same secret, whsec_ included; the official libraries take it as it is."
    );
    println!(
        "The secret is shown once. Payload template and Fusion workflow steps: docs/falcon.md"
    );
}

/// Without change flags this only shows the policy; an unchanged policy writes no audit entry.
async fn policy(services: &Services, args: PolicyArgs) -> Result<ExitCode> {
    let customer = find(services, &args.slug).await?;
    let policy = changed_policy(&customer.policy, &args)?;
    if policy != customer.policy {
        services
            .store
            .update_policy(&customer, &policy, &Actor::operator())
            .await?;
    }
    // The customer's notice webhook is signed with a secret they must hold: shown when the
    // URL is set, never stored or logged.
    let secret = (args.webhook_url.is_some() && policy.webhook_url.is_some())
        .then(|| crate::notify::webhook::customer_secret(&services.cipher, &customer.slug));
    if args.json {
        let mut out = json!({ "customer": customer.slug, "policy": policy });
        if let Some(secret) = &secret {
            out["webhook_secret"] = json!(secret.expose_secret());
        }
        print_json(&out)?;
    } else {
        print_policy(&customer.slug, &policy);
        if let Some(secret) = &secret {
            println!(
                "  webhook secret:       {} (Standard Webhooks; give it to the customer to verify notices)",
                secret.expose_secret()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy with the flags applied; the first invalid flag stops everything.
fn changed_policy(current: &Policy, args: &PolicyArgs) -> Result<Policy> {
    let mut policy = current.clone();
    for account in &args.protect {
        let account: AccountRef = account.parse()?;
        if !policy.protected.contains(&account) {
            policy.protected.push(account);
        }
    }
    for account in &args.unprotect {
        let account: AccountRef = account.parse()?;
        policy.protected.retain(|p| p != &account);
    }
    if let Some(level) = &args.auto_disable {
        policy.auto_disable = level.parse::<AutoDisable>()?;
    }
    if let Some(n) = args.max_actions_per_hour {
        if n == 0 || n > 10_000 {
            return Err(Error::InvalidInput(
                "--max-actions-per-hour takes 1 to 10000".to_owned(),
            ));
        }
        policy.max_actions_per_hour = n;
    }
    if let Some(value) = &args.revoke_sessions {
        policy.revoke_sessions = parse_on_off(value)?;
    }
    if let Some(contact) = &args.contact {
        policy.contact = crate::auth::analysts::normalize_contacts(contact)?;
    }
    if let Some(mode) = &args.notify {
        policy.notify = mode.parse::<crate::domain::customer::NotifyMode>()?;
    }
    if let Some(url) = &args.webhook_url {
        policy.webhook_url = match url.trim() {
            "" => None,
            url => Some(crate::domain::customer::check_webhook_url(url)?),
        };
    }
    Ok(policy)
}

fn parse_on_off(value: &str) -> Result<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(Error::InvalidInput(format!("`{other}` is not on or off"))),
    }
}

fn print_policy(slug: &CustomerSlug, policy: &Policy) {
    let protected: Vec<String> = policy.protected.iter().map(ToString::to_string).collect();
    println!("customer {slug}");
    println!(
        "  protected accounts:   {}",
        if protected.is_empty() {
            "none".to_owned()
        } else {
            protected.join(", ")
        }
    );
    println!("  max actions per hour: {}", policy.max_actions_per_hour);
    println!(
        "  revoke sessions:      {}",
        if policy.revoke_sessions { "on" } else { "off" }
    );
    println!(
        "  auto-disable:         {}",
        serde_json::to_value(policy.auto_disable)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("off")
    );
    println!(
        "  contact:              {}",
        policy.contact.as_deref().unwrap_or("none")
    );
    println!("  notify:               {}", policy.notify.as_str());
    println!(
        "  webhook:              {}",
        policy.webhook_url.as_deref().unwrap_or("none")
    );
}

async fn find(services: &Services, slug: &str) -> Result<Customer> {
    let slug: CustomerSlug = slug.parse()?;
    services.store.customer(&slug).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "customer `{slug}` (see `killswitch customer list`)"
        ))
    })
}
