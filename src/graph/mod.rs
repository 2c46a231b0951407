//! Microsoft Graph, as killswitch uses it: read a user, set `accountEnabled`, revoke sessions.
//!
//! Every request carries a fresh `client-request-id`; Graph's `request-id` and `date` come back
//! as evidence for the audit log. Requests are retried on throttling, transient server errors and
//! lost connections (a PATCH of `accountEnabled` is idempotent, so resending it is safe), always
//! within the caller's deadline, and limited in flight per tenant and overall so one busy
//! customer cannot starve the others or push the app into Graph's global throttling.

mod call;
pub mod credentials;
pub mod error;
pub mod retry;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use call::Call;
pub use credentials::{Certificate, ClientCredential};
pub use error::{GraphError, TokenError};
pub use token::{Token, TokenCache};

use crate::audit::event::GraphEvidence;
use crate::domain::{AccountRef, TenantId};

/// The properties killswitch reads; nothing else about a user is fetched or kept.
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,accountEnabled,onPremisesSyncEnabled,onPremisesSecurityIdentifier";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: String,
    #[serde(default)]
    pub user_principal_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_security_identifier: Option<String>,
}

/// A successful answer and what Graph said about it.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub evidence: GraphEvidence,
}

#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub authority_url: url::Url,
    pub graph_url: url::Url,
    pub client_id: String,
    pub credential: ClientCredential,
    pub request_timeout: Duration,
    pub max_in_flight_per_tenant: usize,
    pub max_in_flight: usize,
}

pub struct GraphClient {
    http: reqwest::Client,
    graph_url: Url,
    tokens: TokenCache,
    request_timeout: Duration,
    per_tenant_limit: usize,
    global: Arc<Semaphore>,
    per_tenant: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

impl GraphClient {
    pub fn new(settings: GraphSettings) -> crate::Result<GraphClient> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("killswitch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(settings.max_in_flight.max(1))
            .build()
            .map_err(|e| crate::Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        let tokens = TokenCache::new(
            http.clone(),
            &settings.authority_url,
            settings.client_id,
            settings.credential,
        );
        Ok(GraphClient {
            http,
            graph_url: settings.graph_url,
            tokens,
            request_timeout: settings.request_timeout,
            per_tenant_limit: settings.max_in_flight_per_tenant.max(1),
            global: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            per_tenant: Mutex::new(HashMap::new()),
        })
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// A token for the tenant (fetched or cached), with the roles check applied.
    pub async fn token(&self, tenant: TenantId, deadline: Instant) -> Result<Token, TokenError> {
        self.tokens.get(tenant, deadline).await
    }

    pub async fn get_user(
        &self,
        tenant: TenantId,
        account: &AccountRef,
        deadline: Instant,
    ) -> Result<Answer<GraphUser>, GraphError> {
        let mut url = self.users_url(&[&account.as_graph_key()]);
        url.query_pairs_mut().append_pair("$select", USER_SELECT);
        let answer = self
            .call(Call {
                operation: "get_user",
                tenant,
                method: Method::GET,
                url,
                body: None,
                deadline,
            })
            .await?;
        let user = serde_json::from_slice(&answer.value).map_err(|e| GraphError::Unexpected {
            status: 200,
            code: format!("unreadable user: {e}"),
            evidence: answer.evidence.clone(),
        })?;
        Ok(Answer {
            value: user,
            evidence: answer.evidence,
        })
    }

    /// The user whose on-premises security identifier is `sid` (how Falcon names AD accounts).
    pub async fn find_by_sid(
        &self,
        tenant: TenantId,
        sid: &str,
        deadline: Instant,
    ) -> Result<Answer<Option<GraphUser>>, GraphError> {
        #[derive(Deserialize)]
        struct Page {
            value: Vec<GraphUser>,
        }
        // The SID was validated as `S-` and digits, so it cannot break out of the quotes.
        let mut url = self.users_url(&[]);
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("onPremisesSecurityIdentifier eq '{sid}'"),
            )
            .append_pair("$select", USER_SELECT);
        let answer = self
            .call(Call {
                operation: "find_by_sid",
                tenant,
                method: Method::GET,
                url,
                body: None,
                deadline,
            })
            .await?;
        let page: Page =
            serde_json::from_slice(&answer.value).map_err(|e| GraphError::Unexpected {
                status: 200,
                code: format!("unreadable user list: {e}"),
                evidence: answer.evidence.clone(),
            })?;
        Ok(Answer {
            value: page.value.into_iter().next(),
            evidence: answer.evidence,
        })
    }

    /// The cheapest read there is (one user id): proves the token works against Graph.
    pub async fn probe(
        &self,
        tenant: TenantId,
        deadline: Instant,
    ) -> Result<Answer<()>, GraphError> {
        let mut url = self.users_url(&[]);
        url.query_pairs_mut()
            .append_pair("$top", "1")
            .append_pair("$select", "id");
        let answer = self
            .call(Call {
                operation: "probe",
                tenant,
                method: Method::GET,
                url,
                body: None,
                deadline,
            })
            .await?;
        Ok(Answer {
            value: (),
            evidence: answer.evidence,
        })
    }

    pub async fn set_account_enabled(
        &self,
        tenant: TenantId,
        user_id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<Answer<()>, GraphError> {
        let url = self.users_url(&[user_id]);
        let body = serde_json::json!({ "accountEnabled": enabled });
        let answer = self
            .call(Call {
                operation: "patch_user",
                tenant,
                method: Method::PATCH,
                url,
                body: Some(body),
                deadline,
            })
            .await;
        crate::fault::point("action.patch_sent").await;
        let answer = answer?;
        Ok(Answer {
            value: (),
            evidence: answer.evidence,
        })
    }

    pub async fn revoke_sessions(
        &self,
        tenant: TenantId,
        user_id: &str,
        deadline: Instant,
    ) -> Result<Answer<()>, GraphError> {
        let url = self.users_url(&[user_id, "revokeSignInSessions"]);
        // Current docs answer 200 {"value": true}; older ones 204. Both mean done.
        let answer = self
            .call(Call {
                operation: "revoke_sessions",
                tenant,
                method: Method::POST,
                url,
                body: None,
                deadline,
            })
            .await?;
        Ok(Answer {
            value: (),
            evidence: answer.evidence,
        })
    }

    /// `{graph}/v1.0/users/{segments…}`, each segment percent-encoded as a path segment (a UPN
    /// may hold `#` or `'`).
    fn users_url(&self, segments: &[&str]) -> Url {
        let mut url = self.graph_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["v1.0", "users"])
                .extend(segments);
        }
        url
    }

    fn tenant_slots(&self, tenant: TenantId) -> Arc<Semaphore> {
        let mut slots = self
            .per_tenant
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant_limit)))
            .clone()
    }

    async fn permits(
        &self,
        tenant: TenantId,
        deadline: Instant,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let wait = async {
            let tenant_permit = self.tenant_slots(tenant).acquire_owned().await.ok()?;
            let global_permit = self.global.clone().acquire_owned().await.ok()?;
            Some((tenant_permit, global_permit))
        };
        tokio::time::timeout_at(deadline, wait).await.ok().flatten()
    }
}
