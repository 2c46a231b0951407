//! Configuration: the embedded `config/default.toml`, then `--config FILE`, then environment
//! variables `KILLSWITCH_<SECTION>__<KEY>`; every secret may instead be read from `<key>_file`.
//!
//! Values are read key by key so that every problem becomes one line naming the key and where
//! its value came from, and every key nobody reads is reported as unknown. Defaults live only in
//! `config/default.toml`, which is always layered first: a key it sets is read as required, and
//! a key it leaves out (a secret, single sign-on) is optional because unset means off or derived.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::error::{Error, Result};

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
pub const ENV_PREFIX: &str = "KILLSWITCH_";

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub audit: AuditSettings,
    pub entra: EntraSettings,
    pub graph: GraphLimits,
    pub remediation: RemediationConfig,
    pub instance: InstanceConfig,
    pub onboarding: OnboardingConfig,
    pub falcon: FalconSettings,
    pub mfa: MfaSettings,
    pub auth: AuthSettings,
    pub oidc: OidcSettings,
    pub notify: crate::notify::NotifySettings,
    /// Unknown keys and similar; logged once tracing is up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub shutdown_grace: Duration,
    /// A connection whose request headers do not arrive within this is closed; so is a
    /// keep-alive connection idle this long.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Proxies, and the one header they name the real client in.
    pub trusted_proxies: TrustedProxies,
    /// Connections one peer address may hold at once (trusted proxies are not limited).
    pub max_connections_per_client: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May carry a password, hence secret; use `store::redact_url` to show it.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub signing_key_file: PathBuf,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub certificate_file: Option<PathBuf>,
    pub authority_url: Url,
    pub graph_url: Url,
}

impl EntraSettings {
    /// What is still missing before remediation can call Graph, as config keys.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.client_id.is_none() {
            missing.push("entra.client_id");
        }
        if self.client_secret.is_none() && self.certificate_file.is_none() {
            missing.push("entra.client_secret or entra.certificate_file");
        }
        missing
    }
}

#[derive(Debug, Clone)]
pub struct GraphLimits {
    pub deadline: Duration,
    pub request_timeout: Duration,
    pub max_in_flight_per_tenant: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct OnboardingConfig {
    pub consent_link_ttl: Duration,
    /// Consent callbacks one client may make per minute.
    pub callbacks_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct FalconSettings {
    /// The header the Falcon Store Webhook app puts its signature in.
    pub signature_header: String,
    /// How long a replaced webhook secret keeps working.
    pub secret_grace: Duration,
    /// How far a signed webhook's timestamp may be from now, either way.
    pub timestamp_tolerance: Duration,
}

#[derive(Debug, Clone)]
pub struct RemediationConfig {
    pub reconcile_interval: Duration,
    /// After this long, an action Entra will not show is finished as failed, effect unknown.
    pub reconcile_give_up: Duration,
    /// An interrupted action younger than this is carried through on reconciliation.
    pub redrive_within: Duration,
}

/// This instance among several on one database (see `domain::instance`).
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The stable name; `None`: this host's name and the listening port.
    pub id: Option<String>,
    pub liveness: crate::domain::instance::Liveness,
}

#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// 32 bytes when configured; otherwise generated into the data folder on first start.
    pub encryption_key: Option<SecretBytes>,
    /// Keys secrets were sealed with before a rotation: they still open them; only the current
    /// key seals (`killswitch secrets reseal` moves everything to it).
    pub previous_encryption_keys: Vec<SecretBytes>,
    pub max_failures: u32,
    pub lockout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub max_failures_per_client: u32,
    pub failure_window: Duration,
}

#[derive(Clone)]
pub struct SecretBytes(std::sync::Arc<secrecy::SecretSlice<u8>>);

impl SecretBytes {
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes([REDACTED])")
    }
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer_url: Option<Url>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// Another `aud` value accepted in bearer JWTs, besides the client id.
    pub audience: Option<String>,
    /// The claim that names the analyst. `email` (the default) counts only with
    /// `email_verified: true`; another claim (such as Entra's `preferred_username`) is trusted
    /// as the provider sends it.
    pub identity_claim: String,
    /// How long a console session lasts after single sign-on.
    pub session_ttl: Duration,
}

impl OidcSettings {
    /// Single sign-on is on when the issuer and the client id are set.
    pub fn enabled(&self) -> bool {
        self.issuer_url.is_some() && self.client_id.is_some()
    }
}

/// The layered configuration before it is read: defaults, the optional file, the environment.
pub fn figment(config_file: Option<&Path>) -> Result<Figment> {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = config_file {
        if !path.is_file() {
            return Err(Error::Config(vec![format!(
                "config file {}: no such file",
                path.display()
            )]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])))
}

impl Settings {
    /// Loads from the process environment and `config_file`.
    pub fn load(config_file: Option<&Path>) -> Result<Settings> {
        Settings::from_figment(&figment(config_file)?)
    }

    /// Reads and validates every key; all problems are reported together, one line each.
    pub fn from_figment(figment: &Figment) -> Result<Settings> {
        let all: Dict = figment.extract().map_err(|e| {
            Error::Config(e.into_iter().map(|e| one_line(&e.to_string())).collect())
        })?;
        let mut r = Reader::new(figment);
        let settings = Settings::read(&mut r);
        let warnings = r.unknown_key_warnings(&all);
        r.finish()?;
        // Every section that came back empty recorded why, and `finish` reported it.
        let settings = settings.ok_or_else(|| {
            Error::Internal("configuration: a value was refused without a reason".to_owned())
        })?;
        Ok(Settings {
            warnings,
            ..settings
        })
    }

    /// Every section, read in full even after a problem so that all problems are reported.
    fn read(r: &mut Reader) -> Option<Settings> {
        let data_dir = r.required_string("data_dir").map(PathBuf::from);
        let server = ServerSettings::read(r);
        let log = LogSettings::read(r);
        let database = DatabaseSettings::read(r, data_dir.as_deref());
        let audit = AuditSettings::read(r, data_dir.as_deref());
        let entra = EntraSettings::read(r);
        let graph = GraphLimits::read(r);
        let remediation = RemediationConfig::read(r);
        let instance = InstanceConfig::read(r);
        let onboarding = OnboardingConfig::read(r);
        let falcon = FalconSettings::read(r);
        let mfa = MfaSettings::read(r);
        let auth = AuthSettings::read(r);
        let oidc = OidcSettings::read(r);
        let notify = read_notify(r);
        Some(Settings {
            data_dir: data_dir?,
            server: server?,
            log: log?,
            database: database?,
            audit: audit?,
            entra: entra?,
            graph: graph?,
            remediation: remediation?,
            instance: instance?,
            onboarding: onboarding?,
            falcon: falcon?,
            mfa: mfa?,
            auth: auth?,
            oidc: oidc?,
            notify: notify?,
            warnings: Vec::new(),
        })
    }
}

// One reader per section. Each reads all of its keys before giving up on a bad one, and none
// holds a default: `config/default.toml` has them all.

impl ServerSettings {
    fn read(r: &mut Reader) -> Option<Self> {
        let listen = r.parse("server.listen", "an address such as 127.0.0.1:8080");
        let public_url = r.required_url("server.public_url", false);
        let request_timeout = r.seconds("server.request_timeout_secs", 1, 3600);
        let body_limit_bytes = r.number("server.body_limit_bytes", 1024, 64 * 1024 * 1024);
        let shutdown_grace = r.seconds("server.shutdown_grace_secs", 0, 3600);
        let header_read_timeout = r.seconds("server.header_read_timeout_secs", 1, 600);
        let max_connections = r.number("server.max_connections", 1, 1_000_000);
        let trusted_proxies = trusted_proxies(r);
        let max_connections_per_client =
            r.number("server.max_connections_per_client", 1, 1_000_000);
        Some(ServerSettings {
            listen: listen?,
            public_url: public_url?,
            request_timeout: request_timeout?,
            body_limit_bytes: body_limit_bytes? as usize,
            shutdown_grace: shutdown_grace?,
            header_read_timeout: header_read_timeout?,
            max_connections: max_connections? as usize,
            trusted_proxies: trusted_proxies?,
            max_connections_per_client: max_connections_per_client? as usize,
        })
    }
}

fn trusted_proxies(r: &mut Reader) -> Option<TrustedProxies> {
    let networks = r.networks("server.trusted_proxies");
    let key = "server.client_address_header";
    let header = match r.required_string(key)? {
        h if h.eq_ignore_ascii_case("x-forwarded-for") => ForwardedHeader::XForwardedFor,
        h if h.eq_ignore_ascii_case("forwarded") => ForwardedHeader::Forwarded,
        other => {
            r.problem(
                key,
                format!("`{other}` is not X-Forwarded-For or Forwarded"),
            );
            return None;
        }
    };
    Some(TrustedProxies { networks, header })
}

impl LogSettings {
    fn read(r: &mut Reader) -> Option<Self> {
        let format = match r.required_string("log.format")?.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                r.problem(
                    "log.format",
                    format!("`{other}` is not a log format (use \"text\" or \"json\")"),
                );
                None
            }
        };
        let level = log_level(r);
        Some(LogSettings {
            format: format?,
            level: level?,
        })
    }
}

fn log_level(r: &mut Reader) -> Option<String> {
    let level = r.required_string("log.level")?;
    match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(_) => Some(level),
        Err(e) => {
            r.problem("log.level", format!("`{level}` is not a valid filter: {e}"));
            None
        }
    }
}

impl DatabaseSettings {
    fn read(r: &mut Reader, data_dir: Option<&Path>) -> Option<Self> {
        let url = database_url(r, data_dir);
        let max_connections = r.number("database.max_connections", 1, 1000);
        let acquire_timeout = r.seconds("database.acquire_timeout_secs", 1, 600);
        Some(DatabaseSettings {
            url: url?,
            max_connections: max_connections? as u32,
            acquire_timeout: acquire_timeout?,
        })
    }
}

/// `database.url`, or SQLite in the data folder when it is not set (so it follows `data_dir`,
/// which a default in `config/default.toml` could not).
fn database_url(r: &mut Reader, data_dir: Option<&Path>) -> Option<SecretString> {
    let url = match r.secret("database.url") {
        Some(url) => url.expose_secret().to_owned(),
        None => format!("sqlite://{}/killswitch.db", data_dir?.display()),
    };
    if crate::store::Backend::from_url(&url).is_err() {
        r.problem(
            "database.url",
            format!(
                "`{}` is neither a sqlite:// nor a postgres:// URL",
                crate::store::redact_url(&url)
            ),
        );
        return None;
    }
    Some(SecretString::from(url))
}

impl AuditSettings {
    fn read(r: &mut Reader, data_dir: Option<&Path>) -> Option<Self> {
        // Like the database, the key lives in the data folder unless placed elsewhere.
        let signing_key_file = r
            .string("audit.signing_key_file")
            .map(PathBuf::from)
            .or_else(|| Some(data_dir?.join("audit-signing.key")));
        let checkpoint_every = r.number("audit.checkpoint_every", 1, 1_000_000);
        let checkpoint_interval = r.seconds("audit.checkpoint_interval_secs", 0, 86_400);
        Some(AuditSettings {
            signing_key_file: signing_key_file?,
            checkpoint_every: checkpoint_every?,
            // 0 turns the timer off.
            checkpoint_interval: Some(checkpoint_interval?).filter(|every| !every.is_zero()),
        })
    }
}

impl EntraSettings {
    /// Without the app's client id and credential remediation is off, hence optional.
    fn read(r: &mut Reader) -> Option<Self> {
        let client_id = r.string("entra.client_id");
        let client_secret = r.secret("entra.client_secret");
        let certificate_file = r.existing_file("entra.certificate_file");
        let authority_url = r.required_url("entra.authority_url", true);
        let graph_url = r.required_url("entra.graph_url", true);
        Some(EntraSettings {
            client_id,
            client_secret,
            certificate_file,
            authority_url: authority_url?,
            graph_url: graph_url?,
        })
    }
}

impl GraphLimits {
    fn read(r: &mut Reader) -> Option<Self> {
        let deadline = r.seconds("graph.deadline_secs", 1, 600);
        let request_timeout = r.seconds("graph.request_timeout_secs", 1, 300);
        let max_in_flight_per_tenant = r.number("graph.max_in_flight_per_tenant", 1, 1000);
        let max_in_flight = r.number("graph.max_in_flight", 1, 100_000);
        Some(GraphLimits {
            deadline: deadline?,
            request_timeout: request_timeout?,
            max_in_flight_per_tenant: max_in_flight_per_tenant? as usize,
            max_in_flight: max_in_flight? as usize,
        })
    }
}

impl RemediationConfig {
    fn read(r: &mut Reader) -> Option<Self> {
        let reconcile_interval = r.seconds("remediation.reconcile_interval_secs", 1, 86_400);
        let reconcile_give_up = r.seconds("remediation.reconcile_give_up_secs", 60, 30 * 86_400);
        let redrive_within = r.seconds("remediation.redrive_within_secs", 0, 86_400);
        Some(RemediationConfig {
            reconcile_interval: reconcile_interval?,
            reconcile_give_up: reconcile_give_up?,
            redrive_within: redrive_within?,
        })
    }
}

impl InstanceConfig {
    fn read(r: &mut Reader) -> Option<Self> {
        let id = r.string("instance.id");
        if let Some(id) = &id
            && (id.len() > 200 || id.chars().any(char::is_control))
        {
            r.problem(
                "instance.id",
                "expected a name of at most 200 printable characters".to_owned(),
            );
        }
        let heartbeat = r.seconds("instance.heartbeat_secs", 1, 600);
        let dead_after = r.seconds("instance.dead_after_secs", 2, 3600);
        let (heartbeat, dead_after) = (heartbeat?, dead_after?);
        if dead_after < heartbeat * 2 {
            r.problem(
                "instance.dead_after_secs",
                "must be at least twice instance.heartbeat_secs, or a live instance would look gone between two beats".to_owned(),
            );
            return None;
        }
        Some(InstanceConfig {
            id,
            liveness: crate::domain::instance::Liveness {
                heartbeat,
                dead_after,
            },
        })
    }
}

impl OnboardingConfig {
    fn read(r: &mut Reader) -> Option<Self> {
        let consent_link_ttl = r.seconds("onboarding.consent_link_secs", 1, 90 * 86_400);
        let callbacks_per_minute = r.number("onboarding.callbacks_per_minute", 1, 10_000);
        Some(OnboardingConfig {
            consent_link_ttl: consent_link_ttl?,
            callbacks_per_minute: callbacks_per_minute? as u32,
        })
    }
}

impl FalconSettings {
    fn read(r: &mut Reader) -> Option<Self> {
        let signature_header = signature_header(r);
        let secret_grace = r.hours("falcon.secret_grace_hours", 0, 24 * 30);
        let timestamp_tolerance = r.seconds("falcon.timestamp_tolerance_secs", 1, 3600);
        Some(FalconSettings {
            signature_header: signature_header?,
            secret_grace: secret_grace?,
            timestamp_tolerance: timestamp_tolerance?,
        })
    }
}

fn signature_header(r: &mut Reader) -> Option<String> {
    let header = r.required_string("falcon.signature_header")?;
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        r.problem(
            "falcon.signature_header",
            format!("`{header}` is not a valid HTTP header name"),
        );
        return None;
    }
    Some(header)
}

impl MfaSettings {
    /// Without an encryption key one is generated on first start, hence optional.
    fn read(r: &mut Reader) -> Option<Self> {
        let encryption_key = r
            .secret("mfa.encryption_key")
            .and_then(|key| r.key_bytes("mfa.encryption_key", key.expose_secret()));
        let previous_encryption_keys = r
            .secret_list("mfa.previous_encryption_keys")
            .iter()
            .filter_map(|key| r.key_bytes("mfa.previous_encryption_keys", key.expose_secret()))
            .collect();
        let max_failures = r.number("mfa.max_failures", 1, 100);
        let lockout = r.seconds("mfa.lockout_secs", 1, 86_400);
        Some(MfaSettings {
            encryption_key,
            previous_encryption_keys,
            max_failures: max_failures? as u32,
            lockout: lockout?,
        })
    }
}

impl AuthSettings {
    fn read(r: &mut Reader) -> Option<Self> {
        let max_failures_per_client = r.number("auth.max_failures_per_client", 1, 100_000);
        let failure_window = r.seconds("auth.failure_window_secs", 1, 86_400);
        Some(AuthSettings {
            max_failures_per_client: max_failures_per_client? as u32,
            failure_window: failure_window?,
        })
    }
}

impl OidcSettings {
    /// Single sign-on is off until its issuer and client id are set, hence optional.
    fn read(r: &mut Reader) -> Option<Self> {
        let issuer_url = r.url("oidc.issuer_url", true);
        let client_id = r.string("oidc.client_id");
        let client_secret = r.secret("oidc.client_secret");
        let audience = r.string("oidc.audience");
        let identity_claim = r.required_string("oidc.identity_claim");
        let session_ttl = r.hours("oidc.session_hours", 1, 168);
        let settings = OidcSettings {
            issuer_url,
            client_id,
            client_secret,
            audience,
            identity_claim: identity_claim?,
            session_ttl: session_ttl?,
        };
        settings.require_all_or_none(r);
        Some(settings)
    }

    /// Half a single sign-on setup is a mistake, not "off".
    fn require_all_or_none(&self, r: &mut Reader) {
        // (Unless a value was already reported as bad: one line per mistake.)
        if r.problems.iter().any(|p| p.starts_with("oidc.")) {
            return;
        }
        match (&self.issuer_url, &self.client_id) {
            (Some(_), Some(_)) if self.client_secret.is_none() => r.problem(
                "oidc.client_secret",
                "single sign-on needs the client secret (or oidc.client_secret_file)".to_owned(),
            ),
            (Some(_), None) => r.problem(
                "oidc.client_id",
                "required when oidc.issuer_url is set".to_owned(),
            ),
            (None, Some(_)) => r.problem(
                "oidc.issuer_url",
                "required when oidc.client_id is set".to_owned(),
            ),
            _ => {}
        }
    }
}

/// `notify.*`: channels are optional, but one half-configured is a mistake worth stopping for.
fn read_notify(r: &mut Reader) -> Option<crate::notify::NotifySettings> {
    use crate::notify::settings::{NotifySettings, SmtpSettings, WebhookKind, WebhookTarget};
    use secrecy::ExposeSecret;
    let smtp_url = r.secret("notify.smtp_url");
    let smtp_given = smtp_url.is_some();
    let smtp = smtp_url.and_then(|url| {
        SmtpSettings::parse(url.expose_secret())
            .map_err(|why| r.problem("notify.smtp_url", format!("the SMTP URL {why}")))
            .ok()
    });
    let smtp_ca_pem = r.string("notify.smtp_ca_file").and_then(|path| {
        std::fs::read(&path)
            .map_err(|e| r.problem("notify.smtp_ca_file", format!("cannot read {path}: {e}")))
            .ok()
    });
    let from = r.string("notify.from");
    let soc_email = r.list("notify.soc_email");
    let webhook_url = r.secret("notify.soc_webhook_url");
    let kind: Option<WebhookKind> = r.parse("notify.soc_webhook_kind", "slack, teams or standard");
    let secret = r.secret("notify.soc_webhook_secret");
    let give_up_after = r.seconds("notify.give_up_after_secs", 60, 30 * 86_400);
    let pending_reminder = r.seconds("notify.pending_reminder_secs", 60, 7 * 86_400);
    let poll_interval = r
        .number("notify.poll_interval_ms", 10, 60_000)
        .map(Duration::from_millis);
    let send_timeout = r.seconds("notify.send_timeout_secs", 1, 300);
    let digest_hour = r.number("notify.digest_hour_utc", 0, 23);
    for address in &soc_email {
        if let Err(e) = crate::auth::analysts::normalize_email(address) {
            r.problem("notify.soc_email", e.to_string());
        }
    }
    if let Some(url) = &webhook_url {
        let text = url.expose_secret().to_owned();
        // The URL is a credential: checked, but never repeated in the message.
        if r.checked_url("notify.soc_webhook_url", &text, true)
            .is_none()
        {
            r.problems.retain(|p| !p.contains(&text));
            r.problem(
                "notify.soc_webhook_url",
                "is not an https URL (plain http is accepted only for loopback hosts)".to_owned(),
            );
        }
    }
    let soc_webhook = webhook_url.map(|url| WebhookTarget {
        url,
        kind: kind.unwrap_or(WebhookKind::Slack),
        secret: secret.clone(),
    });
    if soc_webhook
        .as_ref()
        .is_some_and(|w| w.kind == WebhookKind::Standard)
    {
        match secret
            .as_ref()
            .map(|s| crate::falcon::signature::standard_key(s.expose_secret()))
        {
            Some(Ok(_)) => {}
            Some(Err(why)) => r.problem("notify.soc_webhook_secret", why),
            None => r.problem(
                "notify.soc_webhook_secret",
                "a standard webhook needs a whsec_ secret to sign with".to_owned(),
            ),
        }
    }
    if (!soc_email.is_empty() || smtp_given) && (from.is_none() || !smtp_given) {
        let missing = if from.is_none() {
            "notify.from"
        } else {
            "notify.smtp_url"
        };
        r.problem(
            missing,
            "e-mail needs both notify.smtp_url and notify.from".to_owned(),
        );
    }
    if let Some(from) = from
        .as_ref()
        .filter(|f| f.parse::<lettre::message::Mailbox>().is_err())
    {
        r.problem("notify.from", format!("`{from}` is not an e-mail address"));
    }
    Some(NotifySettings {
        smtp,
        smtp_ca_pem,
        from,
        soc_email,
        soc_webhook,
        give_up_after: give_up_after?,
        pending_reminder: pending_reminder?,
        poll_interval: poll_interval?,
        send_timeout: send_timeout?,
        digest_hour_utc: u32::try_from(digest_hour?).ok()?,
    })
}

/// Folds a multi-line parser message (TOML errors draw the offending line) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        // Drop the drawn source lines (`1 | [server`, `  |   ^`), keep the words.
        .filter(|line| !line.is_empty() && !line.starts_with('|') && !is_numbered_source_line(line))
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_numbered_source_line(line: &str) -> bool {
    line.split_once(" |")
        .is_some_and(|(number, _)| number.parse::<u32>().is_ok())
}

/// Reads keys one at a time, remembering which keys exist and which problems it met.
struct Reader<'a> {
    figment: &'a Figment,
    /// The embedded defaults alone, for a required value given as blank.
    defaults: Figment,
    problems: Vec<String>,
    /// Required keys with no value at all: `config/default.toml` lacks them, a build mistake.
    missing: Vec<String>,
    known: BTreeSet<String>,
}

impl Reader<'_> {
    fn new(figment: &Figment) -> Reader<'_> {
        Reader {
            figment,
            defaults: Figment::from(Toml::string(DEFAULT_TOML)),
            problems: Vec::new(),
            missing: Vec::new(),
            known: BTreeSet::new(),
        }
    }

    fn problem(&mut self, key: &str, message: String) {
        let source = self.source_of(key);
        self.problems.push(format!("{key}{source}: {message}"));
    }

    /// A required key had no value, which only a `config/default.toml` without it can cause.
    fn missing(&mut self, key: &str) {
        self.missing.push(key.to_owned());
    }

    /// What was wrong, if anything: a missing default first, since it is no user's mistake.
    fn finish(self) -> Result<()> {
        if !self.missing.is_empty() {
            return Err(Error::Internal(format!(
                "config/default.toml has no value for {}",
                self.missing.join(", ")
            )));
        }
        if !self.problems.is_empty() {
            return Err(Error::Config(self.problems));
        }
        Ok(())
    }

    /// One line for every key in `all` that nobody read (a misspelt key would go unnoticed).
    fn unknown_key_warnings(&self, all: &Dict) -> Vec<String> {
        unknown_keys(all, &self.known)
            .into_iter()
            .map(|key| {
                format!(
                    "unknown configuration key `{key}`{} is ignored",
                    self.source_of(&key)
                )
            })
            .collect()
    }

    /// " (from environment variable KILLSWITCH_…)" or " (from FILE)" for a key, if known.
    fn source_of(&self, key: &str) -> String {
        let Some(meta) = self.figment.find_metadata(key) else {
            return String::new();
        };
        match &meta.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ if meta.name.contains("environment") => {
                format!(
                    " (from {ENV_PREFIX}{})",
                    key.replace('.', "__").to_uppercase()
                )
            }
            _ => String::new(),
        }
    }

    fn value(&mut self, key: &str) -> Option<Value> {
        self.known.insert(key.to_owned());
        self.figment.find_value(key).ok()
    }

    /// Optional text: blank counts as not set.
    fn string(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(_, s) if s.trim().is_empty() => None,
            Value::String(_, s) => Some(s),
            Value::Num(_, n) => Some(whole(&n).map(|n| n.to_string()).unwrap_or_default()),
            other => {
                self.problem(key, format!("expected text, found {}", other.to_actual()));
                None
            }
        }
    }

    /// Text `config/default.toml` provides. Blank (an environment variable set to nothing)
    /// means that default, just as a blank optional key means not set.
    fn required_string(&mut self, key: &str) -> Option<String> {
        match self.value(key) {
            None => {
                self.missing(key);
                None
            }
            Some(Value::String(_, s)) if s.trim().is_empty() => {
                match self.defaults.find_value(key) {
                    Ok(Value::String(_, default)) if !default.trim().is_empty() => Some(default),
                    _ => {
                        self.missing(key);
                        None
                    }
                }
            }
            Some(_) => self.string(key),
        }
    }

    /// A whole number in `min..=max`; every number has its default in `config/default.toml`.
    fn number(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let Some(value) = self.value(key) else {
            self.missing(key);
            return None;
        };
        let parsed = match &value {
            Value::Num(_, n) => whole(n).and_then(|n| u64::try_from(n).ok()),
            Value::String(_, s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let shown = match &value {
                    Value::String(_, s) => format!("`{s}`"),
                    other => other.to_actual().to_string(),
                };
                self.problem(
                    key,
                    format!("expected a whole number from {min} to {max}, found {shown}"),
                );
                None
            }
        }
    }

    fn seconds(&mut self, key: &str, min: u64, max: u64) -> Option<Duration> {
        self.number(key, min, max).map(Duration::from_secs)
    }

    fn hours(&mut self, key: &str, min: u64, max: u64) -> Option<Duration> {
        self.number(key, min, max)
            .map(|hours| Duration::from_secs(hours * 3600))
    }

    /// Required text parsed as a `T`.
    fn parse<T: std::str::FromStr>(&mut self, key: &str, expected: &str) -> Option<T> {
        let text = self.required_string(key)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(key, format!("`{text}` is not {expected}"));
                None
            }
        }
    }

    /// An optional URL; see `checked_url`.
    fn url(&mut self, key: &str, outbound: bool) -> Option<Url> {
        let text = self.string(key)?;
        self.checked_url(key, &text, outbound)
    }

    /// A URL `config/default.toml` provides; see `checked_url`.
    fn required_url(&mut self, key: &str, outbound: bool) -> Option<Url> {
        let text = self.required_string(key)?;
        self.checked_url(key, &text, outbound)
    }

    /// An http(s) URL; with `outbound`, plain http is accepted only for loopback hosts, since
    /// tokens and secrets travel over these connections.
    fn checked_url(&mut self, key: &str, text: &str, outbound: bool) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            _ => {
                self.problem(key, format!("`{text}` is not an http(s) URL"));
                return None;
            }
        };
        if outbound && url.scheme() == "http" && !is_loopback(&url) {
            self.problem(
                key,
                format!("`{text}` must use https (plain http is accepted only for loopback hosts)"),
            );
            return None;
        }
        Some(url)
    }

    /// A secret given directly or, with `<key>_file`, read from a file (trailing newline
    /// removed). Giving both is a mistake worth stopping for.
    fn secret(&mut self, key: &str) -> Option<SecretString> {
        let file_key = format!("{key}_file");
        let direct = self.string(key);
        let file = self.string(&file_key);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either `{key}` or `{file_key}`, not both"));
                None
            }
            (Some(value), None) => Some(SecretString::from(value)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let value = text.trim_end_matches(['\n', '\r']).to_owned();
                    if value.is_empty() {
                        self.problem(&file_key, format!("{path} is empty"));
                        None
                    } else {
                        Some(SecretString::from(value))
                    }
                }
                Err(e) => {
                    self.problem(&file_key, format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A list: a TOML array, or (from the environment) one string of comma-separated items.
    fn list(&mut self, key: &str) -> Vec<String> {
        let Some(value) = self.value(key) else {
            return Vec::new();
        };
        let items: Option<Vec<String>> = match &value {
            Value::String(_, s) => Some(s.split(',').map(str::to_owned).collect()),
            Value::Array(_, values) => values
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        };
        match items {
            Some(items) => items
                .into_iter()
                .map(|i| i.trim().to_owned())
                .filter(|i| !i.is_empty())
                .collect(),
            None => {
                let found = value.to_actual().to_string();
                self.problem(key, format!("expected a list of text, found {found}"));
                Vec::new()
            }
        }
    }

    /// Networks in CIDR notation (a bare address is a network of one).
    fn networks(&mut self, key: &str) -> Vec<ipnet::IpNet> {
        let mut networks = Vec::new();
        for item in self.list(key) {
            let parsed = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(network) => networks.push(network.trunc()),
                Err(_) => self.problem(
                    key,
                    format!("`{item}` is not an address or a network such as 10.0.0.0/8"),
                ),
            }
        }
        networks
    }

    /// A list of secrets given directly or, with `<key>_file`, one per line of a file.
    fn secret_list(&mut self, key: &str) -> Vec<SecretString> {
        let file_key = format!("{key}_file");
        let direct = self.list(key);
        match (direct.is_empty(), self.string(&file_key)) {
            (false, Some(_)) => {
                self.problem(key, format!("set either `{key}` or `{file_key}`, not both"));
                Vec::new()
            }
            (_, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(|line| SecretString::from(line.to_owned()))
                    .collect(),
                Err(e) => {
                    self.problem(&file_key, format!("cannot read {path}: {e}"));
                    Vec::new()
                }
            },
            (_, None) => direct.into_iter().map(SecretString::from).collect(),
        }
    }

    /// An AES key given as base64 of 32 bytes; a malformed one is reported without its value.
    fn key_bytes(&mut self, key: &str, text: &str) -> Option<SecretBytes> {
        match BASE64.decode(text.trim()) {
            Ok(bytes) if bytes.len() == 32 => Some(SecretBytes(std::sync::Arc::new(
                secrecy::SecretSlice::from(bytes),
            ))),
            // Never echo the value: it is a secret even when malformed.
            _ => {
                self.problem(
                    key,
                    "must be the base64 encoding of exactly 32 bytes".to_owned(),
                );
                None
            }
        }
    }

    fn existing_file(&mut self, key: &str) -> Option<PathBuf> {
        let path = PathBuf::from(self.string(key)?);
        if path.is_file() {
            Some(path)
        } else {
            self.problem(
                key,
                format!("{} does not exist or is not a file", path.display()),
            );
            None
        }
    }
}

/// A non-negative whole number, whichever integer width the source produced.
fn whole(n: &figment::value::Num) -> Option<u128> {
    n.to_u128()
        .or_else(|| n.to_i128().and_then(|i| u128::try_from(i).ok()))
}

fn is_loopback(url: &Url) -> bool {
    url.host()
        .is_some_and(|host| crate::domain::is_loopback_host(&host))
}

/// Dotted paths of every leaf in `dict` that no reader asked for.
fn unknown_keys(dict: &Dict, known: &BTreeSet<String>) -> Vec<String> {
    let mut leaves = Vec::new();
    collect_leaves("", dict, &mut leaves);
    leaves.retain(|key| !known.contains(key));
    leaves
}

fn collect_leaves(prefix: &str, dict: &Dict, out: &mut Vec<String>) {
    for (name, value) in dict {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Dict(_, inner) => collect_leaves(&path, inner, out),
            _ => out.push(path),
        }
    }
}

/// The header trusted proxies record the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

/// Which peers are proxies, and which header they write.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    pub networks: Vec<ipnet::IpNet>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn trusts(&self, ip: &std::net::IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        for (key, value) in pairs {
            figment = figment.merge(Serialized::default(key, value));
        }
        Settings::from_figment(&figment)
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        match settings(pairs) {
            Err(Error::Config(lines)) => lines,
            other => panic!("expected config problems, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.public_url.as_str(), "http://localhost:8080/");
        assert_eq!(
            s.database.url.expose_secret(),
            "sqlite://data/killswitch.db"
        );
        assert_eq!(
            s.audit.signing_key_file,
            PathBuf::from("data/audit-signing.key")
        );
        assert_eq!(
            s.entra.authority_url.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(s.entra.graph_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.audit.checkpoint_every, 1000);
        assert_eq!(s.entra.missing().len(), 2);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn every_bad_value_gets_its_own_line() {
        let lines = problems(&[
            ("server.listen", "not-an-address"),
            ("server.request_timeout_secs", "soon"),
            ("log.format", "xml"),
            ("database.url", "mysql://db/ks"),
        ]);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[0].starts_with("server.listen: `not-an-address` is not an address"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("server.request_timeout_secs: expected a whole number"))
        );
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn plain_http_is_only_accepted_for_loopback_endpoints() {
        assert!(settings(&[("entra.graph_url", "http://127.0.0.1:9000")]).is_ok());
        assert!(settings(&[("entra.graph_url", "http://localhost:9000")]).is_ok());
        let lines = problems(&[("entra.authority_url", "http://login.example.com")]);
        assert!(lines[0].contains("must use https"), "{lines:?}");
    }

    #[test]
    fn secrets_can_come_from_files_but_not_from_both_places() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        let s = settings(&[("entra.client_secret_file", &path)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.entra
                .client_secret
                .map(|s| s.expose_secret().to_owned())
                .as_deref(),
            Some("s3cret")
        );

        let lines = problems(&[
            ("entra.client_secret", "x"),
            ("entra.client_secret_file", &path),
        ]);
        assert!(lines[0].contains("not both"), "{lines:?}");
        assert!(!lines[0].contains("s3cret"));
    }

    #[test]
    fn a_malformed_encryption_key_is_reported_without_echoing_it() {
        let lines = problems(&[("mfa.encryption_key", "hunter2")]);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains("hunter2"), "{lines:?}");
    }

    #[test]
    fn unknown_keys_are_warned_about_not_fatal() {
        let s = settings(&[("server.listne", "127.0.0.1:1"), ("colour", "blue")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| w.contains("`server.listne`")));
    }

    #[test]
    fn single_sign_on_needs_issuer_client_id_and_secret_together() {
        let s = settings(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.oidc.enabled());
        assert_eq!(s.oidc.session_ttl, Duration::from_secs(12 * 3600));
        let s = settings(&[
            ("oidc.issuer_url", "https://login.example.com"),
            ("oidc.client_id", "killswitch"),
            ("oidc.client_secret", "s3cret"),
            ("oidc.session_hours", "1"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.oidc.enabled());
        assert_eq!(s.oidc.session_ttl, Duration::from_secs(3600));
        let lines = problems(&[
            ("oidc.issuer_url", "https://login.example.com"),
            ("oidc.client_id", "killswitch"),
        ]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("oidc.client_secret: "), "{lines:?}");
        let lines = problems(&[
            ("oidc.client_id", "killswitch"),
            ("oidc.session_hours", "0"),
        ]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("oidc.session_hours: expected a whole number from 1 to 168"));
        let lines = problems(&[("oidc.issuer_url", "https://login.example.com")]);
        assert!(
            lines[0].starts_with("oidc.client_id: required"),
            "{lines:?}"
        );
    }

    #[test]
    fn trusted_proxies_and_previous_keys_are_lists_and_bad_items_are_named() {
        let key = BASE64.encode([7u8; 32]);
        let s = settings(&[
            (
                "server.trusted_proxies",
                "10.0.0.0/8, 192.0.2.7 ,2001:db8::/32",
            ),
            ("mfa.previous_encryption_keys", &format!("{key},{key}")),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<String> = s
            .server
            .trusted_proxies
            .networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert_eq!(s.mfa.previous_encryption_keys.len(), 2);
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.oidc.identity_claim, "email");
        let lines = problems(&[
            ("server.trusted_proxies", "10.0.0.0/33"),
            ("mfa.previous_encryption_keys", "hunter2"),
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("server.trusted_proxies: `10.0.0.0/33`"),
            "{lines:?}"
        );
        assert!(!lines[1].contains("hunter2"), "{lines:?}");
    }

    #[test]
    fn a_blank_value_means_the_default_of_config_default_toml() {
        let s = settings(&[("log.level", ""), ("server.listen", " ")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.log.level, "info");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn a_value_config_default_toml_lacks_is_one_internal_line() {
        let figment = Figment::from(Toml::string(
            DEFAULT_TOML.replace("level = ", "lvl = ").as_str(),
        ));
        match Settings::from_figment(&figment) {
            Err(Error::Internal(line)) => {
                assert_eq!(line, "config/default.toml has no value for log.level");
            }
            other => panic!("expected an internal error, got {other:?}"),
        }
    }

    #[test]
    fn database_url_follows_data_dir_unless_set() {
        let s = settings(&[("data_dir", "/var/lib/killswitch")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.database.url.expose_secret(),
            "sqlite:///var/lib/killswitch/killswitch.db"
        );
        assert_eq!(
            s.audit.signing_key_file,
            PathBuf::from("/var/lib/killswitch/audit-signing.key")
        );
    }
}
