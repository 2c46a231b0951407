//! Webhooks: Slack and Microsoft Teams incoming webhooks, and Standard Webhooks (signed the way
//! killswitch verifies Falcon's intake) for a provider's own SOAR or pager.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::CustomerSlug;
use crate::secrets::SecretCipher;
use uuid::Uuid;

use super::render::Message;
use super::settings::{WebhookKind, WebhookTarget};
use crate::error::{Error, Result};
use crate::time::Timestamp;

pub struct WebhookSender {
    client: reqwest::Client,
}

impl WebhookSender {
    pub fn new(timeout: Duration) -> Result<WebhookSender> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect could carry the signed body somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("killswitch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the webhook client: {e}")))?;
        Ok(WebhookSender { client })
    }

    /// POSTs the message in the receiver's shape; `Ok` with the status, `Err` with why not.
    /// Neither ever holds the URL (a Slack or Teams URL is itself a credential).
    pub async fn send(
        &self,
        hook: &WebhookTarget,
        id: Uuid,
        event: &str,
        message: &Message,
        now: Timestamp,
    ) -> std::result::Result<String, String> {
        let (url, kind) = (&hook.url, hook.kind);
        let body = body(kind, event, message, now);
        let body = serde_json::to_vec(&body).map_err(|e| format!("cannot encode: {e}"))?;
        let mut request = self
            .client
            .post(url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if kind == WebhookKind::Standard {
            let key = hook
                .secret
                .as_ref()
                .map(|s| crate::falcon::signature::standard_key(s.expose_secret()))
                .transpose()?
                .ok_or_else(|| "no secret to sign with".to_owned())?;
            let webhook_id = format!("msg_{}", id.simple());
            let timestamp = now.as_datetime().timestamp().to_string();
            let signature =
                crate::falcon::signature::sign_standard(&key, &webhook_id, &timestamp, &body);
            request = request
                .header("webhook-id", webhook_id)
                .header("webhook-timestamp", timestamp)
                .header("webhook-signature", signature);
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => {
                Ok(format!("HTTP {}", response.status().as_u16()))
            }
            Ok(response) => Err(format!(
                "the receiver answered HTTP {}",
                response.status().as_u16()
            )),
            Err(e) if e.is_timeout() => Err("the receiver did not answer in time".to_owned()),
            Err(e) if e.is_connect() => Err("cannot connect to the receiver".to_owned()),
            Err(_) => Err("the request to the receiver failed".to_owned()),
        }
    }
}

/// The `whsec_` secret a customer's notice webhook is signed with: derived from the key for
/// secrets at rest and the customer's slug, so nothing more is stored (rotating
/// `mfa.encryption_key` changes it; print it again with `customer policy S --webhook-url U`).
pub fn customer_secret(cipher: &SecretCipher, customer: &CustomerSlug) -> SecretString {
    use base64::Engine;
    let key = zeroize::Zeroizing::new(
        cipher.mac("customer-notice-webhook-v1", customer.as_str().as_bytes()),
    );
    SecretString::from(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_slice())
    ))
}

/// The JSON each receiver expects.
fn body(kind: WebhookKind, event: &str, message: &Message, now: Timestamp) -> serde_json::Value {
    match kind {
        // Slack reads &, < and > as markup; escaped, a value cannot ping a channel or link.
        WebhookKind::Slack => serde_json::json!({
            "text": slack_escape(&format!("*{}*\n{}", message.subject, message.text)),
        }),
        WebhookKind::Teams => serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": message.subject, "weight": "Bolder", "wrap": true},
                        {"type": "TextBlock", "text": message.text, "wrap": true, "fontType": "Monospace"}
                    ]
                }
            }]
        }),
        WebhookKind::Standard => serde_json::json!({
            "type": format!("killswitch.{event}"),
            "timestamp": now.to_string(),
            "data": message.data,
        }),
    }
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            subject: "[contoso] DISABLED: alice@contoso.example".to_owned(),
            text: "Reason  <!channel> & <https://evil.example|click>".to_owned(),
            html: String::new(),
            data: serde_json::json!({"outcome": "succeeded"}),
        }
    }

    #[test]
    fn slack_gets_text_in_which_no_value_can_mention_a_channel_or_forge_a_link() {
        let body = body(
            WebhookKind::Slack,
            "action_outcome",
            &message(),
            Timestamp::now(),
        );
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("*[contoso] DISABLED: alice@contoso.example*\n"));
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"));
        assert!(!text.contains('<'));
    }

    #[test]
    fn teams_gets_an_adaptive_card_and_standard_gets_type_timestamp_and_data() {
        let now = Timestamp::now();
        let card = body(WebhookKind::Teams, "action_outcome", &message(), now);
        let attachment = &card["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(
            attachment["content"]["body"][0]["text"],
            "[contoso] DISABLED: alice@contoso.example"
        );
        let standard = body(WebhookKind::Standard, "action_outcome", &message(), now);
        assert_eq!(standard["type"], "killswitch.action_outcome");
        assert_eq!(standard["timestamp"], now.to_string());
        assert_eq!(standard["data"]["outcome"], "succeeded");
    }
}
