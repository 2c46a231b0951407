//! The fake's directory and bookkeeping, shared between the handle and the server tasks.
//!
//! Everything lives behind one `parking_lot::Mutex`: requests are few and short, and a single
//! lock makes "record the call and take its fault" atomic, which is what lets a test wait for
//! `count(..) == 1` and then rely on the fault already being assigned.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, EncodingKey};
use parking_lot::Mutex;
use tokio::sync::watch;
use uuid::Uuid;

use crate::cert::RegisteredCert;
use crate::{Call, ConsentOutcome, Endpoint, Fault, Tenant, User};

/// Graph application roles the killswitch app asks for by default; what an accepting admin
/// grants unless [`crate::FakeEntra::set_consent_outcome`] says otherwise.
pub const DEFAULT_ROLES: [&str; 3] = [
    "User.Read.All",
    "User.EnableDisableAccount.All",
    "User.RevokeSessions.All",
];

/// The Entra directory role that lets an app disable accounts holding admin roles.
pub const PRIVILEGED_AUTH_ADMIN: &str = "Privileged Authentication Administrator";

/// Entra's default access-token lifetime as reported in `expires_in`.
pub(crate) const DEFAULT_TOKEN_LIFETIME: u64 = 3599;

#[derive(Clone, Debug)]
pub(crate) enum Credential {
    Secret(String),
    Certificate(RegisteredCert),
}

#[derive(Clone, Debug)]
pub(crate) struct UserRecord {
    pub(crate) user: User,
    pub(crate) revocations: usize,
}

pub(crate) struct State {
    pub(crate) tenants: BTreeMap<Uuid, Tenant>,
    /// Keyed by tenant id independently of `tenants`, so users may be added before their tenant.
    pub(crate) users: HashMap<Uuid, Vec<UserRecord>>,
    /// Client id (lower-cased) -> its credentials.
    pub(crate) apps: HashMap<String, Vec<Credential>>,
    pub(crate) consent_outcomes: HashMap<Uuid, ConsentOutcome>,
    pub(crate) directory_roles: HashMap<Uuid, HashSet<String>>,
    pub(crate) next_faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub(crate) always_faults: HashMap<Endpoint, Fault>,
    /// Calls with a private sequence number, so a request can set its final status even after
    /// `reset_counts` shifted the log.
    pub(crate) calls: Vec<(u64, Call)>,
    pub(crate) next_call_seq: u64,
    pub(crate) latency: Duration,
    pub(crate) token_lifetime: u64,
}

impl State {
    fn new() -> Self {
        State {
            tenants: BTreeMap::new(),
            users: HashMap::new(),
            apps: HashMap::new(),
            consent_outcomes: HashMap::new(),
            directory_roles: HashMap::new(),
            next_faults: HashMap::new(),
            always_faults: HashMap::new(),
            calls: Vec::new(),
            next_call_seq: 0,
            latency: Duration::ZERO,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// Resolves a `{tenant}` path segment: a tenant GUID or one of its domains (case-insensitive).
    pub(crate) fn resolve_tenant(&self, segment: &str) -> Option<&Tenant> {
        if let Ok(id) = Uuid::parse_str(segment) {
            return self.tenants.get(&id);
        }
        self.tenants
            .values()
            .find(|t| t.domain.eq_ignore_ascii_case(segment))
    }

    /// Index of the user named by a Graph `{id | userPrincipalName}` key.
    pub(crate) fn user_index(&self, tenant: Uuid, id_or_upn: &str) -> Option<usize> {
        let users = self.users.get(&tenant)?;
        match Uuid::parse_str(id_or_upn) {
            Ok(id) => users.iter().position(|u| u.user.id == id),
            // Graph matches userPrincipalName case-insensitively.
            Err(_) => users
                .iter()
                .position(|u| u.user.user_principal_name.eq_ignore_ascii_case(id_or_upn)),
        }
    }

    pub(crate) fn user_mut(&mut self, tenant: Uuid, id_or_upn: &str) -> Option<&mut UserRecord> {
        let i = self.user_index(tenant, id_or_upn)?;
        self.users.get_mut(&tenant)?.get_mut(i)
    }

    pub(crate) fn user(&self, tenant: Uuid, id_or_upn: &str) -> Option<&UserRecord> {
        let i = self.user_index(tenant, id_or_upn)?;
        self.users.get(&tenant)?.get(i)
    }

    pub(crate) fn consent_outcome(&self, tenant: Uuid) -> ConsentOutcome {
        self.consent_outcomes
            .get(&tenant)
            .cloned()
            .unwrap_or_else(|| ConsentOutcome::Accept {
                roles: DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect(),
            })
    }

    /// Queued faults first (FIFO), then the persistent one.
    pub(crate) fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        if let Some(f) = self
            .next_faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
        {
            return Some(f);
        }
        self.always_faults.get(&endpoint).cloned()
    }
}

/// Everything the server tasks and the [`crate::FakeEntra`] handle share.
pub(crate) struct Shared {
    pub(crate) base_url: String,
    pub(crate) state: Mutex<State>,
    /// Per-instance HS256 key for the access tokens this fake issues: a token from another
    /// instance (or a forged one) fails validation, as a token from another cloud would.
    pub(crate) token_enc: EncodingKey,
    pub(crate) token_dec: DecodingKey,
    /// Bumped by `release_hung`; hung requests wait for it to change.
    pub(crate) release: watch::Sender<u64>,
    pub(crate) hung: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(base_url: String) -> Self {
        let key: [u8; 32] = rand::random();
        let (release, _) = watch::channel(0);
        Shared {
            base_url,
            state: Mutex::new(State::new()),
            token_enc: EncodingKey::from_secret(&key),
            token_dec: DecodingKey::from_secret(&key),
            release,
            hung: AtomicUsize::new(0),
        }
    }

    /// Records a received request and atomically takes the fault it is to suffer. For a `Hang`
    /// the release receiver is subscribed here too, so a `release_hung` that follows a
    /// `count(..)` check can never be missed.
    pub(crate) fn begin_call(
        &self,
        endpoint: Endpoint,
        tenant: Option<String>,
        method: String,
        path: String,
        client_request_id: Option<String>,
    ) -> (u64, Option<Fault>, Option<watch::Receiver<u64>>) {
        let mut st = self.state.lock();
        let seq = st.next_call_seq;
        st.next_call_seq += 1;
        st.calls.push((
            seq,
            Call {
                endpoint,
                tenant,
                method,
                path,
                client_request_id,
                status: 0,
            },
        ));
        let fault = st.take_fault(endpoint);
        let release = matches!(fault, Some(Fault::Hang)).then(|| self.release.subscribe());
        (seq, fault, release)
    }

    pub(crate) fn finish_call(&self, seq: u64, status: u16) {
        let mut st = self.state.lock();
        if let Some((_, call)) = st.calls.iter_mut().rev().find(|(s, _)| *s == seq) {
            call.status = status;
        }
    }
}
