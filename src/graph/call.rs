//! One logical Graph request, however many attempts it takes: build and send an attempt within
//! what is left of the deadline, classify Graph's answer, and decide whether to try again.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::{Answer, GraphClient, GraphError, retry};
use crate::audit::event::GraphEvidence;
use crate::domain::TenantId;

/// What to ask Graph, and the name metrics and logs know the request by.
pub(super) struct Call {
    pub operation: &'static str,
    pub tenant: TenantId,
    pub method: Method,
    pub url: Url,
    pub body: Option<serde_json::Value>,
    pub deadline: Instant,
}

/// What the attempts of one call share: one `client-request-id` for all of them, so Microsoft
/// can follow the call across retries, and the evidence of the latest answer.
struct Attempts {
    client_request_id: String,
    evidence: GraphEvidence,
    count: u32,
    refreshed_token: bool,
}

impl Attempts {
    fn new() -> Attempts {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        Attempts {
            evidence: GraphEvidence {
                status: None,
                error_code: None,
                request_id: None,
                client_request_id: Some(client_request_id.clone()),
                date: None,
            },
            client_request_id,
            count: 0,
            refreshed_token: false,
        }
    }
}

/// Where an attempt leaves the call.
enum Next {
    Done(Answer<Bytes>),
    Fail(GraphError),
    /// Try again, after the wait when there is one.
    Retry(Option<Duration>),
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
    /// Sends one logical request, retrying within `deadline`; 2xx returns the body.
    pub(super) async fn call(&self, call: Call) -> Result<Answer<Bytes>, GraphError> {
        let mut attempts = Attempts::new();
        loop {
            attempts.count += 1;
            let next = match self.send(&call, &attempts).await? {
                Ok(response) => self.classify(&call, &mut attempts, response).await,
                Err(lost) => after_lost_connection(&call, &attempts, lost),
            };
            match next {
                Next::Done(answer) => return Ok(answer),
                Next::Fail(error) => return Err(error),
                Next::Retry(Some(wait)) => tokio::time::sleep(wait).await,
                Next::Retry(None) => {}
            }
        }
    }

    /// One attempt on the wire: a token, a free slot, and a timeout no later than the deadline.
    /// The outer error ends the call; the inner one is a lost connection, worth another try.
    async fn send(
        &self,
        call: &Call,
        attempts: &Attempts,
    ) -> Result<reqwest::Result<Response>, GraphError> {
        let token = self.tokens.get(call.tenant, call.deadline).await?;
        let Some(permits) = self.permits(call.tenant, call.deadline).await else {
            return Err(GraphError::Unreachable {
                reason: "no free Graph slot before the deadline".to_owned(),
                evidence: attempts.evidence.clone(),
            });
        };
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.access_token.expose_secret())
            .header("client-request-id", &attempts.client_request_id)
            .timeout(self.request_timeout.min(remaining));
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let started = Instant::now();
        let sent = request.send().await;
        drop(permits);
        metrics::histogram!("killswitch_graph_request_duration_seconds", "operation" => call.operation)
            .record(started.elapsed().as_secs_f64());
        Ok(sent)
    }

    /// Reads Graph's answer into the evidence: a success ends the call, a refusal goes to
    /// `refusal` once its error code is known.
    async fn classify(&self, call: &Call, attempts: &mut Attempts, response: Response) -> Next {
        let status = response.status();
        metrics::counter!("killswitch_graph_requests_total", "operation" => call.operation, "status" => status.as_str().to_owned()).increment(1);
        attempts.evidence.status = Some(status.as_u16());
        attempts.evidence.request_id = header(&response, "request-id");
        attempts.evidence.date = header(&response, "date");
        if status.is_success() {
            attempts.evidence.error_code = None;
            return match response.bytes().await {
                Ok(bytes) => Next::Done(Answer {
                    value: bytes,
                    evidence: attempts.evidence.clone(),
                }),
                Err(e) => Next::Fail(GraphError::Unreachable {
                    reason: format!("the answer was cut off: {}", e.without_url()),
                    evidence: attempts.evidence.clone(),
                }),
            };
        }
        let wait = retry::retry_after(response.headers());
        let detail: ErrorBody = response.json().await.unwrap_or_default();
        let code = &detail.error.code;
        attempts.evidence.error_code = (!code.is_empty()).then(|| code.clone());
        if status == StatusCode::UNAUTHORIZED && !attempts.refreshed_token {
            // A token revoked or rotated early: fetch a new one once.
            self.tokens.invalidate(call.tenant).await;
            attempts.refreshed_token = true;
            return Next::Retry(None);
        }
        refusal(call, attempts, status, wait, detail.error)
    }
}

/// A connection that failed is tried again after a backoff, unless the deadline comes first.
fn after_lost_connection(call: &Call, attempts: &Attempts, lost: reqwest::Error) -> Next {
    let (operation, tenant, attempt) = (call.operation, call.tenant, attempts.count);
    metrics::counter!("killswitch_graph_requests_total", "operation" => operation, "status" => "error").increment(1);
    let reason = lost.without_url().to_string();
    let wait = retry::backoff(attempt);
    if Instant::now() + wait >= call.deadline {
        return Next::Fail(GraphError::Unreachable {
            reason,
            evidence: attempts.evidence.clone(),
        });
    }
    tracing::warn!(operation, %tenant, attempt, error = %reason, "Graph unreachable, retrying");
    Next::Retry(Some(wait))
}

/// A non-2xx answer: throttling and transient trouble are retried (after `Retry-After` when
/// Graph sent one) while the deadline allows; everything else ends the call with its kind.
fn refusal(
    call: &Call,
    attempts: &Attempts,
    status: StatusCode,
    retry_after: Option<Duration>,
    detail: ErrorDetail,
) -> Next {
    let evidence = attempts.evidence.clone();
    let code = detail.code;
    match status {
        StatusCode::NOT_FOUND => Next::Fail(GraphError::NotFound { evidence }),
        StatusCode::FORBIDDEN => Next::Fail(GraphError::Denied {
            code,
            message: detail.message,
            evidence,
        }),
        StatusCode::BAD_REQUEST => Next::Fail(GraphError::BadRequest { code, evidence }),
        s if retry::is_retryable(s.as_u16()) => {
            let (operation, tenant, attempt) = (call.operation, call.tenant, attempts.count);
            let wait = retry_after.unwrap_or_else(|| retry::backoff(attempt));
            if Instant::now() + wait >= call.deadline {
                return Next::Fail(GraphError::GaveUp {
                    status: s.as_u16(),
                    evidence,
                });
            }
            metrics::counter!("killswitch_graph_retries_total", "status" => s.as_str().to_owned())
                .increment(1);
            tracing::info!(operation, %tenant, attempt, status = s.as_u16(), wait_ms = wait.as_millis() as u64, "Graph asked to retry");
            Next::Retry(Some(wait))
        }
        s => Next::Fail(GraphError::Unexpected {
            status: s.as_u16(),
            code,
            evidence,
        }),
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
