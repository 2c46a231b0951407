//! `killswitch secrets …`: the secrets kept encrypted at rest.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::print_json;
use crate::app::Services;
use crate::audit::Actor;
use crate::auth::gate::totp_context;
use crate::config::Settings;
use crate::customers::onboarding::webhook_context;
use crate::error::Result;
use crate::store::{Reseal, Resealed};
use crate::time::Timestamp;

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every TOTP and webhook secret under the current mfa.encryption_key, after
    /// which the keys in mfa.previous_encryption_keys can be removed.
    Reseal {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: SecretsCommand, settings: &Settings) -> Result<ExitCode> {
    let SecretsCommand::Reseal { json } = command;
    let services = Services::open(settings).await?;
    let reseal = resealed(&services).await?;
    let (totp, webhook) = services.store.reseal(&reseal).await?;
    if json {
        print_json(
            &json!({"key_id": reseal.key_id, "totp_secrets": totp, "webhook_secrets": webhook}),
        )?;
    } else {
        println!(
            "resealed {totp} TOTP secret(s) and {webhook} webhook secret(s) under key {}; \
             every secret is now readable with mfa.encryption_key alone",
            reseal.key_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every stored secret not yet sealed with the current key, opened (with whichever configured
/// key sealed it) and sealed again. A secret no configured key opens stops the command.
async fn resealed(services: &Services) -> Result<Reseal> {
    let cipher = &services.cipher;
    let again = |id: &str, old: &str, context: &str| -> Result<Option<Resealed>> {
        if cipher.sealed_with_current(old) {
            return Ok(None);
        }
        let plain = cipher.open(old, context)?;
        Ok(Some(Resealed {
            id: id.to_owned(),
            old: old.to_owned(),
            new: cipher.seal(secrecy::ExposeSecret::expose_secret(&plain), context)?,
        }))
    };
    let mut totp = Vec::new();
    for analyst in services.store.analysts().await? {
        totp.extend(again(
            &analyst.id,
            &analyst.totp_secret,
            &totp_context(&analyst.id),
        )?);
    }
    let mut webhook = Vec::new();
    let now = Timestamp::now();
    for customer in services.store.customers().await? {
        for secret in services.store.webhook_secrets(&customer.slug, now).await? {
            let context = webhook_context(customer.slug.as_str(), &secret.id);
            webhook.extend(again(&secret.id, &secret.secret, &context)?);
        }
    }
    Ok(Reseal {
        key_id: cipher.key_id().to_owned(),
        totp,
        webhook,
        actor: Actor::operator(),
    })
}
