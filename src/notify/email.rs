//! E-mail over SMTP (lettre): STARTTLS that must succeed, implicit TLS, or plain text to a
//! relay on this machine; pooled connections, so a burst reuses one session.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::render::Message;
use super::settings::{SmtpSettings, SmtpTls};
use crate::error::{Error, Result};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(
        smtp: &SmtpSettings,
        ca_pem: Option<&[u8]>,
        from: &str,
        timeout: Duration,
    ) -> Result<Mailer> {
        let config = |why: String| Error::Config(vec![format!("notify.smtp_url: {why}")]);
        let tls = match smtp.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls | SmtpTls::Implicit => {
                let mut params = TlsParameters::builder(smtp.host.clone());
                if let Some(pem) = ca_pem {
                    let ca = Certificate::from_pem(pem).map_err(|e| {
                        Error::Config(vec![format!(
                            "notify.smtp_ca_file: not a PEM certificate ({e})"
                        )])
                    })?;
                    params = params.add_root_certificate(ca);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| config(format!("cannot set up TLS: {e}")))?;
                if smtp.tls == SmtpTls::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                .port(smtp.port)
                .tls(tls)
                .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let from = from.parse().map_err(|_| {
            Error::Config(vec![format!(
                "notify.from: `{from}` is not an e-mail address"
            )])
        })?;
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends one message to `to`; `Ok` with the server's answer, `Err` with why not (never a
    /// secret: lettre's errors name the stage and the server's reply).
    pub async fn send(
        &self,
        id: Uuid,
        to: &str,
        message: &Message,
    ) -> std::result::Result<String, String> {
        let mail = self.compose(id, to, message)?;
        match self.transport.send(mail).await {
            Ok(response) => Ok(format!(
                "SMTP {}: {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) => Err(format!("SMTP: {e}")),
        }
    }

    fn compose(
        &self,
        id: Uuid,
        to: &str,
        message: &Message,
    ) -> std::result::Result<lettre::Message, String> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            // A stable id: a message sent twice (a crash between sending and recording) is
            // recognisably the same message.
            .message_id(Some(format!("<{id}@killswitch>")))
            .subject(message.subject.as_str());
        for address in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|_| format!("`{address}` is not an e-mail address"))?;
            builder = builder.to(mailbox);
        }
        builder
            .header(NotificationId(id.to_string()))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(message.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(message.html.clone()),
                    ),
            )
            .map_err(|e| format!("cannot compose the e-mail: {e}"))
    }
}

/// `X-Killswitch-Notification`: the notification's id, for receivers that deduplicate.
#[derive(Clone)]
struct NotificationId(String);

impl lettre::message::header::Header for NotificationId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Killswitch-Notification")
    }

    fn parse(s: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NotificationId(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tls_mailer_can_be_built() {
        let smtp = SmtpSettings::parse("smtp://u:p@127.0.0.1:2525?tls=starttls").unwrap();
        let built = Mailer::new(&smtp, None, "a@b.example", Duration::from_secs(1));
        assert!(built.is_ok(), "{:?}", built.err());
    }
}
