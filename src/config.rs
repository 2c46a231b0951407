//! Configuration: the embedded `config/default.toml`, then `--config FILE`, then environment
//! variables `KILLSWITCH_<SECTION>__<KEY>`; every secret may instead be read from `<key>_file`.
//!
//! Values are read key by key so that every problem becomes one line naming the key and where
//! its value came from, and every key nobody reads is reported as unknown.

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
    pub onboarding: OnboardingConfig,
    pub falcon: FalconSettings,
    pub mfa: MfaSettings,
    pub auth: AuthSettings,
    pub oidc: OidcSettings,
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
    pub trusted_proxies: crate::http::client::TrustedProxies,
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
        let mut r = Reader {
            figment,
            problems: Vec::new(),
            known: BTreeSet::new(),
        };

        let data_dir = PathBuf::from(r.string("data_dir").unwrap_or_else(|| "data".to_owned()));

        let server = ServerSettings {
            listen: r
                .parse("server.listen", "an address such as 127.0.0.1:8080")
                .unwrap_or(default_listen()),
            public_url: match r.url("server.public_url", false) {
                Some(url) => url,
                None => default_url("http://localhost:8080")?,
            },
            request_timeout: Duration::from_secs(
                r.number("server.request_timeout_secs", 1, 3600)
                    .unwrap_or(30),
            ),
            body_limit_bytes: r
                .number("server.body_limit_bytes", 1024, 64 * 1024 * 1024)
                .unwrap_or(262_144) as usize,
            shutdown_grace: Duration::from_secs(
                r.number("server.shutdown_grace_secs", 0, 3600)
                    .unwrap_or(20),
            ),
            header_read_timeout: Duration::from_secs(
                r.number("server.header_read_timeout_secs", 1, 600)
                    .unwrap_or(10),
            ),
            max_connections: r
                .number("server.max_connections", 1, 1_000_000)
                .unwrap_or(1024) as usize,
            trusted_proxies: crate::http::client::TrustedProxies {
                networks: r.networks("server.trusted_proxies"),
                header: match r.string("server.client_address_header").as_deref() {
                    None => crate::http::client::ForwardedHeader::XForwardedFor,
                    Some(h) if h.eq_ignore_ascii_case("x-forwarded-for") => {
                        crate::http::client::ForwardedHeader::XForwardedFor
                    }
                    Some(h) if h.eq_ignore_ascii_case("forwarded") => {
                        crate::http::client::ForwardedHeader::Forwarded
                    }
                    Some(other) => {
                        r.problem(
                            "server.client_address_header",
                            format!("`{other}` is not X-Forwarded-For or Forwarded"),
                        );
                        crate::http::client::ForwardedHeader::XForwardedFor
                    }
                },
            },
            max_connections_per_client: r
                .number("server.max_connections_per_client", 1, 1_000_000)
                .unwrap_or(64) as usize,
        };

        let log = LogSettings {
            format: match r.string("log.format").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    r.problem(
                        "log.format",
                        format!("`{other}` is not a log format (use \"text\" or \"json\")"),
                    );
                    LogFormat::Text
                }
            },
            level: {
                let level = r.string("log.level").unwrap_or_else(|| "info".to_owned());
                if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
                    r.problem("log.level", format!("`{level}` is not a valid filter: {e}"));
                }
                level
            },
        };

        let default_db = format!("sqlite://{}/killswitch.db", data_dir.display());
        let db_url = r
            .secret("database.url")
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or(default_db);
        if crate::store::Backend::from_url(&db_url).is_err() {
            r.problem(
                "database.url",
                format!(
                    "`{}` is neither a sqlite:// nor a postgres:// URL",
                    crate::store::redact_url(&db_url)
                ),
            );
        }
        let database = DatabaseSettings {
            url: SecretString::from(db_url),
            max_connections: r.number("database.max_connections", 1, 1000).unwrap_or(10) as u32,
            acquire_timeout: Duration::from_secs(
                r.number("database.acquire_timeout_secs", 1, 600)
                    .unwrap_or(5),
            ),
        };

        let audit = AuditSettings {
            signing_key_file: r
                .string("audit.signing_key_file")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("audit-signing.key")),
            checkpoint_every: r
                .number("audit.checkpoint_every", 1, 1_000_000)
                .unwrap_or(1000),
            checkpoint_interval: match r
                .number("audit.checkpoint_interval_secs", 0, 86_400)
                .unwrap_or(300)
            {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
        };

        let entra = EntraSettings {
            client_id: r.string("entra.client_id"),
            client_secret: r.secret("entra.client_secret"),
            certificate_file: r.existing_file("entra.certificate_file"),
            authority_url: match r.url("entra.authority_url", true) {
                Some(url) => url,
                None => default_url("https://login.microsoftonline.com")?,
            },
            graph_url: match r.url("entra.graph_url", true) {
                Some(url) => url,
                None => default_url("https://graph.microsoft.com")?,
            },
        };

        let graph = GraphLimits {
            deadline: Duration::from_secs(r.number("graph.deadline_secs", 1, 600).unwrap_or(30)),
            request_timeout: Duration::from_secs(
                r.number("graph.request_timeout_secs", 1, 300).unwrap_or(10),
            ),
            max_in_flight_per_tenant: r
                .number("graph.max_in_flight_per_tenant", 1, 1000)
                .unwrap_or(8) as usize,
            max_in_flight: r.number("graph.max_in_flight", 1, 100_000).unwrap_or(256) as usize,
        };
        let remediation = RemediationConfig {
            reconcile_interval: Duration::from_secs(
                r.number("remediation.reconcile_interval_secs", 1, 86_400)
                    .unwrap_or(30),
            ),
            reconcile_give_up: Duration::from_secs(
                r.number("remediation.reconcile_give_up_secs", 60, 30 * 86_400)
                    .unwrap_or(3600),
            ),
        };
        let onboarding = OnboardingConfig {
            consent_link_ttl: Duration::from_secs(
                r.number("onboarding.consent_link_secs", 1, 90 * 86_400)
                    .unwrap_or(7 * 86_400),
            ),
            callbacks_per_minute: r
                .number("onboarding.callbacks_per_minute", 1, 10_000)
                .unwrap_or(10) as u32,
        };
        let falcon = FalconSettings {
            signature_header: {
                let header = r
                    .string("falcon.signature_header")
                    .unwrap_or_else(|| "X-CS-Primary-Signature".to_owned());
                if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    r.problem(
                        "falcon.signature_header",
                        format!("`{header}` is not a valid HTTP header name"),
                    );
                }
                header
            },
            secret_grace: Duration::from_secs(
                3600 * r
                    .number("falcon.secret_grace_hours", 0, 24 * 30)
                    .unwrap_or(24),
            ),
            timestamp_tolerance: Duration::from_secs(
                r.number("falcon.timestamp_tolerance_secs", 1, 3600)
                    .unwrap_or(300),
            ),
        };

        let mfa = MfaSettings {
            encryption_key: r
                .secret("mfa.encryption_key")
                .and_then(|key| r.key_bytes("mfa.encryption_key", key.expose_secret())),
            previous_encryption_keys: r
                .secret_list("mfa.previous_encryption_keys")
                .iter()
                .filter_map(|key| r.key_bytes("mfa.previous_encryption_keys", key.expose_secret()))
                .collect(),
            max_failures: r.number("mfa.max_failures", 1, 100).unwrap_or(5) as u32,
            lockout: Duration::from_secs(r.number("mfa.lockout_secs", 1, 86_400).unwrap_or(900)),
        };
        let auth = AuthSettings {
            max_failures_per_client: r
                .number("auth.max_failures_per_client", 1, 100_000)
                .unwrap_or(20) as u32,
            failure_window: Duration::from_secs(
                r.number("auth.failure_window_secs", 1, 86_400)
                    .unwrap_or(300),
            ),
        };

        let oidc = OidcSettings {
            issuer_url: r.url("oidc.issuer_url", true),
            client_id: r.string("oidc.client_id"),
            client_secret: r.secret("oidc.client_secret"),
            audience: r.string("oidc.audience"),
            identity_claim: r
                .string("oidc.identity_claim")
                .unwrap_or_else(|| "email".to_owned()),
            session_ttl: Duration::from_secs(
                r.number("oidc.session_hours", 1, 168).unwrap_or(12) * 3600,
            ),
        };
        // (Unless a value was already reported as bad: one line per mistake.)
        let reported = r.problems.iter().any(|p| p.starts_with("oidc."));
        match (&oidc.issuer_url, &oidc.client_id) {
            _ if reported => {}
            (Some(_), Some(_)) if oidc.client_secret.is_none() => r.problem(
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

        let warnings = unknown_keys(&all, &r.known)
            .into_iter()
            .map(|key| {
                format!(
                    "unknown configuration key `{key}`{} is ignored",
                    r.source_of(&key)
                )
            })
            .collect();
        if !r.problems.is_empty() {
            return Err(Error::Config(r.problems));
        }
        Ok(Settings {
            data_dir,
            server,
            log,
            database,
            audit,
            entra,
            graph,
            remediation,
            onboarding,
            falcon,
            mfa,
            auth,
            oidc,
            warnings,
        })
    }
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Parses one of the literal default URLs above.
fn default_url(text: &str) -> Result<Url> {
    Url::parse(text).map_err(|e| Error::Internal(format!("default URL {text}: {e}")))
}

/// Reads keys one at a time, remembering which keys exist and which problems it met.
struct Reader<'a> {
    figment: &'a Figment,
    problems: Vec<String>,
    known: BTreeSet<String>,
}

impl Reader<'_> {
    fn problem(&mut self, key: &str, message: String) {
        let source = self.source_of(key);
        self.problems.push(format!("{key}{source}: {message}"));
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

    fn number(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.value(key)?;
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

    fn parse<T: std::str::FromStr>(&mut self, key: &str, expected: &str) -> Option<T> {
        let text = self.string(key)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(key, format!("`{text}` is not {expected}"));
                None
            }
        }
    }

    /// A URL; with `outbound`, plain http is accepted only for loopback hosts, since tokens and
    /// secrets travel over these connections.
    fn url(&mut self, key: &str, outbound: bool) -> Option<Url> {
        let text = self.string(key)?;
        let url = match Url::parse(&text) {
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
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
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
