//! The HTTP client under discovery, key fetches and the code exchange. The provider is
//! trusted to sign tokens, not to be well behaved on the wire: redirects are not followed,
//! bodies are capped and every request times out.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use url::Url;

use super::ProviderError;
use crate::error::{Error, Result};

/// Largest discovery document, key set or token response read from the provider.
const MAX_BODY: usize = 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// openidconnect's HTTP client trait over the project's reqwest.
pub(super) struct Http(reqwest::Client);

/// Why a request to the provider failed below the level of what it answered.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("{0}")]
    Http(#[from] openidconnect::http::Error),
    #[error("the response is larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl Http {
    pub(super) fn new() -> Result<Http> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("killswitch/", env!("CARGO_PKG_VERSION")))
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http(client))
    }

    /// GETs a JSON document; any status but 200 is an error.
    pub(super) async fn get(&self, url: &Url) -> Result<Vec<u8>, ProviderError> {
        let response = self
            .0
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|cause| ProviderError::Unreachable {
                url: url.clone(),
                cause,
            })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(ProviderError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        read_capped(response)
            .await
            .map_err(|cause| ProviderError::Unreadable {
                url: url.clone(),
                cause,
            })
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.0.execute(reqwest::Request::try_from(request)?).await?;
            let mut builder = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_capped(response).await?;
            Ok(builder.body(body)?)
        })
    }
}
