//! Errors from Microsoft Graph and the token endpoint, typed by Microsoft's error codes (never by
//! message text), each carrying the evidence the audit log keeps.

use crate::audit::event::GraphEvidence;

/// Why a token for a customer's tenant could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// AADSTS7000229 / AADSTS700016 / AADSTS65001: the remediation app is not in the tenant.
    #[error("the customer has not granted admin consent to the remediation app ({code})")]
    NotConsented { code: String },
    /// AADSTS7000215 and friends: the app's secret or certificate was refused.
    #[error(
        "Entra refused the remediation app's credentials ({code}): check entra.client_secret or entra.certificate_file"
    )]
    CredentialsRejected { code: String },
    #[error("Entra does not know tenant {tenant} ({code})")]
    TenantNotFound { tenant: String, code: String },
    /// The token lacks application permissions killswitch needs.
    #[error(
        "the remediation app is missing Graph permission(s) {missing:?} in this tenant: the customer must grant admin consent again"
    )]
    MissingRoles { missing: Vec<String> },
    #[error("the remediation app is not configured: {0}")]
    NotConfigured(String),
    #[error("the token endpoint answered {status} ({code}): {description}")]
    Refused {
        status: u16,
        code: String,
        description: String,
    },
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
}

/// A failed Graph call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("Entra has no such account")]
    NotFound { evidence: GraphEvidence },
    /// 403 `Authorization_RequestDenied`: a privileged target, or a permission the app lacks.
    #[error("Graph denied the request ({code})")]
    Denied {
        code: String,
        message: String,
        evidence: GraphEvidence,
    },
    #[error("Graph rejected the request ({code})")]
    BadRequest {
        code: String,
        evidence: GraphEvidence,
    },
    /// Still throttled (429) or unavailable (5xx) when the deadline came.
    #[error("Graph kept answering {status} until the deadline")]
    GaveUp {
        status: u16,
        evidence: GraphEvidence,
    },
    /// The connection failed and the deadline came before a retry could succeed.
    #[error("Graph could not be reached: {reason}")]
    Unreachable {
        reason: String,
        evidence: GraphEvidence,
    },
    #[error("Graph answered {status} ({code})")]
    Unexpected {
        status: u16,
        code: String,
        evidence: GraphEvidence,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl GraphError {
    pub fn evidence(&self) -> Option<&GraphEvidence> {
        match self {
            GraphError::NotFound { evidence }
            | GraphError::Denied { evidence, .. }
            | GraphError::BadRequest { evidence, .. }
            | GraphError::GaveUp { evidence, .. }
            | GraphError::Unreachable { evidence, .. }
            | GraphError::Unexpected { evidence, .. } => Some(evidence),
            GraphError::Token(_) => None,
        }
    }

    /// Graph's error `code`, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::NotFound { .. } => Some("Request_ResourceNotFound"),
            GraphError::Denied { code, .. }
            | GraphError::BadRequest { code, .. }
            | GraphError::Unexpected { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The outcome is unknown: the request may or may not have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            GraphError::GaveUp { .. }
                | GraphError::Unreachable { .. }
                | GraphError::Unexpected { .. }
        )
    }
}
