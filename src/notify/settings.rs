//! What the provider configures under `notify.*`: the SMTP relay, the SOC's addresses and
//! webhook, and the timing of retries and reminders.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// Everything `notify.*` sets; nothing is sent until a channel is configured.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub smtp: Option<SmtpSettings>,
    /// Extra certificate authorities (PEM) the SMTP relay's certificate may chain to, beside
    /// the public ones (`notify.smtp_ca_file`): a relay with a private CA.
    pub smtp_ca_pem: Option<Vec<u8>>,
    /// The sender of every e-mail (`notify.from`).
    pub from: Option<String>,
    /// Where SOC e-mails go (`notify.soc_email`).
    pub soc_email: Vec<String>,
    pub soc_webhook: Option<WebhookTarget>,
    /// A message still undelivered this long after it was made is given up (and counted).
    pub give_up_after: Duration,
    /// A detection still waiting this long after the last word of it is announced again.
    pub pending_reminder: Duration,
    /// How often workers look for notices to route and messages to send.
    pub poll_interval: Duration,
    /// One delivery attempt (SMTP session or webhook POST) may take this long.
    pub send_timeout: Duration,
    /// Hour of the day (UTC) customers on the daily digest receive it.
    pub digest_hour_utc: u32,
}

impl NotifySettings {
    /// Whether e-mail can be sent at all.
    pub fn email_ready(&self) -> bool {
        self.smtp.is_some() && self.from.is_some()
    }
}

/// The SOC's incoming webhook.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// A Slack or Teams webhook URL carries its own credential: kept secret, never logged.
    pub url: SecretString,
    pub kind: WebhookKind,
    /// The `whsec_` secret that signs `standard` webhooks.
    pub secret: Option<SecretString>,
}

/// The shape a webhook receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    Slack,
    Teams,
    /// Standard Webhooks: JSON `{type, timestamp, data}`, signed `webhook-signature: v1,…`.
    Standard,
}

impl std::str::FromStr for WebhookKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "slack" => Ok(WebhookKind::Slack),
            "teams" => Ok(WebhookKind::Teams),
            "standard" => Ok(WebhookKind::Standard),
            other => Err(format!("`{other}` is not slack, teams or standard")),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587 by default).
    StartTls,
    /// TLS from the first byte (port 465 by default).
    Implicit,
    /// No TLS: only to a relay on this machine.
    None,
}

/// The relay named by `notify.smtp_url`.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    pub password: Option<SecretString>,
}

impl SmtpSettings {
    /// Reads `smtp://[user:pass@]host[:port][?tls=starttls|implicit|none]`. The message of an
    /// error never repeats the URL (it may hold a password).
    pub fn parse(text: &str) -> Result<SmtpSettings, String> {
        let url = Url::parse(text).map_err(|_| "is not a URL".to_owned())?;
        if url.scheme() != "smtp" {
            return Err("must start with smtp://".to_owned());
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => return Err("names no host".to_owned()),
        };
        let tls = smtp_tls(&url)?;
        if tls == SmtpTls::None && !is_loopback_host(&host) {
            return Err(
                "tls=none is accepted only for a relay on loopback (127.0.0.1, ::1, localhost)"
                    .to_owned(),
            );
        }
        let port = url.port().unwrap_or(match tls {
            SmtpTls::StartTls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        });
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "has a user or password that is not UTF-8".to_owned())
        };
        let user = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let password = url
            .password()
            .map(decode)
            .transpose()?
            .map(SecretString::from);
        if user.is_some() != password.is_some() {
            return Err("needs both a user and a password, or neither".to_owned());
        }
        Ok(SmtpSettings {
            host,
            port,
            tls,
            user,
            password,
        })
    }
}

/// `localhost` or a loopback address. An smtp:// URL's host is opaque text to the URL parser
/// (an IPv6 address without its brackets here), so it is read as an address first.
fn is_loopback_host(host: &str) -> bool {
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => url::Host::Ipv4(ip),
        Ok(std::net::IpAddr::V6(ip)) => url::Host::Ipv6(ip),
        Err(_) => url::Host::Domain(host),
    };
    crate::domain::is_loopback_host(&host)
}

fn smtp_tls(url: &Url) -> Result<SmtpTls, String> {
    let mut tls = SmtpTls::StartTls;
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("tls", "starttls") => tls = SmtpTls::StartTls,
            ("tls", "implicit") => tls = SmtpTls::Implicit,
            ("tls", "none") => tls = SmtpTls::None,
            ("tls", other) => {
                return Err(format!("tls=`{other}` is not starttls, implicit or none"));
            }
            (other, _) => return Err(format!("has an unknown parameter `{other}`")),
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn smtp_urls_name_host_port_tls_and_credentials() {
        let s = SmtpSettings::parse("smtp://soc%40p.example:p%3Ass@mail.example.com").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail.example.com", 587, SmtpTls::StartTls)
        );
        assert_eq!(s.user.as_deref(), Some("soc@p.example"));
        assert_eq!(s.password.unwrap().expose_secret(), "p:ss");
        let s = SmtpSettings::parse("smtp://mail.example.com?tls=implicit").unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Implicit));
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert!(SmtpSettings::parse("smtp://[::1]:2525?tls=none").is_ok());
        assert!(SmtpSettings::parse("smtp://LocalHost:2525?tls=none").is_ok());
        assert_eq!((s.port, s.tls, s.user), (2525, SmtpTls::None, None));
    }

    #[test]
    fn smtp_urls_refuse_plain_text_off_the_machine_and_never_echo_the_password() {
        let refused =
            SmtpSettings::parse("smtp://u:hunter2@mail.example.com?tls=none").unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(!refused.contains("hunter2"));
        assert!(SmtpSettings::parse("smtps://mail.example.com").is_err());
        assert!(SmtpSettings::parse("smtp://mail.example.com?tls=maybe").is_err());
        assert!(SmtpSettings::parse("smtp://mail.example.com?port=1").is_err());
        assert!(SmtpSettings::parse("smtp://user@mail.example.com").is_err());
    }
}
