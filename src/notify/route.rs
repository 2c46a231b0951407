//! Routing: an owed notice becomes the messages it calls for, one per destination, rendered
//! now (so what is stored is what is sent, and what the API shows).
//!
//! SOC events go to the SOC's e-mail and webhook; an action's outcome also goes to the
//! customer's contact addresses, with a witness of the customer's chain signed by the audit
//! key, unless the customer chose the daily digest or no notices.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use uuid::Uuid;

use super::render::{Notice, WitnessBlock};
use super::{
    Audience, Channel, NewNotification, NoticeKind, NotifySettings, OwedNotice, RoutedNotice,
};
use crate::audit::entry::Entry;
use crate::audit::event::{Actor, AuditEvent, AuthMethod, MfaEvidence};
use crate::audit::hash::Hash;
use crate::audit::signing::AuditKey;
use crate::audit::witness::Witness;
use crate::domain::CustomerSlug;
use crate::domain::action::ActionRecord;
use crate::domain::customer::{Customer, NotifyMode};
use crate::domain::detection::{DetectionRecord, DetectionState};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::{Clock, Timestamp};

/// A detection not yet matched to an account this long after it arrived is announced anyway.
const MATCHING_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// What routing decided for a notice.
pub enum Routed {
    /// These messages (possibly none: nobody is configured to hear of it).
    Messages(Vec<NewNotification>),
    /// Not yet: the detection is still being matched; look again on the next round.
    Later,
}

pub struct Router {
    pub store: Arc<dyn Store>,
    pub key: Arc<AuditKey>,
    /// Derives each customer's notice-webhook secret.
    pub cipher: Arc<crate::secrets::SecretCipher>,
    pub settings: Arc<NotifySettings>,
    pub public_url: url::Url,
    pub clock: Arc<dyn Clock>,
}

impl Router {
    /// Routes up to `limit` owed notices in one transaction; returns how many were read (all
    /// `limit` of them: more are probably owed).
    pub async fn route_owed(&self, limit: u32) -> Result<usize> {
        let owed_notices = self.store.owed_notices(limit).await?;
        let read = owed_notices.len();
        let mut routed = Vec::new();
        // Read once per round: a storm of detections owes a notice each, all of one customer.
        let mut customers = HashMap::new();
        for owed in owed_notices {
            let messages = match self.route(&owed, &mut customers).await {
                Ok(Routed::Messages(messages)) => messages,
                Ok(Routed::Later) => continue,
                // A notice that cannot be read must not block the ones behind it.
                Err(e) => {
                    tracing::error!(chain = %owed.chain, seq = owed.seq, error = %e, "a notice cannot be routed; it is dropped");
                    Vec::new()
                }
            };
            routed.push(RoutedNotice {
                chain: owed.chain,
                seq: owed.seq,
                messages,
            });
        }
        let stored = self.store.route_notices(routed, self.clock.now()).await?;
        metrics::counter!("killswitch_notifications_created_total").increment(stored as u64);
        Ok(read)
    }

    async fn route(
        &self,
        owed: &OwedNotice,
        customers: &mut HashMap<String, Option<Customer>>,
    ) -> Result<Routed> {
        let entry: Entry = serde_json::from_str(&owed.entry)
            .map_err(|e| Error::Internal(format!("stored audit entry: {e}")))?;
        let Some(kind) = NoticeKind::parse_stored(&owed.kind) else {
            return Err(Error::Internal(format!(
                "unknown notice kind `{}`",
                owed.kind
            )));
        };
        let customer = self.customer_of(&owed.chain, customers).await?;
        if self.nobody_listens(customer.as_ref()) {
            return Ok(Routed::Messages(Vec::new()));
        }
        let about = About::entry(kind, owed, subject_of(&entry.event));
        let soc = |notice: Notice| Routed::Messages(self.to_soc(&about, customer.as_ref(), notice));
        Ok(match (&entry.event, kind) {
            (AuditEvent::ActionOutcome { action_id, .. }, NoticeKind::ActionOutcome) => {
                let Some(customer) = customer else {
                    return Ok(Routed::Messages(Vec::new()));
                };
                self.action_outcome(&about, owed, &entry, &customer, *action_id)
                    .await?
            }
            (AuditEvent::DetectionReceived { detection_id, .. }, _) => {
                match self.store.detection(*detection_id).await? {
                    Some(d) if self.still_matching(&d) => Routed::Later,
                    Some(d) if d.state == DetectionState::Pending => soc(detection_notice(
                        &d,
                        &self.link(&format!("detections/{}", d.id)),
                        false,
                    )),
                    _ => Routed::Messages(Vec::new()),
                }
            }
            (AuditEvent::ConsentGranted { tenant_id }, _) => soc(customer_event(
                customer.as_ref(),
                &owed.chain,
                "Consent granted",
                format!(
                    "The customer's administrator granted consent (tenant {tenant_id}); killswitch can act there once the connection test is green."
                ),
            )),
            (AuditEvent::ConsentFailed { reason, .. }, _) => soc(customer_event(
                customer.as_ref(),
                &owed.chain,
                "Consent FAILED",
                format!("Admin consent did not complete: {reason}"),
            )),
            (AuditEvent::ConnectionTested { detail, .. }, _) => soc(customer_event(
                customer.as_ref(),
                &owed.chain,
                "Connection test FAILED",
                format!("killswitch cannot act in this tenant now: {detail}"),
            )),
            (AuditEvent::AnalystLockedOut { analyst_id, until }, _) => {
                soc(lockout_notice(*analyst_id, until))
            }
            _ => Routed::Messages(Vec::new()),
        })
    }

    /// The customer whose chain `chain` is (none for the system chain), read once a round.
    async fn customer_of(
        &self,
        chain: &str,
        customers: &mut HashMap<String, Option<Customer>>,
    ) -> Result<Option<Customer>> {
        if let Some(known) = customers.get(chain) {
            return Ok(known.clone());
        }
        let customer = match chain.parse::<CustomerSlug>() {
            Ok(slug) => self.store.customer(&slug).await?,
            Err(_) => None,
        };
        customers.insert(chain.to_owned(), customer.clone());
        Ok(customer)
    }

    /// No channel is configured that could carry a message about this customer (or the SOC's
    /// own events): nothing to render.
    fn nobody_listens(&self, customer: Option<&Customer>) -> bool {
        let soc = self.settings.soc_webhook.is_some()
            || (self.settings.email_ready() && !self.settings.soc_email.is_empty());
        let theirs = customer.is_some_and(|c| {
            c.policy.webhook_url.is_some()
                || (self.settings.email_ready() && !c.policy.contact_addresses().is_empty())
        });
        !soc && !theirs
    }

    fn still_matching(&self, d: &DetectionRecord) -> bool {
        d.state == DetectionState::Pending
            && d.pending_reason.is_none()
            && d.received_at.after(MATCHING_GRACE) > self.clock.now()
    }

    /// The customer's notice and the SOC's message for an action that ended.
    async fn action_outcome(
        &self,
        about: &About,
        owed: &OwedNotice,
        entry: &Entry,
        customer: &Customer,
        action_id: Uuid,
    ) -> Result<Routed> {
        let Some(action) = self.store.action(action_id).await? else {
            return Err(Error::Internal(format!("action {action_id} is not stored")));
        };
        let mfa = self.requested_mfa(&action).await?;
        let link = self.link(&format!("actions/{}", action.id));
        let facts = action_notice(&action, customer, mfa.as_ref(), &link);
        let mut messages = self.to_soc(about, Some(customer), facts.clone());
        if customer.policy.notify == NotifyMode::Immediate {
            let witness = self.witness(owed, entry)?;
            let mut notice = facts;
            notice.witness = Some(witness);
            // The customer cannot open our console: no link.
            notice.link = None;
            messages.extend(self.to_customer(about, customer, notice));
        }
        Ok(Routed::Messages(messages))
    }

    /// How the analyst proved presence for the request, from its `action_requested` entry.
    async fn requested_mfa(&self, action: &ActionRecord) -> Result<Option<MfaEvidence>> {
        let seq = i64::try_from(action.requested_seq).unwrap_or(i64::MAX);
        let mut entries = self.store.entry_range(action.customer.as_str(), seq, seq);
        let Some(record) = entries.next().await.transpose()? else {
            return Ok(None);
        };
        let entry: Entry = serde_json::from_str(&record.entry)
            .map_err(|e| Error::Internal(format!("stored audit entry: {e}")))?;
        Ok(match entry.event {
            AuditEvent::ActionRequested { mfa, .. } => mfa,
            _ => None,
        })
    }

    fn witness(&self, owed: &OwedNotice, entry: &Entry) -> Result<WitnessBlock> {
        let hash = Hash::from_hex(&owed.hash)
            .ok_or_else(|| Error::Internal("stored entry hash is not hex".to_owned()))?;
        WitnessBlock::of(&Witness::sign(
            &self.key,
            &entry.chain,
            entry.seq,
            &hash,
            entry.time,
        )?)
    }

    pub(super) fn link(&self, path: &str) -> String {
        self.public_url
            .join(path)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// One message per SOC channel configured.
    pub fn to_soc(
        &self,
        about: &About,
        customer: Option<&Customer>,
        notice: Notice,
    ) -> Vec<NewNotification> {
        let message = notice.render();
        let mut out = Vec::new();
        if self.settings.email_ready() && !self.settings.soc_email.is_empty() {
            let to = To {
                audience: Audience::Soc,
                customer,
                channel: Channel::Email,
                destination: self.settings.soc_email.join(", "),
            };
            out.push(self.new_message(about, to, &message));
        }
        if let Some(hook) = &self.settings.soc_webhook {
            let channel = match hook.kind {
                super::WebhookKind::Slack => Channel::Slack,
                super::WebhookKind::Teams => Channel::Teams,
                super::WebhookKind::Standard => Channel::Webhook,
            };
            let to = To {
                audience: Audience::Soc,
                customer,
                channel,
                destination: "soc webhook".to_owned(),
            };
            out.push(self.new_message(about, to, &message));
        }
        out
    }

    /// The customer's notice to its contact addresses.
    pub fn to_customer(
        &self,
        about: &About,
        customer: &Customer,
        notice: Notice,
    ) -> Vec<NewNotification> {
        let message = notice.render();
        let mut out = Vec::new();
        let contacts = customer.policy.contact_addresses();
        if !contacts.is_empty() && self.settings.email_ready() {
            let to = To {
                audience: Audience::Customer,
                customer: Some(customer),
                channel: Channel::Email,
                destination: contacts.join(", "),
            };
            out.push(self.new_message(about, to, &message));
        }
        if customer.policy.webhook_url.is_some() {
            let to = To {
                audience: Audience::Customer,
                customer: Some(customer),
                channel: Channel::Webhook,
                destination: "customer webhook".to_owned(),
            };
            out.push(self.new_message(about, to, &message));
        }
        out
    }

    fn new_message(
        &self,
        about: &About,
        to: To<'_>,
        message: &super::render::Message,
    ) -> NewNotification {
        let To {
            audience,
            customer,
            channel,
            destination,
        } = to;
        let dedupe_key = about
            .dedupe
            .as_ref()
            .map(|key| format!("{key}:{}:{}", audience.as_str(), channel.as_str()));
        NewNotification {
            id: Uuid::new_v4(),
            chain: about.entry.as_ref().map(|(chain, _)| chain.clone()),
            seq: about.entry.as_ref().map(|(_, seq)| *seq),
            kind: about.kind,
            about: about.id.clone(),
            dedupe_key,
            audience,
            customer: customer.map(|c| c.slug.clone()),
            channel,
            destination,
            subject: message.subject.clone(),
            message: serde_json::to_string(message).unwrap_or_default(),
            created_at: self.clock.now(),
        }
    }
}

/// What messages are about: their kind, the audit entry they tell of, the action or detection
/// (by id), and for messages several instances may decide on at once (a reminder, a digest)
/// the key that keeps each single.
#[derive(Debug, Clone)]
pub struct About {
    pub kind: NoticeKind,
    pub entry: Option<(String, i64)>,
    pub id: Option<String>,
    pub dedupe: Option<String>,
}

impl About {
    fn entry(kind: NoticeKind, owed: &OwedNotice, id: Option<String>) -> About {
        About {
            kind,
            entry: Some((owed.chain.clone(), owed.seq)),
            id,
            dedupe: None,
        }
    }
}

/// The action or detection an entry is about, if one.
fn subject_of(event: &AuditEvent) -> Option<String> {
    match event {
        AuditEvent::ActionOutcome { action_id, .. } => Some(action_id.to_string()),
        AuditEvent::DetectionReceived { detection_id, .. } => Some(detection_id.to_string()),
        _ => None,
    }
}

/// Where one message goes.
struct To<'c> {
    audience: Audience,
    customer: Option<&'c Customer>,
    channel: Channel,
    destination: String,
}

/// Who acted, in words.
pub fn actor_words(actor: &Actor) -> String {
    match actor {
        Actor::Analyst { email, auth, .. } => format!(
            "analyst {email} (signed in with {})",
            match auth {
                AuthMethod::Oidc => "single sign-on",
                AuthMethod::ApiToken => "an API token",
            }
        ),
        Actor::Falcon { policy, .. } => {
            format!(
                "automatically, under the customer's auto-disable policy ({policy}), from a Falcon detection"
            )
        }
        Actor::Operator { user } => format!("operator {user} (command line)"),
        Actor::Service => "killswitch itself (finishing an interrupted action)".to_owned(),
        Actor::Unauthenticated { .. } => "an unauthenticated request".to_owned(),
    }
}

fn action_notice(
    action: &ActionRecord,
    customer: &Customer,
    mfa: Option<&MfaEvidence>,
    link: &str,
) -> Notice {
    let (subject, headline) = action_words(action, customer);
    let mfa_words = match (mfa, &action.actor) {
        (Some(m), _) => format!(
            "a one-time code ({}) was verified at {} (time step {}); the code itself is never kept",
            m.method, m.verified_at, m.time_step
        ),
        (None, Actor::Falcon { .. }) => {
            "none: automatic, under the customer's opt-in policy".to_owned()
        }
        (None, _) => "none recorded".to_owned(),
    };
    let graph = action.graph.as_ref();
    Notice {
        subject,
        headline,
        link: Some(link.to_owned()),
        data: serde_json::json!({
            "action_id": action.id,
            "customer": customer.slug.as_str(),
            "account": action.account,
            "target_id": action.target_id,
            "operation": action.operation.as_str(),
            "outcome": action.state.as_str(),
            "time": action.finished_at.unwrap_or(action.created_at).to_string(),
            "actor": action.actor,
            "reason": action.reason,
            "ticket": action.ticket,
            "mfa_verified": mfa.is_some(),
            "graph_request_id": graph.and_then(|g| g.request_id.clone()),
            "warnings": action.warnings,
            "detail": action.detail,
        }),
        ..Notice::default()
    }
    .fact("Customer", format!("{} ({})", customer.name, customer.slug))
    .fact("Account", action.account.clone())
    .fact(
        "Entra object id",
        action.target_id.clone().unwrap_or_default(),
    )
    .fact("Operation", action.operation.as_str())
    .fact("Outcome", action.state.as_str())
    .fact(
        "Time",
        action.finished_at.unwrap_or(action.created_at).to_string(),
    )
    .fact("By", actor_words(&action.actor))
    .fact("Reason", action.reason.clone())
    .fact("Ticket", action.ticket.clone().unwrap_or_default())
    .fact("MFA", mfa_words)
    .fact(
        "Graph request-id",
        graph.and_then(|g| g.request_id.clone()).unwrap_or_default(),
    )
    .fact("Detail", action.detail.clone().unwrap_or_default())
    .fact("Warnings", action.warnings.join("; "))
    .fact("Action id", action.id.to_string())
}

fn detection_notice(d: &DetectionRecord, link: &str, reminder: bool) -> Notice {
    let account = d
        .target_upn
        .clone()
        .or_else(|| d.account_upn.clone())
        .unwrap_or_else(|| "an account not yet matched".to_owned());
    let again = if reminder { "STILL WAITING: " } else { "" };
    Notice {
        subject: format!("{again}[{}] {} detection waits for approval: {account}", d.customer, d.severity.as_str()),
        headline: format!(
            "{again}A Falcon detection for {account} in {} waits for an analyst to approve or dismiss it.",
            d.customer
        ),
        link: Some(link.to_owned()),
        data: serde_json::json!({
            "detection_id": d.id,
            "customer": d.customer.as_str(),
            "composite_id": d.composite_id,
            "severity": d.severity.as_str(),
            "account": account,
            "pending_reason": d.pending_reason,
            "received_at": d.received_at.to_string(),
        }),
        ..Notice::default()
    }
    .fact("Customer", d.customer.as_str())
    .fact("Account", account.clone())
    .fact("Severity", d.severity.as_str())
    .fact("Tactic", d.tactic.clone().unwrap_or_default())
    .fact("Technique", d.technique.clone().unwrap_or_default())
    .fact("Why it waits", d.pending_reason.clone().unwrap_or_default())
    .fact("Received", d.received_at.to_string())
    .fact("Falcon", d.falcon_host_link.clone().unwrap_or_default())
    .fact("Composite id", d.composite_id.clone())
}

/// The subject and the headline of an action's notice: what happened, in capitals where a
/// tired reader must not miss it.
fn action_words(action: &ActionRecord, customer: &Customer) -> (String, String) {
    use crate::domain::action::ActionState;
    let (op, done) = match action.operation {
        crate::domain::event::Operation::Disable => ("disable", "DISABLED"),
        crate::domain::event::Operation::Enable => ("enable", "ENABLED"),
    };
    let account = &action.account;
    let tenant = format!("{} ({})", customer.name, customer.slug);
    let detail = action.detail.clone().unwrap_or_default();
    match action.state {
        ActionState::Succeeded => (
            format!("[{}] {done}: {account}", customer.slug),
            format!("{account} is now {done} in Entra ID, in {tenant}."),
        ),
        ActionState::Noop => (
            format!(
                "[{}] already {}: {account}",
                customer.slug,
                done.to_lowercase()
            ),
            format!(
                "{account} was already {} in {tenant}; nothing was changed.",
                done.to_lowercase()
            ),
        ),
        ActionState::Failed => (
            format!("[{}] FAILED to {op}: {account}", customer.slug),
            format!("killswitch could NOT {op} {account} in {tenant}: {detail}"),
        ),
        ActionState::Denied => (
            format!("[{}] REFUSED to {op}: {account}", customer.slug),
            format!("killswitch refused to {op} {account} in {tenant}: {detail}"),
        ),
        ActionState::Requested => (
            format!("[{}] {op} requested: {account}", customer.slug),
            format!("An action to {op} {account} in {tenant} was requested."),
        ),
    }
}

/// A pending detection announced again.
pub fn reminder_notice(d: &DetectionRecord, link: &str) -> Notice {
    detection_notice(d, link, true)
}

fn customer_event(
    customer: Option<&Customer>,
    chain: &str,
    what: &str,
    headline: String,
) -> Notice {
    let name = customer
        .map(|c| c.name.clone())
        .unwrap_or_else(|| chain.to_owned());
    Notice {
        subject: format!("[{chain}] {what}"),
        headline,
        data: serde_json::json!({ "customer": chain, "event": what }),
        ..Notice::default()
    }
    .fact("Customer", format!("{name} ({chain})"))
}

fn lockout_notice(analyst_id: Uuid, until: &Timestamp) -> Notice {
    Notice {
        subject: "An analyst is locked out after wrong one-time codes".to_owned(),
        headline: format!(
            "Analyst {analyst_id} entered too many wrong one-time codes and is locked out until {until}. If it was not them, someone holds their token or session."
        ),
        data: serde_json::json!({ "analyst_id": analyst_id, "until": until.to_string() }),
        ..Notice::default()
    }
    .fact("Analyst id", analyst_id.to_string())
    .fact("Locked until", until.to_string())
}
