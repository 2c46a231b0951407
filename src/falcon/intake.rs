//! Receiving a detection: authenticate the raw body, parse it, store it once, find the Entra
//! account, and either disable it at once (the customer opted in, the severity reaches the
//! threshold, the request was signed) or leave it for an analyst to approve or dismiss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use futures::StreamExt;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::payload::Detection;
use super::records::{DetectionRecord, DetectionState};
use super::signature::{Assurance, Rejection, Verifier, WebhookSecret};
use crate::audit::event::{Actor, MfaEvidence, Operation, RequestContext};
use crate::customers::onboarding::webhook_context;
use crate::customers::{AutoDisable, Customer};
use crate::domain::{AccountRef, CustomerSlug, IdempotencyKey, Reason};
use crate::error::{Error, Result};
use crate::graph::{Answer, GraphError, GraphUser};
use crate::remediation::action::DetectionClaim;
use crate::remediation::{ActionRequest, Executed, Remediator, Trigger};
use crate::secrets::SecretCipher;
use crate::store::Decision;
use crate::store::Store;
use crate::time::Timestamp;

#[derive(Debug, Clone)]
pub struct IntakeSettings {
    pub signature_header: String,
    pub tolerance: Duration,
}

pub struct Intake {
    store: Arc<dyn Store>,
    cipher: Arc<SecretCipher>,
    remediator: Option<Arc<Remediator>>,
    settings: IntakeSettings,
}

/// A customer as it is now, and its webhook secrets valid now (decrypted). Read for every
/// delivery, never cached: a revoked secret stops, and a policy change applies, at once.
struct Keys {
    customer: Customer,
    secrets: Vec<WebhookSecret>,
}

/// Why a webhook was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Authentication failed; the sender learns only the status.
    Rejected(Rejection),
    /// Authenticated, but the body is not a detection: the message names the field.
    Invalid(String),
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Failed(e)
    }
}

/// An accepted webhook.
#[derive(Debug, Clone)]
pub struct Received {
    pub detection: DetectionRecord,
    /// `false` when the composite id was known: nothing else was done.
    pub new: bool,
    pub detail: Detection,
    pub customer: Customer,
    pub at: Instant,
}

/// What an automatic or approved disable did.
pub struct Approved {
    pub detection: DetectionRecord,
    pub action: Executed,
}

/// Falcon as the sender of a webhook, known by its address.
fn sender_actor(client: Option<std::net::IpAddr>) -> Actor {
    Actor::Falcon {
        policy: "intake".to_owned(),
        client_ip: client.map(|ip| ip.to_string()),
    }
}

/// Falcon's automatic rule: the service acting on its own under the customer's policy.
fn rule_actor(rule: &str) -> Actor {
    Actor::Falcon {
        policy: rule.to_owned(),
        client_ip: None,
    }
}

/// One action per detection, whoever triggers it and however often: the idempotency key is
/// derived from the composite id.
fn idempotency_key(composite_id: &str) -> Result<IdempotencyKey> {
    let digest = const_hex::encode(&Sha256::digest(composite_id.as_bytes())[..16]);
    Ok(format!("falcon-{digest}").parse()?)
}

impl Intake {
    pub fn new(
        store: Arc<dyn Store>,
        cipher: Arc<SecretCipher>,
        remediator: Option<Arc<Remediator>>,
        settings: IntakeSettings,
    ) -> Intake {
        Intake {
            store,
            cipher,
            remediator,
            settings,
        }
    }

    /// Verifies, parses and stores a webhook from `sender` (the client address, recorded with
    /// the detection). Processing (account lookup, policy) follows in
    /// [`process`](Self::process) for a new detection.
    pub async fn receive(
        &self,
        customer: &str,
        sender: Option<std::net::IpAddr>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> std::result::Result<Received, Refusal> {
        let at = Instant::now();
        let now = Timestamp::now();
        let Ok(slug) = customer.parse::<CustomerSlug>() else {
            return Err(Refusal::Rejected(Rejection::UnknownCustomer));
        };
        let keys = self.load_keys(&slug, now).await?;
        let assurance = self
            .verify(&keys, headers, body, now)
            .map_err(Refusal::Rejected)?;
        let customer = keys.customer;
        let detail = Detection::parse(body).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let record = DetectionRecord {
            id: uuid::Uuid::new_v4(),
            customer: slug.clone(),
            composite_id: detail.composite_id.clone(),
            detection_id: detail.detection_id.clone(),
            severity: detail.severity,
            tactic: detail.tactic.clone(),
            technique: detail.technique.clone(),
            account_upn: detail.account_upn.as_ref().map(ToString::to_string),
            account_sid: detail.account_sid.clone(),
            account_domain: detail.account_domain.clone(),
            falcon_host_link: detail.falcon_host_link.clone(),
            cid: detail.cid.clone(),
            falcon_time: detail.timestamp.clone(),
            assurance,
            state: DetectionState::Pending,
            target_id: None,
            target_upn: None,
            pending_reason: None,
            action_id: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            received_at: now,
            received_run: self.remediator.as_ref().and_then(|r| r.owner()),
        };
        let (detection, new) = self
            .store
            .record_detection(&record, &sender_actor(sender))
            .await?;
        metrics::counter!("killswitch_detections_received_total", "assurance" => assurance.as_str(), "new" => if new { "true" } else { "false" })
            .increment(1);
        Ok(Received {
            detection,
            new,
            detail,
            customer,
            at,
        })
    }

    async fn load_keys(
        &self,
        slug: &CustomerSlug,
        now: Timestamp,
    ) -> std::result::Result<Keys, Refusal> {
        let Some((customer, records)) = self.store.customer_with_secrets(slug, now).await? else {
            return Err(Refusal::Rejected(Rejection::UnknownCustomer));
        };
        let mut secrets = Vec::with_capacity(records.len());
        for record in records {
            let secret = self
                .cipher
                .open(&record.secret, &webhook_context(slug.as_str(), &record.id))?;
            secrets.push(WebhookSecret::new(secret.expose_secret().to_vec()));
        }
        Ok(Keys { customer, secrets })
    }

    fn verify(
        &self,
        keys: &Keys,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> std::result::Result<Assurance, Rejection> {
        Verifier {
            secrets: &keys.secrets,
            signature_header: &self.settings.signature_header,
            signed_string: keys.customer.policy.webhook_signature,
            tolerance_secs: i64::try_from(self.settings.tolerance.as_secs()).unwrap_or(300),
            now,
        }
        .verify(headers, body)
    }

    /// Finds the account and applies the customer's auto-disable policy. When that fails (the
    /// audit log unavailable, say), the detection waits for an analyst with the reason, rather
    /// than undecided.
    pub async fn process(&self, received: &Received) -> Result<DetectionRecord> {
        let decided = self.decide(received).await;
        if let Err(e) = &decided {
            let why = format!("could not be decided automatically ({e}); an analyst decides");
            if let Err(also) = self.leave_to_analyst(received.detection.id, &why).await {
                tracing::error!(detection = %received.detection.id, error = %also, "a detection that could not be decided could not be marked so either");
            }
        }
        decided
    }

    /// Leaves a pending detection to an analyst, saying why (its matched account kept).
    async fn leave_to_analyst(&self, id: uuid::Uuid, why: &str) -> Result<()> {
        let stored = self.reload(id).await?;
        self.store
            .set_detection_target(
                id,
                stored.target_id.as_deref(),
                stored.target_upn.as_deref(),
                Some(why),
            )
            .await
            .map(|_| ())
    }

    async fn decide(&self, received: &Received) -> Result<DetectionRecord> {
        let detection = &received.detection;
        // The customer as read when this delivery arrived (never from a cache): a policy change
        // that returned before then applies to this detection.
        let customer = &received.customer;
        let (target, pending_reason) = match self.resolve(customer, &received.detail).await {
            Ok(target) => (Some(target), None),
            Err(why) => (None, Some(why.to_string())),
        };
        let policy = customer.policy.auto_disable;
        let automatic = target.is_some()
            && policy.covers(received.detail.severity)
            && detection.assurance == Assurance::Signed;
        let waiting_because = pending_reason.clone().or_else(|| {
            (!automatic).then(|| {
                if policy == AutoDisable::Off {
                    "the customer has not opted in to automatic disabling".to_owned()
                } else if detection.assurance != Assurance::Signed {
                    "delivered with a bearer token only: never disabled automatically".to_owned()
                } else {
                    format!(
                        "severity {} is below the customer's automatic threshold ({})",
                        detection.severity.as_str(),
                        policy.as_str()
                    )
                }
            })
        });
        let target = match (target, automatic) {
            (Some(target), true) => target,
            (target, _) => {
                return self
                    .leave_waiting(detection.id, target, waiting_because)
                    .await;
            }
        };
        self.disable_automatically(received, target).await
    }

    /// Stores the account a detection was matched to (if any) and why it waits for an analyst;
    /// returns the detection as it stands.
    async fn leave_waiting(
        &self,
        detection: uuid::Uuid,
        target: Option<Target>,
        waiting_because: Option<String>,
    ) -> Result<DetectionRecord> {
        let (target_id, target_upn) = target
            .map(|t| (t.value.id, t.value.user_principal_name))
            .unzip();
        let updated = self
            .store
            .set_detection_target(
                detection,
                target_id.as_deref(),
                target_upn.as_deref(),
                waiting_because.as_deref(),
            )
            .await?;
        match updated {
            Some(stored) => Ok(stored),
            // Decided meanwhile (an analyst was quicker): as it stands now.
            None => self.reload(detection).await,
        }
    }

    /// Disables the detection's account under the customer's automatic rule, deciding the
    /// detection in the same transaction; returns the detection as stored afterwards.
    async fn disable_automatically(
        &self,
        received: &Received,
        target: Target,
    ) -> Result<DetectionRecord> {
        let (id, upn) = (
            target.value.id.clone(),
            target.value.user_principal_name.clone(),
        );
        let (detection, customer) = (&received.detection, &received.customer);
        let policy = customer.policy.auto_disable;
        let rule = format!("auto-disable at {}", policy.as_str());
        let request = self.disable_request(
            customer,
            detection,
            &id,
            rule_actor(&rule),
            None,
            "disabled automatically",
        )?;
        let claim = DetectionClaim {
            detection: detection.id,
            decision: DetectionState::AutoRemediated,
            reason: Some(format!(
                "severity {} reaches the customer's threshold ({})",
                detection.severity.as_str(),
                policy.as_str()
            )),
            // Stored with the decision, in the admission's transaction.
            target: Some((id.clone(), upn.clone())),
        };
        let remediator = self.remediator()?;
        match remediator
            .execute_deciding(
                request,
                claim,
                Some(Trigger {
                    received: received.at,
                    account: target,
                }),
            )
            .await
        {
            Ok(_) => metrics::counter!("killswitch_detections_auto_remediated_total").increment(1),
            // An analyst decided it first: their decision stands.
            Err(Error::DetectionDecided(_)) => {}
            Err(e) => {
                // Not admitted: the detection waits for an analyst, who still sees the account
                // it was matched to.
                let kept = self
                    .store
                    .set_detection_target(detection.id, Some(&id), Some(&upn), None)
                    .await;
                if let Err(also) = kept {
                    tracing::warn!(detection = %detection.id, error = %also, "the matched account could not be stored");
                }
                return Err(e);
            }
        }
        self.reload(detection.id).await
    }

    /// Decides the detections a crash left stored but undecided (their receiving run is gone,
    /// or they waited longer than an action's lease): as on arrival, under the customer's
    /// policy now, while they are fresh; an older one waits for an analyst, saying why.
    /// Returns how many were taken over.
    pub async fn resume_undecided(&self) -> Result<usize> {
        let Some(remediator) = self.remediator.as_deref() else {
            return Ok(0);
        };
        let now = remediator.clock().now();
        let takeover = remediator.takeover_of_arrivals();
        let undecided = self.store.undecided_detections(&takeover).await?;
        let claimed: Vec<Result<bool>> = futures::stream::iter(undecided)
            .map(|detection| self.take_over(detection, remediator, now))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut resumed = 0;
        for result in claimed {
            if result? {
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Claims one undecided detection and decides it; `false` when another run claimed it.
    async fn take_over(
        &self,
        detection: DetectionRecord,
        remediator: &Remediator,
        now: Timestamp,
    ) -> Result<bool> {
        if !self
            .store
            .claim_detection(&detection, remediator.owner())
            .await?
        {
            return Ok(false);
        }
        let id = detection.id;
        if let Err(e) = self.resume(detection, remediator, now).await {
            tracing::error!(detection = %id, error = %e, "an interrupted detection could not be decided; it waits for an analyst");
        }
        Ok(true)
    }

    async fn resume(
        &self,
        detection: DetectionRecord,
        remediator: &Remediator,
        now: Timestamp,
    ) -> Result<()> {
        let waited = (now.as_datetime() - detection.received_at.as_datetime())
            .to_std()
            .unwrap_or_default();
        if waited > remediator.redrive_within() {
            let why = format!(
                "interrupted before it was decided, more than {} min ago: not disabled automatically, an analyst decides",
                remediator.redrive_within().as_secs() / 60
            );
            return self.leave_to_analyst(detection.id, &why).await;
        }
        let customer = self.customer(&detection).await?;
        tracing::info!(detection = %detection.id, "deciding a detection an interruption left undecided");
        let received = Received {
            detail: reparse(&detection),
            new: true,
            customer,
            at: Instant::now(),
            detection: DetectionRecord {
                received_run: remediator.owner(),
                ..detection
            },
        };
        self.process(&received).await.map(|_| ())
    }

    /// An analyst approves a pending detection (with a one-time code, checked by the caller).
    /// The approval is decided when the disable is admitted, in one transaction: if the
    /// detection was dismissed (or otherwise decided) first, nothing is sent to Graph.
    pub async fn approve(
        &self,
        id: uuid::Uuid,
        actor: Actor,
        mfa: MfaEvidence,
        context: RequestContext,
    ) -> Result<Approved> {
        let detection = self.pending(id).await?;
        let customer = self.customer(&detection).await?;
        let target = match &detection.target_id {
            Some(target) => target.clone(),
            None => {
                let detail = reparse(&detection);
                self.resolve(&customer, &detail)
                    .await
                    .map_err(|why| Error::Conflict(format!("cannot approve: {why}")))?
                    .value
                    .id
            }
        };
        let mut request = self.disable_request(
            &customer,
            &detection,
            &target,
            actor,
            Some(mfa),
            "approved by an analyst",
        )?;
        request.context = Some(context);
        let claim = DetectionClaim {
            detection: id,
            decision: DetectionState::Approved,
            reason: None,
            target: None,
        };
        let action = self
            .remediator()?
            .execute_deciding(request, claim, None)
            .await?;
        Ok(Approved {
            detection: self.reload(detection.id).await?,
            action,
        })
    }

    /// An analyst dismisses a pending detection; nothing is sent to Entra. Decided by
    /// compare-and-set: a detection approved or disabled meanwhile stays so.
    pub async fn dismiss(
        &self,
        id: uuid::Uuid,
        actor: Actor,
        reason: &str,
    ) -> Result<DetectionRecord> {
        let detection = self.pending(id).await?;
        let decision = Decision {
            id: detection.id,
            customer: detection.customer.clone(),
            state: DetectionState::Dismissed,
            action_id: None,
            reason: Some(reason.to_owned()),
            actor,
        };
        if !self.store.decide_detection(&decision).await? {
            let now = self.reload(detection.id).await?;
            return Err(Error::DetectionDecided(now.state));
        }
        self.reload(detection.id).await
    }

    async fn pending(&self, id: uuid::Uuid) -> Result<DetectionRecord> {
        let detection = self
            .store
            .detection(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("detection {id}")))?;
        match detection.state {
            DetectionState::Pending => Ok(detection),
            decided => Err(Error::DetectionDecided(decided)),
        }
    }

    async fn customer(&self, detection: &DetectionRecord) -> Result<Customer> {
        let slug = &detection.customer;
        self.store
            .customer(slug)
            .await?
            .ok_or_else(|| Error::NotFound(format!("customer `{slug}`")))
    }

    async fn reload(&self, id: uuid::Uuid) -> Result<DetectionRecord> {
        self.store
            .detection(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("detection {id} vanished")))
    }

    fn remediator(&self) -> Result<&Remediator> {
        self.remediator.as_deref().ok_or_else(|| {
            Error::Upstream(
                "the remediation app is not configured; nothing was sent to Entra".to_owned(),
            )
        })
    }

    fn disable_request(
        &self,
        customer: &Customer,
        detection: &DetectionRecord,
        target_id: &str,
        actor: Actor,
        mfa: Option<MfaEvidence>,
        how: &str,
    ) -> Result<ActionRequest> {
        let technique = [detection.tactic.as_deref(), detection.technique.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / ");
        let reason = format!(
            "Falcon detection {} ({} severity{}{}), {how}",
            detection.composite_id.chars().take(120).collect::<String>(),
            detection.severity.as_str(),
            if technique.is_empty() { "" } else { ", " },
            technique.chars().take(200).collect::<String>()
        );
        Ok(ActionRequest {
            customer: customer.slug.clone(),
            operation: Operation::Disable,
            account: target_id.parse::<AccountRef>()?,
            reason: reason
                .chars()
                .take(Reason::MAX_CHARS)
                .collect::<String>()
                .parse()?,
            ticket: None,
            revoke_sessions: None,
            idempotency_key: Some(idempotency_key(&detection.composite_id)?),
            actor,
            mfa,
            context: None,
        })
    }

    /// The Entra account a detection names: by on-premises SID first (Falcon describes the AD
    /// account), then by UPN. `Err` is the reason it stays pending.
    async fn resolve(
        &self,
        customer: &Customer,
        detail: &Detection,
    ) -> std::result::Result<Target, Unresolved> {
        let Some(remediator) = self.remediator.as_deref() else {
            return Err(Unresolved::NoRemediationApp);
        };
        let graph = remediator.graph();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        if let Some(sid) = &detail.account_sid {
            let answer = graph
                .find_by_sid(customer.tenant_id, sid, deadline)
                .await
                .map_err(Unresolved::LookupFailed)?;
            match answer.value {
                Some(user) => {
                    return Ok(Answer {
                        value: user,
                        evidence: answer.evidence,
                    });
                }
                None if detail.account_upn.is_none() => {
                    return Err(Unresolved::NoSuchSid(sid.clone()));
                }
                None => {}
            }
        }
        let Some(upn) = &detail.account_upn else {
            return Err(Unresolved::NoAccountNamed);
        };
        match graph.get_user(customer.tenant_id, upn, deadline).await {
            Ok(answer) => Ok(answer),
            Err(GraphError::NotFound { .. }) => Err(Unresolved::NoSuchUpn(upn.clone())),
            Err(e) => Err(Unresolved::LookupFailed(e)),
        }
    }
}

/// The Entra account a detection names, as the look-up found it (and Graph's evidence): its
/// object id and UPN are stored with the detection, and an automatic action may take it as
/// its read before the change.
type Target = Answer<GraphUser>;

/// Why a detection's account was not found; the text is the reason the detection stays pending.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error("the remediation app is not configured, so the account could not be looked up")]
    NoRemediationApp,
    /// Graph failed; the account may well exist.
    #[error("the account could not be looked up: {0}")]
    LookupFailed(GraphError),
    /// Falcon named only a SID, and no account synchronised from AD carries it.
    #[error("no Entra account has the on-premises SID {0}")]
    NoSuchSid(String),
    #[error("the detection names no account")]
    NoAccountNamed,
    #[error("no account {0} in the customer's tenant")]
    NoSuchUpn(AccountRef),
}

/// The detection's account fields as a [`Detection`] again, to retry the lookup on approval.
fn reparse(record: &DetectionRecord) -> Detection {
    Detection {
        composite_id: record.composite_id.clone(),
        detection_id: record.detection_id.clone(),
        severity: record.severity,
        tactic: record.tactic.clone(),
        technique: record.technique.clone(),
        account_upn: record.account_upn.as_deref().and_then(|u| u.parse().ok()),
        account_sid: record.account_sid.clone(),
        account_domain: record.account_domain.clone(),
        falcon_host_link: record.falcon_host_link.clone(),
        cid: record.cid.clone(),
        timestamp: record.falcon_time.clone(),
    }
}
