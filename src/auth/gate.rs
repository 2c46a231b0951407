//! Checking who is calling and, for every state change, their fresh one-time code.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::analysts::{AnalystRecord, AnalystStatus, OtpFailure, normalize_email};
use super::roles::{Role, Scope};
use super::{Analyst, mfa, tokens};
use crate::audit::event::{Actor, MfaEvidence, RequestContext};
use crate::domain::CustomerSlug;
use crate::error::Result;
use crate::secrets::SecretCipher;
use crate::store::Store;
use crate::store::{AnalystChange, OtpFailureRecord, refusal_chains};
use crate::time::{Clock, SystemClock};

/// Who presents a one-time code, from where, and aimed at which customer's account.
#[derive(Debug, Clone, Copy)]
pub struct OtpAttempt<'a> {
    pub actor: &'a Actor,
    pub request: Option<&'a RequestContext>,
    pub customer: Option<&'a CustomerSlug>,
}

#[derive(Debug, Clone)]
pub struct MfaPolicy {
    pub max_failures: u32,
    pub lockout: Duration,
}

/// A new analyst's credentials, shown once.
pub struct Enrollment {
    pub analyst: Analyst,
    pub token: SecretString,
    pub otpauth_uri: SecretString,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    cipher: Arc<SecretCipher>,
    policy: MfaPolicy,
    /// Decides the one-time code's time step and when a lockout ends.
    clock: Arc<dyn Clock>,
}

/// What a TOTP secret is sealed for: its analyst, so it opens on no other row.
pub fn totp_context(id: &str) -> String {
    format!("totp:{id}")
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        cipher: Arc<SecretCipher>,
        policy: MfaPolicy,
    ) -> Authenticator {
        Authenticator {
            store,
            cipher,
            policy,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same authenticator reading the time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Authenticator {
        Authenticator { clock, ..self }
    }

    /// The analyst an API token belongs to, active or not (a disabled analyst's token is
    /// refused, but the refusal can be attributed).
    pub async fn by_token(&self, token: &str) -> Result<Option<AnalystRecord>> {
        if !tokens::looks_like_api_token(token) {
            return Ok(None);
        }
        let hash = tokens::hash(token);
        let found = self.store.analyst_by_token(&hash).await?;
        // The lookup matched on the hash already; the constant-time comparison keeps the check
        // itself free of timing differences whatever the database does.
        Ok(found.filter(|r| bool::from(r.token_hash.as_bytes().ct_eq(hash.as_bytes()))))
    }

    /// The analyst with this (verified) e-mail, active or not, for single sign-on.
    pub async fn by_email(&self, email: &str) -> Result<Option<AnalystRecord>> {
        let Ok(email) = normalize_email(email) else {
            return Ok(None);
        };
        self.store.analyst_by_email(&email).await
    }

    /// Checks `code` for the analyst and consumes its time step. `Ok(Err(_))` is a refusal to
    /// answer 401; `Err(_)` a storage failure. Every refusal is recorded in the system chain and
    /// in the chain of the customer the request was aimed at.
    pub async fn verify_otp(
        &self,
        record: &AnalystRecord,
        code: &str,
        attempt: &OtpAttempt<'_>,
    ) -> Result<std::result::Result<MfaEvidence, OtpFailure>> {
        let analyst = record.analyst()?;
        let now = self.clock.now();
        if let Some(until) = record.locked_until().filter(|until| *until > now) {
            self.audit_refusal(analyst.id, "one-time code refused: locked out", attempt)
                .await?;
            return Ok(Err(OtpFailure::Locked { until }));
        }
        let secret = self
            .cipher
            .open(&record.totp_secret, &totp_context(&record.id))?;
        let unix = now.as_datetime().timestamp().max(0) as u64;
        let Some(step) = mfa::matching_step(secret.expose_secret(), code, unix) else {
            let counted = self
                .store
                .record_otp_failure(&OtpFailureRecord {
                    analyst: analyst.id,
                    max_failures: self.policy.max_failures,
                    now,
                    lock_until: now.after(self.policy.lockout),
                    actor: attempt.actor.clone(),
                    request: attempt.request.cloned(),
                    customer: attempt.customer.cloned(),
                })
                .await?;
            return Ok(Err(match counted.locked_until {
                Some(until) => OtpFailure::Locked { until },
                None => OtpFailure::Wrong {
                    failures: counted.failures,
                },
            }));
        };
        if self.store.consume_otp_step(analyst.id, step, now).await? {
            return Ok(Ok(MfaEvidence {
                method: "totp".to_owned(),
                time_step: step,
                verified_at: now,
            }));
        }
        // Lost the race to a lock set meanwhile, or the step was used before.
        let fresh = self.store.analyst(analyst.id).await?;
        if let Some(until) = fresh
            .and_then(|r| r.locked_until())
            .filter(|until| *until > now)
        {
            self.audit_refusal(analyst.id, "one-time code refused: locked out", attempt)
                .await?;
            return Ok(Err(OtpFailure::Locked { until }));
        }
        self.audit_refusal(analyst.id, "one-time code refused: already used", attempt)
            .await?;
        Ok(Err(OtpFailure::Reused))
    }

    /// Records a refused second factor of analyst `id` in the system chain and in the chain of
    /// the customer the request was aimed at.
    pub async fn audit_refusal(
        &self,
        id: Uuid,
        reason: &str,
        attempt: &OtpAttempt<'_>,
    ) -> Result<()> {
        let event = crate::audit::AuditEvent::AuthenticationFailed {
            analyst_id: Some(id),
            reason: reason.to_owned(),
            request: attempt.request.cloned(),
        };
        for chain in refusal_chains(attempt.customer) {
            self.store.append(&chain, attempt.actor, &event).await?;
        }
        Ok(())
    }

    /// Creates an analyst with a fresh API token and TOTP secret.
    pub async fn enroll(
        &self,
        email: &str,
        display_name: Option<&str>,
        role: Role,
        customers: Scope,
        actor: &Actor,
    ) -> Result<Enrollment> {
        let email = normalize_email(email)?;
        let display_name = display_name
            .map(|name| crate::domain::one_line_text("display name", name, 200))
            .transpose()?
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
        let id = Uuid::new_v4();
        let (token, token_hash) = tokens::generate()?;
        let secret = mfa::new_secret()?;
        let now = self.clock.now().to_string();
        let record = AnalystRecord {
            id: id.to_string(),
            display_name,
            role: role.to_string(),
            customers: serde_json::to_string(&customers)
                .map_err(|e| crate::Error::Internal(e.to_string()))?,
            status: AnalystStatus::Active.as_str().to_owned(),
            token_hash,
            totp_secret: self.cipher.seal(&secret, &totp_context(&id.to_string()))?,
            totp_last_step: None,
            failed_otp: 0,
            locked_until: None,
            created_at: now,
            email,
        };
        self.store.add_analyst(&record, actor).await?;
        Ok(Enrollment {
            analyst: record.analyst()?,
            otpauth_uri: SecretString::from(mfa::enrollment_uri(&secret, &record.email)?),
            token,
        })
    }

    /// A new TOTP secret for the analyst; returns the enrollment URI.
    pub async fn reset_mfa(&self, record: &AnalystRecord, actor: &Actor) -> Result<SecretString> {
        let secret = mfa::new_secret()?;
        let sealed = self.cipher.seal(&secret, &totp_context(&record.id))?;
        self.store
            .update_analyst(
                record.analyst()?.id,
                &AnalystChange::ResetMfa(sealed),
                actor,
            )
            .await?;
        Ok(SecretString::from(mfa::enrollment_uri(
            &secret,
            &record.email,
        )?))
    }

    /// A new API token for the analyst; the old one stops working at once.
    pub async fn rotate_token(
        &self,
        record: &AnalystRecord,
        actor: &Actor,
    ) -> Result<SecretString> {
        let (token, hash) = tokens::generate()?;
        self.store
            .update_analyst(
                record.analyst()?.id,
                &AnalystChange::RotateToken(hash),
                actor,
            )
            .await?;
        Ok(token)
    }

    pub async fn set_status(
        &self,
        record: &AnalystRecord,
        status: AnalystStatus,
        actor: &Actor,
    ) -> Result<()> {
        self.store
            .update_analyst(record.analyst()?.id, &AnalystChange::Status(status), actor)
            .await
    }

    /// The TOTP secret of an analyst (tests and the README walkthrough derive codes from it).
    pub fn totp_secret(&self, record: &AnalystRecord) -> Result<secrecy::SecretSlice<u8>> {
        self.cipher
            .open(&record.totp_secret, &totp_context(&record.id))
    }
}
