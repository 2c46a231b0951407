//! Microsoft Graph, as killswitch uses it: read a user, set `accountEnabled`, revoke sessions.
//!
//! Every request carries a fresh `client-request-id`; Graph's `request-id` and `date` come back
//! as evidence for the audit log. Requests are retried on throttling, transient server errors and
//! lost connections (a PATCH of `accountEnabled` is idempotent, so resending it is safe), always
//! within the caller's deadline, and limited in flight per tenant and overall so one busy
//! customer cannot starve the others or push the app into Graph's global throttling.

pub mod credentials;
pub mod error;
pub mod retry;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

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

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
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
            .call("get_user", tenant, Method::GET, url, None, deadline)
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
            .call("find_by_sid", tenant, Method::GET, url, None, deadline)
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
            .call("probe", tenant, Method::GET, url, None, deadline)
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
            .call(
                "patch_user",
                tenant,
                Method::PATCH,
                url,
                Some(body),
                deadline,
            )
            .await?;
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
            .call("revoke_sessions", tenant, Method::POST, url, None, deadline)
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

    /// Sends one logical request, retrying within `deadline`; 2xx returns the body.
    async fn call(
        &self,
        operation: &'static str,
        tenant: TenantId,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        deadline: Instant,
    ) -> Result<Answer<bytes::Bytes>, GraphError> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut evidence = GraphEvidence {
            status: None,
            error_code: None,
            request_id: None,
            client_request_id: Some(client_request_id.clone()),
            date: None,
        };
        let mut refreshed_token = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let token = self.tokens.get(tenant, deadline).await?;
            let Some(permits) = self.permits(tenant, deadline).await else {
                return Err(GraphError::Unreachable {
                    reason: "no free Graph slot before the deadline".to_owned(),
                    evidence,
                });
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.access_token.expose_secret())
                .header("client-request-id", &client_request_id)
                .timeout(self.request_timeout.min(remaining));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let started = Instant::now();
            let sent = request.send().await;
            drop(permits);
            metrics::histogram!("killswitch_graph_request_duration_seconds", "operation" => operation)
                .record(started.elapsed().as_secs_f64());

            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    metrics::counter!("killswitch_graph_requests_total", "operation" => operation, "status" => "error").increment(1);
                    let reason = e.without_url().to_string();
                    let wait = retry::backoff(attempt);
                    if Instant::now() + wait >= deadline {
                        return Err(GraphError::Unreachable { reason, evidence });
                    }
                    tracing::warn!(operation, %tenant, attempt, error = %reason, "Graph unreachable, retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = response.status();
            metrics::counter!("killswitch_graph_requests_total", "operation" => operation, "status" => status.as_str().to_owned()).increment(1);
            evidence.status = Some(status.as_u16());
            evidence.request_id = header(&response, "request-id");
            evidence.date = header(&response, "date");
            if status.is_success() {
                evidence.error_code = None;
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| GraphError::Unreachable {
                        reason: format!("the answer was cut off: {}", e.without_url()),
                        evidence: evidence.clone(),
                    })?;
                return Ok(Answer {
                    value: bytes,
                    evidence,
                });
            }
            let wait = retry::retry_after(response.headers());
            let detail: ErrorBody = response.json().await.unwrap_or_default();
            let code = detail.error.code;
            evidence.error_code = (!code.is_empty()).then(|| code.clone());
            match status {
                StatusCode::UNAUTHORIZED if !refreshed_token => {
                    // A token revoked or rotated early: fetch a new one once.
                    self.tokens.invalidate(tenant).await;
                    refreshed_token = true;
                }
                StatusCode::NOT_FOUND => return Err(GraphError::NotFound { evidence }),
                StatusCode::FORBIDDEN => {
                    return Err(GraphError::Denied {
                        code,
                        message: detail.error.message,
                        evidence,
                    });
                }
                StatusCode::BAD_REQUEST => return Err(GraphError::BadRequest { code, evidence }),
                s if retry::is_retryable(s.as_u16()) => {
                    let wait = wait.unwrap_or_else(|| retry::backoff(attempt));
                    if Instant::now() + wait >= deadline {
                        return Err(GraphError::GaveUp {
                            status: s.as_u16(),
                            evidence,
                        });
                    }
                    metrics::counter!("killswitch_graph_retries_total", "status" => s.as_str().to_owned()).increment(1);
                    tracing::info!(operation, %tenant, attempt, status = s.as_u16(), wait_ms = wait.as_millis() as u64, "Graph asked to retry");
                    tokio::time::sleep(wait).await;
                }
                s => {
                    return Err(GraphError::Unexpected {
                        status: s.as_u16(),
                        code,
                        evidence,
                    });
                }
            }
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
