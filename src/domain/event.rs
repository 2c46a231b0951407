//! What an audit entry says happened, and who did it.
//!
//! Events are a closed, typed enum so every writer records the same shape; the JSON tag `type`
//! is the stable name customers see in exports. New fields may be added over time; verifiers
//! never need to understand an event to check the chain.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// A SOC analyst, identified by id and e-mail, with how they proved who they are, and the
    /// client address their request came from (absent from entries written before it was
    /// recorded, which therefore stay byte-identical).
    Analyst {
        id: Uuid,
        email: String,
        auth: AuthMethod,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_ip: Option<String>,
    },
    /// Someone running the `killswitch` command on the server; `user` is the OS account.
    Operator { user: String },
    /// Falcon: the webhook sender delivering a detection (`policy` is `intake`, `client_ip` its
    /// address), or the automatic rule acting under the customer policy named here (no address:
    /// the service decides on its own).
    Falcon {
        policy: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_ip: Option<String>,
    },
    /// The service itself (key registration, start-up reconciliation, scheduled checkpoints).
    Service,
    /// A request whose identity could not be established (failed authentication).
    Unauthenticated { client_ip: Option<String> },
}

impl Actor {
    /// The operator running this process, named by the OS account (never a secret).
    pub fn operator() -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Actor::Operator { user }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiToken,
    Oidc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Disable,
    Enable,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Disable => "disable",
            Operation::Enable => "enable",
        }
    }

    /// The operation a stored text names ([`as_str`](Self::as_str) read back).
    pub fn parse_stored(text: &str) -> Option<Operation> {
        match text {
            "disable" => Some(Operation::Disable),
            "enable" => Some(Operation::Enable),
            _ => None,
        }
    }

    /// The `accountEnabled` value this operation asks for.
    pub fn target_enabled(self) -> bool {
        self == Operation::Enable
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Noop,
    Failed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Noop => "noop",
            Outcome::Failed => "failed",
            Outcome::Denied => "denied",
        }
    }
}

/// Evidence that a fresh second factor was checked for this action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaEvidence {
    pub method: String,
    pub time_step: u64,
    pub verified_at: Timestamp,
}

/// Where a request came from, for the people reading the log later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An account as Graph described it before or after an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub id: String,
    pub user_principal_name: String,
    pub account_enabled: Option<bool>,
    pub on_premises_sync_enabled: Option<bool>,
}

/// What Microsoft Graph answered, kept so a customer can correlate with their own sign-in and
/// audit logs in Entra.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEvidence {
    pub status: Option<u16>,
    pub error_code: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub date: Option<String>,
}

/// What a notification tells of. Stored by name (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    ActionOutcome,
    DetectionPending,
    /// A detection still waiting, `notify.pending_reminder_secs` after the last word of it.
    DetectionReminder,
    ConsentGranted,
    ConsentFailed,
    ConnectionFailed,
    AnalystLockedOut,
    /// A customer's daily list of the actions on its tenant.
    Digest,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 8] = [
        NoticeKind::ActionOutcome,
        NoticeKind::DetectionPending,
        NoticeKind::DetectionReminder,
        NoticeKind::ConsentGranted,
        NoticeKind::ConsentFailed,
        NoticeKind::ConnectionFailed,
        NoticeKind::AnalystLockedOut,
        NoticeKind::Digest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::ActionOutcome => "action_outcome",
            NoticeKind::DetectionPending => "detection_pending",
            NoticeKind::DetectionReminder => "detection_reminder",
            NoticeKind::ConsentGranted => "consent_granted",
            NoticeKind::ConsentFailed => "consent_failed",
            NoticeKind::ConnectionFailed => "connection_failed",
            NoticeKind::AnalystLockedOut => "analyst_locked_out",
            NoticeKind::Digest => "digest",
        }
    }

    pub fn parse_stored(text: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A checkpoint signing key was put into service; its public half is recorded so older
    /// checkpoints stay verifiable after the key is rotated.
    SigningKeyRegistered {
        key_id: String,
        public_key: String,
    },

    CustomerAdded {
        name: String,
        domain: String,
        tenant_id: Option<String>,
    },
    CustomerUpdated {
        changes: serde_json::Value,
    },
    CustomerPolicyChanged {
        changes: serde_json::Value,
    },

    ConsentGranted {
        tenant_id: String,
    },
    ConsentFailed {
        tenant_id: Option<String>,
        reason: String,
    },

    AnalystAdded {
        analyst_id: Uuid,
        email: String,
        role: String,
        customers: Vec<String>,
    },
    AnalystDisabled {
        analyst_id: Uuid,
        email: String,
    },
    AnalystEnabled {
        analyst_id: Uuid,
        email: String,
    },
    AnalystMfaReset {
        analyst_id: Uuid,
        email: String,
    },
    AnalystTokenRotated {
        analyst_id: Uuid,
        email: String,
    },

    AuthenticationFailed {
        analyst_id: Option<Uuid>,
        reason: String,
        request: Option<RequestContext>,
    },
    AnalystLockedOut {
        analyst_id: Uuid,
        until: Timestamp,
    },

    ActionRequested {
        action_id: Uuid,
        operation: Operation,
        account: String,
        reason: String,
        ticket: Option<String>,
        revoke_sessions: bool,
        mfa: Option<MfaEvidence>,
        request: Option<RequestContext>,
    },
    ActionOutcome {
        action_id: Uuid,
        outcome: Outcome,
        detail: Option<String>,
        warnings: Vec<String>,
        before: Option<AccountState>,
        after: Option<AccountState>,
        graph: Option<GraphEvidence>,
        duration_ms: u64,
    },

    DetectionReceived {
        detection_id: Uuid,
        composite_id: String,
        severity: String,
        account: Option<String>,
        assurance: String,
    },

    /// What was decided about a detection: disabled under the auto-disable policy, approved by
    /// an analyst (the action has its own entries), or dismissed.
    DetectionDecided {
        detection_id: Uuid,
        decision: String,
        reason: Option<String>,
        action_id: Option<Uuid>,
    },

    /// The connection to the customer's tenant was tested: ready, or the exact reason not.
    ConnectionTested {
        ready: bool,
        detail: String,
    },

    /// A webhook secret for Falcon was issued (never the secret itself); when it replaced one,
    /// the previous secret stays valid until the time given.
    WebhookSecretIssued {
        secret_id: String,
        previous_valid_until: Option<Timestamp>,
    },

    AuditExported {
        format: String,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        entries: u64,
    },

    /// The secrets kept encrypted at rest were sealed again under the current key (`key_id`),
    /// after `mfa.encryption_key` was rotated; never the secrets themselves.
    SecretsResealed {
        key_id: String,
        totp_secrets: u64,
        webhook_secrets: u64,
    },

    /// A notice about this customer's tenant was delivered: which notice (its id and kind, and
    /// the entry it told of), by which channel, to whom (addresses, or which webhook); never its
    /// content or a webhook's URL.
    NotificationSent {
        notification_id: Uuid,
        kind: String,
        channel: String,
        destination: String,
        about_seq: Option<u64>,
    },
}

impl AuditEvent {
    /// Every event name, in declaration order (a unit test keeps it complete), so checks over
    /// all of them notice a new one.
    pub const KINDS: &'static [&'static str] = &[
        "signing_key_registered",
        "customer_added",
        "customer_updated",
        "customer_policy_changed",
        "consent_granted",
        "consent_failed",
        "analyst_added",
        "analyst_disabled",
        "analyst_enabled",
        "analyst_mfa_reset",
        "analyst_token_rotated",
        "authentication_failed",
        "analyst_locked_out",
        "action_requested",
        "action_outcome",
        "detection_received",
        "detection_decided",
        "connection_tested",
        "webhook_secret_issued",
        "audit_exported",
        "secrets_resealed",
        "notification_sent",
    ];

    /// The stable event name, identical to the JSON `type` tag (a unit test keeps them equal).
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::SigningKeyRegistered { .. } => "signing_key_registered",
            AuditEvent::CustomerAdded { .. } => "customer_added",
            AuditEvent::CustomerUpdated { .. } => "customer_updated",
            AuditEvent::CustomerPolicyChanged { .. } => "customer_policy_changed",
            AuditEvent::ConsentGranted { .. } => "consent_granted",
            AuditEvent::ConsentFailed { .. } => "consent_failed",
            AuditEvent::AnalystAdded { .. } => "analyst_added",
            AuditEvent::AnalystDisabled { .. } => "analyst_disabled",
            AuditEvent::AnalystEnabled { .. } => "analyst_enabled",
            AuditEvent::AnalystMfaReset { .. } => "analyst_mfa_reset",
            AuditEvent::AnalystTokenRotated { .. } => "analyst_token_rotated",
            AuditEvent::AuthenticationFailed { .. } => "authentication_failed",
            AuditEvent::AnalystLockedOut { .. } => "analyst_locked_out",
            AuditEvent::ActionRequested { .. } => "action_requested",
            AuditEvent::ActionOutcome { .. } => "action_outcome",
            AuditEvent::DetectionReceived { .. } => "detection_received",
            AuditEvent::DetectionDecided { .. } => "detection_decided",
            AuditEvent::ConnectionTested { .. } => "connection_tested",
            AuditEvent::WebhookSecretIssued { .. } => "webhook_secret_issued",
            AuditEvent::AuditExported { .. } => "audit_exported",
            AuditEvent::SecretsResealed { .. } => "secrets_resealed",
            AuditEvent::NotificationSent { .. } => "notification_sent",
        }
    }

    /// The notice this entry calls for in `chain`, if someone must hear of it: the SOC and the
    /// customer of every action's outcome, the SOC of a detection that may be waiting, of
    /// consent, of a connection test that failed and of a lockout. Written with the entry, in
    /// its transaction. A lockout is recorded in the system chain and in the customer's it was
    /// aimed at; it is announced once, from the system chain.
    pub fn notice_in(&self, chain: &crate::domain::ChainId) -> Option<NoticeKind> {
        match self {
            AuditEvent::AnalystLockedOut { .. } if *chain != crate::domain::ChainId::System => None,
            other => other.notice(),
        }
    }

    fn notice(&self) -> Option<NoticeKind> {
        match self {
            AuditEvent::ActionOutcome { .. } => Some(NoticeKind::ActionOutcome),
            AuditEvent::DetectionReceived { .. } => Some(NoticeKind::DetectionPending),
            AuditEvent::ConsentGranted { .. } => Some(NoticeKind::ConsentGranted),
            AuditEvent::ConsentFailed { .. } => Some(NoticeKind::ConsentFailed),
            AuditEvent::ConnectionTested { ready: false, .. } => Some(NoticeKind::ConnectionFailed),
            AuditEvent::AnalystLockedOut { .. } => Some(NoticeKind::AnalystLockedOut),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One value of every variant, so tests can walk them all.
    pub(crate) fn one_of_each() -> Vec<AuditEvent> {
        let id = Uuid::nil();
        let now = Timestamp::now();
        [
            keys_customers_and_consent(),
            analysts_and_authentication(id, now),
            actions_and_detections(id),
            operations(),
        ]
        .concat()
    }

    fn keys_customers_and_consent() -> Vec<AuditEvent> {
        vec![
            AuditEvent::SigningKeyRegistered {
                key_id: "k".into(),
                public_key: "p".into(),
            },
            AuditEvent::CustomerAdded {
                name: "n".into(),
                domain: "d".into(),
                tenant_id: None,
            },
            AuditEvent::CustomerUpdated {
                changes: serde_json::json!({}),
            },
            AuditEvent::CustomerPolicyChanged {
                changes: serde_json::json!({}),
            },
            AuditEvent::ConsentGranted {
                tenant_id: "t".into(),
            },
            AuditEvent::ConsentFailed {
                tenant_id: None,
                reason: "r".into(),
            },
        ]
    }

    fn analysts_and_authentication(id: Uuid, now: Timestamp) -> Vec<AuditEvent> {
        vec![
            AuditEvent::AnalystAdded {
                analyst_id: id,
                email: "e".into(),
                role: "r".into(),
                customers: vec![],
            },
            AuditEvent::AnalystDisabled {
                analyst_id: id,
                email: "e".into(),
            },
            AuditEvent::AnalystEnabled {
                analyst_id: id,
                email: "e".into(),
            },
            AuditEvent::AnalystMfaReset {
                analyst_id: id,
                email: "e".into(),
            },
            AuditEvent::AnalystTokenRotated {
                analyst_id: id,
                email: "e".into(),
            },
            AuditEvent::AuthenticationFailed {
                analyst_id: None,
                reason: "r".into(),
                request: None,
            },
            AuditEvent::AnalystLockedOut {
                analyst_id: id,
                until: now,
            },
        ]
    }

    fn actions_and_detections(id: Uuid) -> Vec<AuditEvent> {
        vec![
            AuditEvent::ActionRequested {
                action_id: id,
                operation: Operation::Disable,
                account: "a".into(),
                reason: "r".into(),
                ticket: None,
                revoke_sessions: false,
                mfa: None,
                request: None,
            },
            AuditEvent::ActionOutcome {
                action_id: id,
                outcome: Outcome::Noop,
                detail: None,
                warnings: vec![],
                before: None,
                after: None,
                graph: None,
                duration_ms: 0,
            },
            AuditEvent::DetectionReceived {
                detection_id: id,
                composite_id: "c".into(),
                severity: "high".into(),
                account: None,
                assurance: "signed".into(),
            },
            AuditEvent::DetectionDecided {
                detection_id: id,
                decision: "dismissed".into(),
                reason: None,
                action_id: None,
            },
        ]
    }

    fn operations() -> Vec<AuditEvent> {
        vec![
            AuditEvent::ConnectionTested {
                ready: true,
                detail: "ready".into(),
            },
            AuditEvent::WebhookSecretIssued {
                secret_id: "w".into(),
                previous_valid_until: None,
            },
            AuditEvent::AuditExported {
                format: "jsonl".into(),
                from: None,
                to: None,
                entries: 0,
            },
            AuditEvent::SecretsResealed {
                key_id: "k".into(),
                totp_secrets: 0,
                webhook_secrets: 0,
            },
            AuditEvent::NotificationSent {
                notification_id: Uuid::nil(),
                kind: "action_outcome".into(),
                channel: "email".into(),
                destination: "security@contoso.example".into(),
                about_seq: Some(2),
            },
        ]
    }

    #[test]
    fn entries_someone_must_hear_of_owe_a_notice_and_no_other_does() {
        let system = crate::domain::ChainId::System;
        let owing: Vec<&str> = one_of_each()
            .iter()
            .filter(|e| e.notice_in(&system).is_some())
            .map(AuditEvent::kind)
            .collect();
        assert_eq!(
            owing,
            [
                "consent_granted",
                "consent_failed",
                "analyst_locked_out",
                "action_outcome",
                "detection_received"
            ]
        );
        let red = AuditEvent::ConnectionTested {
            ready: false,
            detail: "consent withdrawn".into(),
        };
        assert_eq!(red.notice(), Some(NoticeKind::ConnectionFailed));
        let lockout = AuditEvent::AnalystLockedOut {
            analyst_id: Uuid::nil(),
            until: Timestamp::now(),
        };
        let customer = crate::domain::ChainId::Customer("contoso".parse().unwrap());
        assert_eq!(
            lockout.notice_in(&customer),
            None,
            "announced once, from the system chain"
        );
    }

    #[test]
    fn actors_written_before_addresses_were_recorded_read_and_write_back_byte_identical() {
        let old = [
            r#"{"type":"analyst","id":"00000000-0000-0000-0000-000000000000","email":"a@soc.example","auth":"api_token"}"#,
            r#"{"type":"falcon","policy":"intake"}"#,
        ];
        for text in old {
            let actor: Actor = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&actor).unwrap(), text);
        }
    }

    #[test]
    fn kinds_lists_every_variant_in_order() {
        let kinds: Vec<&str> = one_of_each().iter().map(AuditEvent::kind).collect();
        assert_eq!(kinds, AuditEvent::KINDS);
    }

    #[test]
    fn kind_matches_the_serialized_type_tag_for_every_variant() {
        for event in one_of_each() {
            let json = serde_json::to_value(&event).unwrap_or_default();
            assert_eq!(json["type"], event.kind(), "{event:?}");
        }
    }
}
