//! E-mail over SMTP (lettre): STARTTLS that must succeed, implicit TLS, or plain text to a
//! relay on this machine; pooled connections, so a burst reuses one session.
//!
//! The connections are made here rather than by lettre's transport, to set `TCP_NODELAY`:
//! lettre 0.11 leaves Nagle's algorithm on and writes the end-of-data marker (`.`) apart from
//! the message, so the marker waited for the relay's delayed ACK, 40 ms on Linux, in every
//! message sent. lettre still speaks the protocol (EHLO, STARTTLS, AUTH, the message).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use uuid::Uuid;

use super::render::Message;
use super::settings::{SmtpSettings, SmtpTls};
use crate::error::{Error, Result};

/// Idle connections kept for the next messages (the worker sends up to 16 at once).
const IDLE_CONNECTIONS: usize = 16;
/// An idle connection is closed rather than reused after this long (relays drop idle sessions).
const IDLE_AT_MOST: Duration = Duration::from_secs(60);

pub struct Mailer {
    host: String,
    port: u16,
    tls: SmtpTls,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// One attempt, from connecting to the relay's answer to the message, may take this long.
    timeout: Duration,
    idle: tokio::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(
        smtp: &SmtpSettings,
        ca_pem: Option<&[u8]>,
        from: &str,
        timeout: Duration,
    ) -> Result<Mailer> {
        let tls_parameters = match smtp.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Implicit => Some(tls_parameters(&smtp.host, ca_pem)?),
        };
        let credentials = match (&smtp.user, &smtp.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => None,
        };
        let from = from.parse().map_err(|_| {
            Error::Config(vec![format!(
                "notify.from: `{from}` is not an e-mail address"
            )])
        })?;
        Ok(Mailer {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            tls_parameters,
            credentials,
            hello: ClientId::default(),
            timeout,
            idle: tokio::sync::Mutex::new(Vec::new()),
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
        let attempt = async {
            let mut conn = self.connection().await?;
            // On an error lettre has already closed the connection: it is not kept.
            let response = conn
                .send(mail.envelope(), &mail.formatted())
                .await
                .map_err(|e| format!("SMTP: {e}"))?;
            self.park(conn).await;
            Ok(format!(
                "SMTP {}: {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            ))
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "SMTP: the relay did not answer within {} s",
                    self.timeout.as_secs()
                ))
            })
    }

    /// An idle connection that still answers NOOP, or a new one.
    async fn connection(&self) -> std::result::Result<AsyncSmtpConnection, String> {
        loop {
            let parked = self.idle.lock().await.pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            if since.elapsed() < IDLE_AT_MOST && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    /// Keeps a connection that sent its message for the next one, or closes it.
    async fn park(&self, mut conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().await;
        if idle.len() < IDLE_CONNECTIONS {
            idle.push((conn, Instant::now()));
        } else {
            drop(idle);
            let _ = conn.quit().await;
        }
    }

    /// Connects with `TCP_NODELAY`, then EHLO, TLS as configured (STARTTLS must succeed) and
    /// AUTH, as lettre's transport does.
    async fn connect(&self) -> std::result::Result<AsyncSmtpConnection, String> {
        let smtp = |e: lettre::transport::smtp::Error| format!("SMTP: {e}");
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("SMTP: cannot connect to the relay: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("SMTP: cannot set TCP_NODELAY: {e}"))?;
        let stream: Box<dyn AsyncTokioStream> = match (&self.tls, &self.tls_parameters) {
            (SmtpTls::Implicit, Some(parameters)) => Box::new(
                ImplicitTls::wrap(tcp, parameters.clone())
                    .await
                    .map_err(smtp)?,
            ),
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(smtp)?;
        if let (SmtpTls::StartTls, Some(parameters)) = (&self.tls, &self.tls_parameters) {
            conn.starttls(parameters.clone(), &self.hello)
                .await
                .map_err(smtp)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(smtp)?;
        }
        Ok(conn)
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

/// TLS towards `host`, trusting the public roots and, when given, a private CA (PEM).
fn tls_parameters(host: &str, ca_pem: Option<&[u8]>) -> Result<TlsParameters> {
    let mut parameters = TlsParameters::builder(host.to_owned());
    if let Some(pem) = ca_pem {
        let ca = Certificate::from_pem(pem).map_err(|e| {
            Error::Config(vec![format!(
                "notify.smtp_ca_file: not a PEM certificate ({e})"
            )])
        })?;
        parameters = parameters.add_root_certificate(ca);
    }
    parameters
        .build_rustls()
        .map_err(|e| Error::Config(vec![format!("notify.smtp_url: cannot set up TLS: {e}")]))
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

/// A TLS session from the first byte (port 465) over a TCP stream of ours: lettre's TLS
/// (`upgrade_tls`) over it, seen through tokio's I/O traits so lettre can speak SMTP over it.
#[allow(deprecated)] // lettre's stream type, the one way to its TLS over a socket of ours
#[derive(Debug)]
struct ImplicitTls(lettre::transport::smtp::client::AsyncNetworkStream);

#[allow(deprecated)]
impl ImplicitTls {
    async fn wrap(
        tcp: TcpStream,
        parameters: TlsParameters,
    ) -> std::result::Result<ImplicitTls, lettre::transport::smtp::Error> {
        use lettre::transport::smtp::client::AsyncNetworkStream;
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
        stream.upgrade_tls(parameters).await?;
        Ok(ImplicitTls(stream))
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read =
            futures::AsyncRead::poll_read(Pin::new(&mut self.0), cx, buf.initialize_unfilled());
        read.map_ok(|n| buf.advance(n))
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
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
