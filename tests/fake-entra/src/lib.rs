//! A stateful fake of Microsoft Entra ID's login endpoints and the Graph `users` API.
//!
//! killswitch disables compromised accounts by calling Microsoft Graph as a multi-tenant app
//! (client-credentials grant, then `PATCH /users/{id}` and `revokeSignInSessions`). This crate
//! serves look-alikes of exactly those endpoints on loopback, with the status codes, error
//! bodies and headers Microsoft documents, so killswitch's retry, error and audit paths can be
//! tested without a real tenant:
//!
//! * `POST /{tenant}/oauth2/v2.0/token` (client secret or certificate assertion),
//! * `GET /{tenant}/v2.0/.well-known/openid-configuration`,
//! * `GET /{tenant}/v2.0/adminconsent` (the fake plays the consenting admin),
//! * `GET|PATCH /v1.0/users/{id|upn}`, `GET /v1.0/users?$filter=…`,
//!   `POST /v1.0/users/{id|upn}/revokeSignInSessions`,
//! * `GET /_fake/users`: the directory state, for demos (not an Entra API).
//!
//! Tests drive it through [`FakeEntra`]: seed tenants, apps and users, inject faults
//! ([`FakeEntra::fail_next`]), and inspect what the client did ([`FakeEntra::calls`]).
//!
//! The server lives on a background task of the tokio runtime that called
//! [`FakeEntra::start`]; it stops with that runtime (dropping the handle does not stop it).

mod aad;
mod cert;
mod consent;
mod demo;
mod discovery;
mod faults;
mod graph;
mod server;
mod state;
mod token;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

pub use cert::{sign_client_assertion, sign_jwt, x5t_s256};
pub use jsonwebtoken::Algorithm;
pub use state::{DEFAULT_ROLES, PRIVILEGED_AUTH_ADMIN};

use crate::state::{Credential, Shared, UserRecord};

/// Test-only certificate (CN=killswitch-remediation-test) followed by its RSA-2048 PKCS#8 key.
pub const TEST_CERT_PEM: &str = include_str!("../fixtures/remediation-app.pem");
/// A second, unrelated test-only certificate and key, for "signed by the wrong key" cases.
pub const OTHER_CERT_PEM: &str = include_str!("../fixtures/other-app.pem");

/// Handle on a running fake. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct FakeEntra {
    shared: Arc<Shared>,
}

/// A credential of the (multi-tenant) app registration.
#[derive(Clone, Debug)]
pub enum AppCredential {
    Secret(String),
    /// A PEM holding the certificate; a private key in the same PEM is ignored.
    Certificate {
        cert_pem: String,
    },
}

/// A customer tenant.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: Uuid,
    /// e.g. "contoso.onmicrosoft.com"; accepted in place of the GUID in login URLs.
    pub domain: String,
    /// Whether the app has a service principal there (admin consent was given).
    pub consented: bool,
    /// Graph application roles granted to the app; they end up in the token's `roles`.
    pub granted_roles: Vec<String>,
}

/// A directory user. Serializes in Graph's camelCase (used by `GET /_fake/users`).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub user_principal_name: String,
    pub display_name: String,
    pub account_enabled: bool,
    pub on_premises_sync_enabled: Option<bool>,
    pub on_premises_security_identifier: Option<String>,
    /// Holds an admin role: `PATCH accountEnabled` answers 403 unless the tenant granted the
    /// app [`PRIVILEGED_AUTH_ADMIN`] via [`FakeEntra::grant_directory_role`].
    pub privileged: bool,
}

/// The kinds of request the fake serves, for faults and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Token,
    /// The OpenID configuration document and its (empty) JWKS.
    Discovery,
    AdminConsent,
    GetUser,
    ListUsers,
    PatchUser,
    RevokeSessions,
}

/// An injected failure, applied before normal processing.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 + `Retry-After` + a Graph (`TooManyRequests`) or AAD-style error body.
    Throttle { retry_after_secs: u64 },
    /// This status with the matching error body (500 `generalException`, 503
    /// `serviceNotAvailable`, 504 `gatewayTimeout`, ...).
    Status(u16),
    /// Close the TCP connection without any HTTP response.
    DropConnection,
    /// Never answer until [`FakeEntra::release_hung`]; then answer normally.
    Hang,
}

/// One received request.
#[derive(Clone, Debug)]
pub struct Call {
    pub endpoint: Endpoint,
    /// Login endpoints: the `{tenant}` path segment as sent (GUID or domain). Graph: the
    /// token's `tid` when the token is valid.
    pub tenant: Option<String>,
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub client_request_id: Option<String>,
    /// Final status; 0 for a dropped connection or a request not answered yet (e.g. hung).
    pub status: u16,
}

/// What the admin of a tenant does on the admin-consent prompt.
#[derive(Clone, Debug)]
pub enum ConsentOutcome {
    Accept { roles: Vec<String> },
    Deny,
}

/// What [`FakeEntra::seed_demo`] created.
#[derive(Clone, Debug)]
pub struct DemoSeed {
    pub client_id: String,
    pub client_secret: String,
    pub tenant_id: Uuid,
    pub domain: String,
}

impl FakeEntra {
    /// Starts on `127.0.0.1` with an ephemeral port.
    ///
    /// # Panics
    /// If no loopback port can be bound, which leaves a test nothing to do anyway.
    pub async fn start() -> FakeEntra {
        match Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
            Ok(fake) => fake,
            Err(e) => panic!("fake-entra: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Starts on `addr` (port 0 for an ephemeral one), serving on a background tokio task.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeEntra> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        // A wildcard bind is reachable on loopback; advertise that.
        let host = match local.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        let shared = Arc::new(Shared::new(format!("http://{host}:{}", local.port())));
        tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(FakeEntra { shared })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: both the authority and the Graph base URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Adds a credential to the app `client_id` (registering the app on first use).
    ///
    /// # Panics
    /// If a certificate credential holds no parsable RSA certificate: a broken fixture.
    pub fn register_app(&self, client_id: &str, credential: AppCredential) {
        let credential = match credential {
            AppCredential::Secret(s) => Credential::Secret(s),
            AppCredential::Certificate { cert_pem } => match cert::parse_certificate(&cert_pem) {
                Ok(c) => Credential::Certificate(c),
                Err(e) => panic!("fake-entra: register_app({client_id}): {e}"),
            },
        };
        self.shared
            .state
            .lock()
            .apps
            .entry(client_id.to_ascii_lowercase())
            .or_default()
            .push(credential);
    }

    /// Adds (or replaces) a tenant.
    pub fn add_tenant(&self, tenant: Tenant) {
        self.shared.state.lock().tenants.insert(tenant.id, tenant);
    }

    /// Sets whether the app has a service principal in `tenant`, and its granted roles.
    /// Tokens issued earlier keep the roles they carry, as with the real service.
    pub fn set_consent(&self, tenant: Uuid, consented: bool, granted_roles: Vec<String>) {
        if let Some(t) = self.shared.state.lock().tenants.get_mut(&tenant) {
            t.consented = consented;
            t.granted_roles = granted_roles;
        }
    }

    /// How the admin answers the next admin-consent prompts for `tenant`
    /// (default: accept with [`DEFAULT_ROLES`]).
    pub fn set_consent_outcome(&self, tenant: Uuid, outcome: ConsentOutcome) {
        self.shared
            .state
            .lock()
            .consent_outcomes
            .insert(tenant, outcome);
    }

    /// Assigns the app a directory role in `tenant`. [`PRIVILEGED_AUTH_ADMIN`] lets it
    /// disable privileged users.
    pub fn grant_directory_role(&self, tenant: Uuid, role: &str) {
        self.shared
            .state
            .lock()
            .directory_roles
            .entry(tenant)
            .or_default()
            .insert(role.to_owned());
    }

    /// Adds a user to `tenant` (replacing one with the same id). The tenant may be added later.
    pub fn add_user(&self, tenant: Uuid, user: User) {
        let mut st = self.shared.state.lock();
        let users = st.users.entry(tenant).or_default();
        match users.iter_mut().find(|r| r.user.id == user.id) {
            Some(existing) => existing.user = user,
            None => users.push(UserRecord {
                user,
                revocations: 0,
            }),
        }
    }

    /// The user's current state, by object id or UPN (case-insensitive).
    pub fn user(&self, tenant: Uuid, id_or_upn: &str) -> Option<User> {
        self.shared
            .state
            .lock()
            .user(tenant, id_or_upn)
            .map(|r| r.user.clone())
    }

    /// Changes `accountEnabled` behind the client's back (e.g. an admin re-enabling an account).
    pub fn set_account_enabled(&self, tenant: Uuid, id_or_upn: &str, enabled: bool) {
        if let Some(rec) = self.shared.state.lock().user_mut(tenant, id_or_upn) {
            rec.user.account_enabled = enabled;
        }
    }

    /// How many successful `revokeSignInSessions` calls the user has had (0 if unknown).
    pub fn revocations(&self, tenant: Uuid, id_or_upn: &str) -> usize {
        self.shared
            .state
            .lock()
            .user(tenant, id_or_upn)
            .map_or(0, |r| r.revocations)
    }

    /// Delay added before every answer on every endpoint.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state.lock().latency = latency;
    }

    /// `expires_in` of tokens issued from now on (default 3599). 0 issues tokens Graph already
    /// rejects as expired.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.state.lock().token_lifetime = secs;
    }

    /// The next `count` calls to `endpoint` (any tenant) suffer `fault`, after faults queued
    /// earlier for that endpoint (FIFO). Queued faults take precedence over `fail_always`.
    pub fn fail_next(&self, endpoint: Endpoint, count: usize, fault: Fault) {
        let mut st = self.shared.state.lock();
        let queue = st.next_faults.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(fault, count));
    }

    /// Every call to `endpoint` suffers `fault` until cleared with `None`.
    pub fn fail_always(&self, endpoint: Endpoint, fault: Option<Fault>) {
        let mut st = self.shared.state.lock();
        match fault {
            Some(f) => st.always_faults.insert(endpoint, f),
            None => st.always_faults.remove(&endpoint),
        };
    }

    /// Lets every currently hung request proceed (and be answered normally).
    pub fn release_hung(&self) {
        self.shared
            .release
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Number of requests currently held by a `Hang` fault.
    pub fn hung_count(&self) -> usize {
        self.shared.hung.load(Ordering::SeqCst)
    }

    /// Every request received (faulted ones included), in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .state
            .lock()
            .calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.shared
            .state
            .lock()
            .calls
            .iter()
            .filter(|(_, c)| c.endpoint == endpoint)
            .count()
    }

    /// Calls to `endpoint` for `tenant`, whether its GUID or its domain was used.
    pub fn count_for(&self, endpoint: Endpoint, tenant: Uuid) -> usize {
        let st = self.shared.state.lock();
        let id = tenant.to_string();
        let domain = st.tenants.get(&tenant).map(|t| t.domain.clone());
        st.calls
            .iter()
            .filter(|(_, c)| c.endpoint == endpoint)
            .filter(|(_, c)| {
                c.tenant.as_deref().is_some_and(|t| {
                    t.eq_ignore_ascii_case(&id)
                        || domain.as_deref().is_some_and(|d| t.eq_ignore_ascii_case(d))
                })
            })
            .count()
    }

    /// Forgets all recorded calls (and so resets every counter).
    pub fn reset_counts(&self) {
        self.shared.state.lock().calls.clear();
    }

    /// Seeds the demo directory (see the `fake-entra` binary) and returns what to configure.
    pub fn seed_demo(&self) -> DemoSeed {
        demo::seed(self)
    }
}
