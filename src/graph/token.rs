//! App-only tokens for Microsoft Graph, one cache slot per customer tenant.
//!
//! A token is fetched with the client-credentials grant, reused until shortly before it expires,
//! and refreshed by one task at a time per tenant (the others wait for its result), so a burst of
//! actions on one tenant costs one token request. Its `roles` claim is checked: a tenant where
//! the customer granted less than killswitch needs fails with a clear reason, not a 403 later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

use super::credentials::ClientCredential;
use super::error::TokenError;
use super::retry;
use crate::domain::TenantId;

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Application permissions killswitch needs, each with the broader ones that also cover it.
pub const REQUIRED_ROLES: [(&str, &[&str]); 2] = [
    (
        "User.Read.All",
        &[
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    ),
    (
        "User.EnableDisableAccount.All",
        &["User.ReadWrite.All", "Directory.ReadWrite.All"],
    ),
];
pub const REVOKE_ROLE: (&str, &[&str]) = (
    "User.RevokeSessions.All",
    &["User.ReadWrite.All", "Directory.ReadWrite.All"],
);

#[derive(Clone)]
pub struct Token {
    pub access_token: SecretString,
    pub roles: Option<Vec<String>>,
    refresh_at: Instant,
}

impl Token {
    pub fn has_role(&self, (role, broader): (&str, &[&str])) -> bool {
        match &self.roles {
            Some(roles) => roles
                .iter()
                .any(|r| r == role || broader.contains(&r.as_str())),
            // An undecodable token: let Graph be the judge.
            None => true,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

pub struct TokenCache {
    http: reqwest::Client,
    authority: String,
    client_id: String,
    credential: ClientCredential,
    slots: Mutex<HashMap<TenantId, Slot>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct AadError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        authority: &url::Url,
        client_id: String,
        credential: ClientCredential,
    ) -> TokenCache {
        TokenCache {
            http,
            authority: authority.as_str().trim_end_matches('/').to_owned(),
            client_id,
            credential,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn token_url(&self, tenant: &TenantId) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority)
    }

    fn slot(&self, tenant: TenantId) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(tenant).or_default().clone()
    }

    /// Forgets the tenant's token (Graph said it is no longer valid).
    pub async fn invalidate(&self, tenant: TenantId) {
        *self.slot(tenant).lock().await = None;
    }

    /// A valid token for `tenant` with the required roles, fetched if needed before `deadline`.
    pub async fn get(&self, tenant: TenantId, deadline: Instant) -> Result<Token, TokenError> {
        let slot = self.slot(tenant);
        let mut cached = tokio::time::timeout_at(deadline, slot.lock())
            .await
            .map_err(|_| {
                TokenError::Unreachable("timed out waiting for another token request".to_owned())
            })?;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.clone());
        }
        let token = self.fetch(tenant, deadline).await?;
        let missing: Vec<String> = REQUIRED_ROLES
            .iter()
            .filter(|required| !token.has_role(**required))
            .map(|(role, _)| (*role).to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(TokenError::MissingRoles { missing });
        }
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn fetch(&self, tenant: TenantId, deadline: Instant) -> Result<Token, TokenError> {
        let url = self.token_url(&tenant);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", self.client_id.clone()),
                ("scope", GRAPH_SCOPE.to_owned()),
            ];
            form.extend(
                self.credential
                    .form_fields(&self.client_id, &url)
                    .map_err(|unsigned| TokenError::NotConfigured(unsigned.to_string()))?,
            );
            let remaining = deadline.saturating_duration_since(Instant::now());
            metrics::counter!("killswitch_token_requests_total").increment(1);
            let sent = self
                .http
                .post(&url)
                .form(&form)
                .timeout(remaining)
                .send()
                .await;
            let wait = match sent {
                Ok(response) if response.status().is_success() => {
                    let body: TokenResponse = response.json().await.map_err(|e| {
                        TokenError::Unreachable(format!("unreadable token response: {e}"))
                    })?;
                    return Ok(token_from(body));
                }
                Ok(response) if retry::is_retryable(response.status().as_u16()) => {
                    retry::retry_after(response.headers())
                        .unwrap_or_else(|| retry::backoff(attempt))
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let error: AadError = response.json().await.unwrap_or_default();
                    return Err(classify(tenant, status, error));
                }
                Err(e) if Instant::now() + retry::backoff(attempt) < deadline => {
                    tracing::warn!(%tenant, error = %e, "token endpoint unreachable, retrying");
                    retry::backoff(attempt)
                }
                Err(e) => return Err(TokenError::Unreachable(e.without_url().to_string())),
            };
            if Instant::now() + wait >= deadline {
                return Err(TokenError::Unreachable(
                    "the token endpoint kept refusing until the deadline".to_owned(),
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }
}

fn token_from(body: TokenResponse) -> Token {
    let lifetime = Duration::from_secs(body.expires_in);
    // Renew a little early: at most five minutes, at most a tenth of the lifetime.
    let margin = (lifetime / 10).min(Duration::from_secs(300));
    let roles = roles_of(&body.access_token);
    Token {
        access_token: SecretString::from(body.access_token),
        roles,
        refresh_at: Instant::now() + lifetime.saturating_sub(margin),
    }
}

/// The `roles` claim of a JWT access token, read without verifying it (it is meant for Graph,
/// which verifies it; we only look at what it grants).
fn roles_of(token: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        roles: Vec<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&bytes)
        .ok()
        .map(|c| c.roles)
}

fn classify(tenant: TenantId, status: u16, error: AadError) -> TokenError {
    let code = error
        .error_codes
        .first()
        .copied()
        .or_else(|| aadsts_code(&error.error_description))
        .map(|n| format!("AADSTS{n}"))
        .unwrap_or_else(|| error.error.clone());
    match error
        .error_codes
        .first()
        .copied()
        .or_else(|| aadsts_code(&error.error_description))
    {
        Some(7000229 | 700016 | 65001 | 500011) => TokenError::NotConsented { code },
        Some(7000215 | 7000222 | 700027 | 700024 | 7000112 | 50012) => {
            TokenError::CredentialsRejected { code }
        }
        Some(90002 | 90023) => TokenError::TenantNotFound {
            tenant: tenant.to_string(),
            code,
        },
        _ => TokenError::Refused {
            status,
            code,
            // Entra's descriptions carry trace ids, never secrets; keep the first sentence.
            description: error
                .error_description
                .split(". ")
                .next()
                .unwrap_or_default()
                .to_owned(),
        },
    }
}

fn aadsts_code(description: &str) -> Option<u64> {
    let rest = description.split("AADSTS").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_the_token_payload() {
        let payload = URL_SAFE_NO_PAD
            .encode(br#"{"roles":["User.Read.All","User.EnableDisableAccount.All"]}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            roles_of(&token),
            Some(vec![
                "User.Read.All".to_owned(),
                "User.EnableDisableAccount.All".to_owned()
            ])
        );
        assert_eq!(roles_of("opaque"), None);
    }

    #[test]
    fn aad_errors_are_classified_by_code_not_text() {
        let tenant = TenantId::new(uuid::Uuid::nil());
        let err = |codes: Vec<u64>, description: &str| AadError {
            error: "invalid_client".into(),
            error_description: description.into(),
            error_codes: codes,
        };
        assert!(matches!(
            classify(tenant, 400, err(vec![7000229], "")),
            TokenError::NotConsented { .. }
        ));
        assert!(matches!(
            classify(
                tenant,
                400,
                err(vec![], "AADSTS700016: Application not found")
            ),
            TokenError::NotConsented { .. }
        ));
        assert!(matches!(
            classify(tenant, 401, err(vec![7000215], "")),
            TokenError::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify(tenant, 400, err(vec![90002], "")),
            TokenError::TenantNotFound { .. }
        ));
        assert!(matches!(
            classify(tenant, 400, err(vec![1], "x")),
            TokenError::Refused { .. }
        ));
    }
}
