//! Onboarding a customer: the admin-consent link, the callback that proves the consent, the
//! connection test, and the webhook secret Falcon signs with.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use tokio::time::Instant;

use super::consent::{self, ConsentState};
use super::{Connection, Customer};
use crate::audit::event::{Actor, AuditEvent};
use crate::domain::{ChainId, CustomerSlug, TenantId};
use crate::error::{Error, Result};
use crate::graph::token::REVOKE_ROLE;
use crate::graph::{GraphClient, GraphError, TokenError};
use crate::secrets::SecretCipher;
use crate::store::NewWebhookSecret;
use crate::store::Store;
use crate::time::{Clock, SystemClock, Timestamp};

#[derive(Debug, Clone)]
pub struct OnboardingSettings {
    pub authority_url: url::Url,
    pub client_id: Option<String>,
    pub public_url: url::Url,
    pub consent_link_ttl: Duration,
    pub webhook_grace: Duration,
    pub signature_header: String,
    /// How long a connection test or consent proof may take.
    pub check_deadline: Duration,
}

pub struct Onboarding {
    store: Arc<dyn Store>,
    cipher: Arc<SecretCipher>,
    graph: Option<Arc<GraphClient>>,
    settings: OnboardingSettings,
    /// Stamps and expires consent links and webhook secrets.
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentLink {
    pub customer: String,
    pub url: String,
    pub expires_at: Timestamp,
}

/// What the consent callback concluded, for the page the administrator sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentResult {
    Granted {
        customer: String,
    },
    Failed {
        customer: Option<String>,
        reason: String,
        advice: String,
    },
}

/// The query Entra redirects back with.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub admin_consent: Option<String>,
    pub tenant: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// How a webhook secret is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretIssue {
    /// The customer's first secret (refused when one exists).
    First,
    /// Replaces the current secret, which keeps working for the grace period.
    Rotate,
    /// Replaces the current secret; every earlier one stops at once.
    Revoke,
}

impl SecretIssue {
    /// From the `--rotate` and `--revoke` flags (revoking is the stronger, and wins).
    pub fn from_flags(rotate: bool, revoke: bool) -> SecretIssue {
        match (rotate, revoke) {
            (_, true) => SecretIssue::Revoke,
            (true, false) => SecretIssue::Rotate,
            (false, false) => SecretIssue::First,
        }
    }
}

/// A freshly issued webhook secret and where it goes in the Falcon Store Webhook app.
pub struct IssuedSecret {
    pub url: String,
    pub secret: SecretString,
    pub header: String,
    /// Set when the secret replaced one: until when it stays valid (rotation), or when it
    /// stopped (revocation).
    pub previous_valid_until: Option<Timestamp>,
}

pub fn webhook_context(customer: &str, id: &str) -> String {
    format!("webhook:{customer}:{id}")
}

impl Onboarding {
    pub fn new(
        store: Arc<dyn Store>,
        cipher: Arc<SecretCipher>,
        graph: Option<Arc<GraphClient>>,
        settings: OnboardingSettings,
    ) -> Onboarding {
        Onboarding {
            store,
            cipher,
            graph,
            settings,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same onboarding reading the time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Onboarding {
        Onboarding { clock, ..self }
    }

    /// `by` from now.
    fn later(&self, by: Duration) -> Timestamp {
        self.clock.now().after(by)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.settings.check_deadline
    }

    fn redirect_uri(&self) -> String {
        format!(
            "{}/consent/callback",
            self.settings.public_url.as_str().trim_end_matches('/')
        )
    }

    /// A signed, single-use, expiring admin-consent link for the customer's tenant.
    pub async fn consent_link(&self, customer: &Customer) -> Result<ConsentLink> {
        let client_id = self.settings.client_id.as_deref().ok_or_else(|| {
            Error::InvalidInput(
                "entra.client_id is not set: configure the remediation app first".to_owned(),
            )
        })?;
        let expires_at = self.later(self.settings.consent_link_ttl);
        let state = ConsentState::new(&customer.slug, &customer.tenant_id, expires_at)?;
        self.store
            .create_consent_state(&state.n, &customer.slug, expires_at)
            .await?;
        let url = consent::link(
            &self.settings.authority_url,
            &customer.tenant_id,
            client_id,
            &self.redirect_uri(),
            &state.sign(&self.cipher)?,
        )?;
        Ok(ConsentLink {
            customer: customer.slug.to_string(),
            url,
            expires_at,
        })
    }

    /// Handles Entra's redirect. Only a callback whose signed state verifies, for an existing
    /// customer, on the state's first use, is recorded (in that customer's chain): anything else
    /// is anyone's request, logged and counted but never written to an audit chain. Then Entra's
    /// error, the expiry, the tenant, and proof of the consent by getting a token for the
    /// tenant. Every value copied into the entry is validated or shortened.
    pub async fn callback(&self, params: &CallbackParams, actor: &Actor) -> Result<ConsentResult> {
        let error = params.error.as_deref().map(error_code);
        let Some((state, customer)) = self.verified(params).await? else {
            return Ok(unrecorded(
                "unverifiable",
                None,
                match &error {
                    Some(code) => format!("Entra answered `{code}`"),
                    None => "the link's state is missing, forged or altered".to_owned(),
                },
                "Use the link exactly as the provider sent it.",
            ));
        };
        let now = self.clock.now();
        if !self
            .store
            .use_consent_state(&state.n, &customer.slug, now)
            .await?
        {
            return Ok(unrecorded(
                "spent",
                Some(&customer),
                "the link was already used".to_owned(),
                "Each link works once; ask the provider for a new one.",
            ));
        }
        let tenant_param = params
            .tenant
            .as_deref()
            .and_then(|t| t.parse::<TenantId>().ok());
        let refusal = refusal(
            params,
            error.as_deref(),
            &state,
            &customer,
            tenant_param,
            now,
        );
        let tenant_param = tenant_param.map(|t| t.to_string());
        if let Some(Refusal { reason, advice }) = refusal {
            return self
                .failed(&customer, tenant_param, reason, advice, actor)
                .await;
        }
        self.prove_consent(&customer, tenant_param, actor).await
    }

    /// Never trusts the redirect alone: a token for the tenant with the right roles proves the
    /// consent, which is then recorded and the connection tested.
    async fn prove_consent(
        &self,
        customer: &Customer,
        tenant_param: Option<String>,
        actor: &Actor,
    ) -> Result<ConsentResult> {
        if let Err(why) = self.fresh_token_check(customer.tenant_id).await {
            let advice = "The permissions did not take effect. Ask the provider for a new link and accept all requested permissions.";
            return self
                .failed(customer, tenant_param, why.to_string(), advice, actor)
                .await;
        }
        let event = AuditEvent::ConsentGranted {
            tenant_id: customer.tenant_id.to_string(),
        };
        self.store
            .append(&ChainId::Customer(customer.slug.clone()), actor, &event)
            .await?;
        // The service's own follow-up, not something the visitor asked for.
        let _ = self.test_connection(customer, &Actor::Service).await;
        Ok(ConsentResult::Granted {
            customer: customer.name.clone(),
        })
    }

    /// The callback's signed state and its customer, when the signature verifies and the
    /// customer exists.
    async fn verified(&self, params: &CallbackParams) -> Result<Option<(ConsentState, Customer)>> {
        let Some(state) = params
            .state
            .as_deref()
            .and_then(|s| ConsentState::verify(s, &self.cipher))
        else {
            return Ok(None);
        };
        let Ok(slug) = state.c.parse::<CustomerSlug>() else {
            return Ok(None);
        };
        Ok(self.store.customer(&slug).await?.map(|c| (state, c)))
    }

    async fn failed(
        &self,
        customer: &Customer,
        tenant: Option<String>,
        reason: String,
        advice: &str,
        actor: &Actor,
    ) -> Result<ConsentResult> {
        let event = AuditEvent::ConsentFailed {
            tenant_id: tenant,
            reason: reason.clone(),
        };
        self.store
            .append(&ChainId::Customer(customer.slug.clone()), actor, &event)
            .await?;
        Ok(ConsentResult::Failed {
            customer: Some(customer.name.clone()),
            reason,
            advice: advice.to_owned(),
        })
    }

    fn graph(&self) -> std::result::Result<&GraphClient, NotReady> {
        self.graph.as_deref().ok_or(NotReady::NoRemediationApp)
    }

    /// A newly fetched token for the tenant with the roles killswitch needs, or why not.
    async fn fresh_token_check(&self, tenant: TenantId) -> std::result::Result<(), NotReady> {
        let graph = self.graph()?;
        graph.tokens().invalidate(tenant).await;
        graph.token(tenant, self.deadline()).await?;
        Ok(())
    }

    /// Token, roles, and one cheap Graph read, asked for by `actor`; the result is stored with
    /// the time.
    pub async fn test_connection(&self, customer: &Customer, actor: &Actor) -> Result<Connection> {
        let (ready, detail) = match self.check(customer.tenant_id).await {
            Ok(detail) => (true, detail),
            Err(why) => (false, why.to_string()),
        };
        let now = self.clock.now();
        self.store
            .record_connection_check(&customer.slug, ready, &detail, now)
            .await?;
        let event = AuditEvent::ConnectionTested {
            ready,
            detail: detail.clone(),
        };
        self.store
            .append(&ChainId::Customer(customer.slug.clone()), actor, &event)
            .await?;
        let previous_ok = customer.connection.as_ref().and_then(|c| c.last_ready_at);
        Ok(Connection {
            ready,
            detail,
            checked_at: now,
            last_ready_at: if ready { Some(now) } else { previous_ok },
        })
    }

    async fn check(&self, tenant: TenantId) -> std::result::Result<String, NotReady> {
        self.fresh_token_check(tenant).await?;
        let graph = self.graph()?;
        let token = graph.token(tenant, self.deadline()).await?;
        graph
            .probe(tenant, self.deadline())
            .await
            .map_err(NotReady::probe_failed)?;
        Ok(if token.has_role(REVOKE_ROLE) {
            "ready".to_owned()
        } else {
            "ready (sign-in sessions cannot be revoked: User.RevokeSessions.All is not granted)"
                .to_owned()
        })
    }

    /// Generates a webhook secret in the Standard Webhooks form (`whsec_` and the base64 of 32
    /// random bytes), which the CrowdStrike app and the bearer scheme take as pasted. The first one needs no flag; replacing one
    /// takes `Rotate` (the replaced secret keeps working for the grace period so the Falcon
    /// workflow can be updated without losing detections; any older one stops now) or `Revoke`
    /// (every earlier secret stops now).
    pub async fn issue_webhook_secret(
        &self,
        customer: &Customer,
        issue: SecretIssue,
        actor: &Actor,
    ) -> Result<IssuedSecret> {
        let now = self.clock.now();
        let existing = self.store.webhook_secrets(&customer.slug, now).await?;
        if !existing.is_empty() && issue == SecretIssue::First {
            return Err(Error::Conflict(format!(
                "customer `{}` already has a webhook secret; replace it with --rotate (`rotate` over the API: the old one keeps working for {} hours) or --revoke (`revoke`: the old one stops at once)",
                customer.slug,
                self.settings.webhook_grace.as_secs() / 3600
            )));
        }
        let secret = crate::falcon::signature::WebhookSecret::generate()?;
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self.cipher.seal(
            secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
            &webhook_context(customer.slug.as_str(), &id),
        )?;
        let previous_until = match issue {
            SecretIssue::Revoke => now,
            SecretIssue::First | SecretIssue::Rotate => self.later(self.settings.webhook_grace),
        };
        let replaced = self
            .store
            .add_webhook_secret(&NewWebhookSecret {
                customer: customer.slug.clone(),
                id,
                sealed,
                now,
                previous_until,
                actor: actor.clone(),
            })
            .await?;
        Ok(IssuedSecret {
            url: format!(
                "{}/api/v1/webhooks/falcon/{}",
                self.settings.public_url.as_str().trim_end_matches('/'),
                customer.slug
            ),
            secret,
            header: self.settings.signature_header.clone(),
            previous_valid_until: replaced.then_some(previous_until),
        })
    }
}

/// A callback that is not recorded: counted by `why`, logged, and explained on the page.
fn unrecorded(
    why: &'static str,
    customer: Option<&Customer>,
    reason: String,
    advice: &str,
) -> ConsentResult {
    metrics::counter!("killswitch_consent_callbacks_unrecorded_total", "reason" => why)
        .increment(1);
    tracing::warn!(why, customer = ?customer.map(|c| c.slug.as_str()), "consent callback not recorded");
    ConsentResult::Failed {
        customer: customer.map(|c| c.name.clone()),
        reason,
        advice: advice.to_owned(),
    }
}

/// Why a verified callback is refused before any token is asked for, and what to do next.
struct Refusal {
    reason: String,
    advice: &'static str,
}

/// Entra's error, the link's expiry, or consent given in the wrong tenant, in that order.
fn refusal(
    params: &CallbackParams,
    error: Option<&str>,
    state: &ConsentState,
    customer: &Customer,
    tenant_param: Option<TenantId>,
    now: Timestamp,
) -> Option<Refusal> {
    if let Some(code) = error {
        let description =
            crate::domain::clean_line(params.error_description.as_deref().unwrap_or_default(), 300);
        let declined =
            code == "access_denied" || code == "permission_denied" || code.contains("consent");
        let advice = if declined {
            "The administrator declined the permissions. Ask the provider for a new link when ready."
        } else {
            "Nothing was granted. Ask the provider for a new link and try again."
        };
        return Some(Refusal {
            reason: format!("Entra answered `{code}`: {description}"),
            advice,
        });
    }
    if state.expired(now) {
        return Some(Refusal {
            reason: "the link has expired".to_owned(),
            advice: "Ask the provider for a new link.",
        });
    }
    let wrong_tenant =
        tenant_param != Some(customer.tenant_id) || state.t != customer.tenant_id.to_string();
    wrong_tenant.then(|| Refusal {
        reason: format!(
            "consent was given in another tenant than {}'s ({})",
            customer.name, customer.tenant_id
        ),
        advice: "Sign in with an administrator account of your own organisation and use the link again (ask for a new one).",
    })
}

/// Entra's `error` as it may be recorded: an OAuth error code is a short word of letters,
/// digits and underscores; anything else is replaced.
fn error_code(text: &str) -> String {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        text.to_owned()
    } else {
        "invalid_error_code".to_owned()
    }
}

/// Why a tenant's connection is not ready, in the customer's and operator's terms: the text is
/// recorded in the audit entry and shown by `customer test`.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    /// killswitch itself has no app to ask a token with.
    #[error("the remediation app is not configured (entra.client_id and a secret or certificate)")]
    NoRemediationApp,
    /// The app's credentials cannot be used to ask for a token (a certificate that cannot sign).
    #[error("the remediation app is not configured: {0}")]
    AppUnusable(String),
    #[error(
        "not consented: the customer's administrator has not granted admin consent ({code}); send the consent link"
    )]
    NotConsented { code: String },
    #[error(
        "a permission is missing: {}; the customer must grant admin consent again",
        .missing.join(", ")
    )]
    RolesMissing { missing: Vec<String> },
    #[error("the remediation app's secret or certificate was rejected by Entra ({code})")]
    CredentialsRejected { code: String },
    #[error("Entra does not know this tenant ({code})")]
    TenantUnknown { code: String },
    #[error("Entra unreachable: {0}")]
    EntraUnreachable(String),
    #[error("Entra refused a token ({status} {code}): {description}")]
    TokenRefused {
        status: u16,
        code: String,
        description: String,
    },
    /// The token holds the roles, yet Graph refuses the read they should allow.
    #[error(
        "a permission is missing: Graph denied reading users ({code}); the customer must grant admin consent again"
    )]
    ReadDenied { code: String },
    #[error("Microsoft Graph unreachable: it answered {status} until the deadline")]
    GraphGaveUp { status: u16 },
    #[error("Microsoft Graph unreachable: {reason}")]
    GraphUnreachable { reason: String },
    #[error("Microsoft Graph refused the check: {0}")]
    GraphRefused(Box<GraphError>),
}

impl From<TokenError> for NotReady {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NotConsented { code } => NotReady::NotConsented { code },
            TokenError::MissingRoles { missing } => NotReady::RolesMissing { missing },
            TokenError::CredentialsRejected { code } => NotReady::CredentialsRejected { code },
            TokenError::TenantNotFound { code, .. } => NotReady::TenantUnknown { code },
            TokenError::Unreachable(reason) => NotReady::EntraUnreachable(reason),
            TokenError::NotConfigured(reason) => NotReady::AppUnusable(reason),
            TokenError::Refused {
                status,
                code,
                description,
            } => NotReady::TokenRefused {
                status,
                code,
                description,
            },
        }
    }
}

impl NotReady {
    /// Why the connection test's one Graph read failed.
    fn probe_failed(error: GraphError) -> NotReady {
        match error {
            GraphError::Denied { code, .. } => NotReady::ReadDenied { code },
            GraphError::GaveUp { status, .. } => NotReady::GraphGaveUp { status },
            GraphError::Unreachable { reason, .. } => NotReady::GraphUnreachable { reason },
            GraphError::Token(e) => e.into(),
            other => NotReady::GraphRefused(Box::new(other)),
        }
    }
}
