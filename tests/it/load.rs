//! Two `killswitch serve` processes on one database under load, one of them killed with SIGKILL
//! halfway and restarted: the driver and the checks, shared by the test (tests/it/two_instances.rs)
//! and the larger benchmark (benches/recovery.rs).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_entra::{AppCredential, Endpoint, FakeEntra};
use futures::StreamExt;
use killswitch::audit::event::{Actor, AuditEvent, Operation};
use killswitch::auth::mfa;
use killswitch::customers::onboarding::SecretIssue;
use killswitch::customers::{AutoDisable, Policy};
use killswitch::falcon::records::{DetectionRecord, DetectionState};
use killswitch::remediation::action::{ActionRecord, ActionState};
use killswitch::store::{ActionFilter, Store};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::common::entra::{self, CLIENT_ID, CLIENT_SECRET};
use crate::common::serve::{Server, enroll_lead, env_of};
use crate::common::{self, TestDb};

/// How much load.
#[derive(Debug, Clone, Copy)]
pub struct LoadSize {
    pub customers: usize,
    /// Disables and enables through the API, one per account.
    pub actions: usize,
    /// Signed Falcon webhooks; customers with an even number disable automatically.
    pub webhooks: usize,
    pub in_flight: usize,
}

/// What the run measured; [`run`] has checked every invariant before returning it.
#[derive(Debug)]
pub struct LoadReport {
    pub requests: usize,
    pub elapsed: Duration,
    /// Requests sent again after a connection failed (the killed instance).
    pub retried: usize,
    /// Actions recorded, each with exactly one outcome.
    pub actions_settled: usize,
    /// Actions carried through by reconciliation after the kill.
    pub redriven: usize,
    /// PATCHes beyond one per account and its documented re-drives.
    pub duplicate_patches: usize,
    /// From the killed instance's restart to every action settled and detection decided.
    pub settled_after_restart: Duration,
}

impl LoadReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.1?}: {:.0} requests/s; {} retried after the kill; {} actions settled, each once; {} carried through; duplicate PATCHes found: {}; settled {:.1?} after the restart",
            self.requests,
            self.elapsed,
            self.requests_per_sec(),
            self.retried,
            self.actions_settled,
            self.redriven,
            self.duplicate_patches,
            self.settled_after_restart
        )
    }
}

/// Every action and detection a run of `size` can make, with room to spare: a listing this
/// long holds them all.
fn limit_of(size: LoadSize) -> u32 {
    u32::try_from(size.actions + size.webhooks + 10).unwrap_or(u32::MAX)
}

fn tenant(t: usize) -> Uuid {
    Uuid::from_u128(0x10AD_0000_0000 + t as u128)
}

/// The account an API job acts on; even ones start enabled (and are disabled), odd ones start
/// disabled (and are enabled).
fn api_user(t: usize, n: usize) -> (Uuid, String, bool) {
    let id = Uuid::from_u128(0xA000_0000 + (t as u128) * 100_000 + n as u128);
    (
        id,
        format!("a{n}@load{t}.onmicrosoft.com"),
        n.is_multiple_of(2),
    )
}

fn webhook_user(t: usize, n: usize) -> (Uuid, String) {
    let id = Uuid::from_u128(0xB000_0000 + (t as u128) * 100_000 + n as u128);
    (id, format!("w{n}@load{t}.onmicrosoft.com"))
}

/// An analyst sending one job, and retrying it.
struct Credentials {
    analyst: common::Analyst,
    /// The newest TOTP step this analyst sent: each step is accepted once.
    last_step: std::sync::Mutex<u64>,
}

impl Credentials {
    /// A code of a step not sent before: the current step, else the next one (accepted a step
    /// early), else after waiting for time to move on — as an analyst retrying would.
    async fn fresh_code(&self) -> String {
        loop {
            let now = chrono::Utc::now().timestamp() as u64;
            let current = now / 30;
            let step = {
                let mut last = self.last_step.lock().unwrap();
                let step = current.max(*last + 1);
                if step <= current + 1 {
                    *last = step;
                    Some(step)
                } else {
                    None
                }
            };
            match step {
                Some(step) => return mfa::code_at(&self.analyst.totp, step * 30).unwrap(),
                None => tokio::time::sleep(Duration::from_secs(30 - now % 30)).await,
            }
        }
    }
}

/// Everything the clients need: per API job an analyst, per customer its webhook secret.
struct Fixture {
    fake: FakeEntra,
    store: Arc<dyn Store>,
    analysts: Vec<Credentials>,
    secrets: Vec<String>,
    size: LoadSize,
}

async fn fixture(db: &TestDb, size: LoadSize) -> Fixture {
    let fake = fake_tenants(size).await;
    let services = Arc::new(
        killswitch::app::Services::open(&db.settings(&[]))
            .await
            .unwrap(),
    );
    let secrets = add_customers(&services, size).await;
    let analysts = futures::stream::iter(0..size.actions)
        .map(|i| {
            let services = services.clone();
            async move {
                let email = format!("analyst{i}@provider.example");
                Credentials {
                    analyst: enroll_lead(&services, &email).await,
                    last_step: std::sync::Mutex::new(0),
                }
            }
        })
        .buffered(8)
        .collect()
        .await;
    Fixture {
        fake,
        store: services.store.clone(),
        analysts,
        secrets,
        size,
    }
}

/// A tenant per customer, with an account per API job and per webhook.
async fn fake_tenants(size: LoadSize) -> FakeEntra {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT_ID, AppCredential::Secret(CLIENT_SECRET.to_owned()));
    for t in 0..size.customers {
        entra::add_tenant(&fake, tenant(t), &format!("load{t}"));
        for n in 0..size.actions.div_ceil(size.customers) {
            let (id, upn, enabled) = api_user(t, n);
            fake.add_user(tenant(t), entra::user(id, &upn, enabled));
        }
        for n in 0..size.webhooks.div_ceil(size.customers) {
            let (id, upn) = webhook_user(t, n);
            fake.add_user(tenant(t), entra::user(id, &upn, true));
        }
    }
    fake
}

/// The customers (even ones disable automatically), each with its webhook secret, returned.
async fn add_customers(services: &killswitch::app::Services, size: LoadSize) -> Vec<String> {
    let mut secrets = Vec::new();
    for t in 0..size.customers {
        let policy = Policy {
            max_actions_per_hour: 1_000_000,
            auto_disable: if t.is_multiple_of(2) {
                AutoDisable::High
            } else {
                AutoDisable::Off
            },
            ..Policy::default()
        };
        let customer =
            entra::add_customer(&services.store, &format!("load{t}"), tenant(t), policy).await;
        let issued = services
            .onboarding
            .issue_webhook_secret(&customer, SecretIssue::First, &Actor::operator())
            .await
            .unwrap();
        secrets.push(issued.secret.expose_secret().to_owned());
    }
    secrets
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Api(usize),
    Webhook(usize),
}

/// Where a job's answer led: the action or detection it names.
enum Answered {
    Action(Uuid),
    Detection(Uuid),
}

/// Two instances behind no balancer: jobs alternate between them, a failed connection is
/// retried on the other one.
struct Instances {
    bases: [String; 2],
    client: reqwest::Client,
}

impl Fixture {
    async fn api_request(
        &self,
        instances: &Instances,
        i: usize,
        at: usize,
    ) -> reqwest::RequestBuilder {
        let who = &self.analysts[i];
        let t = i % self.size.customers;
        let (_, upn, enabled) = api_user(t, i / self.size.customers);
        let verb = if enabled { "disable" } else { "enable" };
        instances
            .client
            .post(format!(
                "{}/api/v1/customers/load{t}/accounts/{upn}/{verb}",
                instances.bases[at]
            ))
            .bearer_auth(&who.analyst.token)
            .header("X-Killswitch-OTP", who.fresh_code().await)
            .header("Idempotency-Key", format!("load-{i}"))
            .json(&json!({"reason": "password spray wave", "ticket": format!("INC-{i}")}))
    }

    fn webhook_request(
        &self,
        instances: &Instances,
        j: usize,
        at: usize,
    ) -> reqwest::RequestBuilder {
        let t = j % self.size.customers;
        let (_, upn) = webhook_user(t, j / self.size.customers);
        let body = serde_json::to_vec(&json!({
            "composite_id": format!("cid:ind:load-{j}"),
            "severity": "high",
            "tactic": "Credential Access",
            "source_account_upn": upn,
            "timestamp": "2026-12-01T03:00:00Z",
        }))
        .unwrap();
        let url = format!("{}/api/v1/webhooks/falcon/load{t}", instances.bases[at]);
        common::signed_webhook(&instances.client, &url, &self.secrets[t], body)
    }

    /// Sends one job until it is answered; returns what it names and how many retries it took.
    async fn send(&self, instances: &Instances, job: Job, first: usize) -> (Answered, usize) {
        for attempt in 0..60 {
            let at = (first + attempt) % 2;
            let request = match job {
                // A retry is the same analyst's, with the same idempotency key and a fresh code
                // (the first may have been spent before the connection broke).
                Job::Api(i) => self.api_request(instances, i, at).await,
                Job::Webhook(j) => self.webhook_request(instances, j, at),
            };
            let Ok(response) = request.send().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let status = response.status().as_u16();
            let Ok(body) = response.json::<Value>().await else {
                continue;
            };
            match (job, status) {
                (Job::Api(_), 200 | 202) => {
                    let id = body["id"].as_str().unwrap().parse().unwrap();
                    return (Answered::Action(id), attempt);
                }
                (Job::Webhook(_), 200 | 202) => {
                    let id = body["id"].as_str().unwrap().parse().unwrap();
                    return (Answered::Detection(id), attempt);
                }
                // The first attempt's request is still being recorded by the other instance.
                (Job::Api(_), 409)
                    if body["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("/conflict")) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => panic!("{job:?}: {status} {body}"),
            }
        }
        panic!("{job:?} was never answered");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the load, kills instance 0 when half the jobs are answered, restarts it on the same
/// address (so under the same instance name), waits until everything is settled, and checks
/// every invariant. Panics on the first one broken.
pub async fn run(db: &TestDb, size: LoadSize) -> LoadReport {
    let fixture = Arc::new(fixture(db, size).await);
    let env = {
        let mut env = env_of(entra::settings(&fixture.fake.base_url()));
        env.extend(env_of([
            ("server.max_connections_per_client", "1024"),
            ("database.max_connections", "20"),
        ]));
        env
    };
    let ports = [free_port(), free_port()];
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let first = Server::start_on(db, &listen(ports[0]), &env);
    let second = Server::start_on(db, &listen(ports[1]), &env);
    let instances = Arc::new(Instances {
        bases: [first.base.clone(), second.base.clone()],
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(size.in_flight)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    });

    let jobs = jobs(size);
    let total = jobs.len();
    let answered = Arc::new(AtomicUsize::new(0));
    let restarted: Arc<Mutex<Option<(Server, Instant)>>> = Arc::new(Mutex::new(None));
    let killer = tokio::spawn(kill_and_restart(
        first,
        Restart {
            url: db.url.clone(),
            data_dir: db.dir.path().to_owned(),
            address: listen(ports[0]),
            env: env.clone(),
        },
        answered.clone(),
        total / 2,
        restarted.clone(),
    ));

    let started = Instant::now();
    let results: Vec<(Answered, usize)> = futures::stream::iter(jobs.into_iter().enumerate())
        .map(|(k, job)| {
            let (fixture, instances, answered) =
                (fixture.clone(), instances.clone(), answered.clone());
            async move {
                let result = fixture.send(&instances, job, k % 2).await;
                answered.fetch_add(1, Ordering::SeqCst);
                result
            }
        })
        .buffer_unordered(size.in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    killer.await.unwrap();
    let (restarted, restart_at) = restarted.lock().await.take().unwrap();

    let (actions, detections) = common::settled(&fixture.store, limit_of(size), 0).await;
    let settled_after_restart = restart_at.elapsed();
    let report = check(&fixture, &results, &actions, &detections).await;
    drop((restarted, second));
    LoadReport {
        requests: total,
        elapsed,
        retried: results.iter().map(|(_, retries)| retries).sum(),
        settled_after_restart,
        ..report
    }
}

/// API jobs and webhooks interleaved.
fn jobs(size: LoadSize) -> Vec<Job> {
    (0..size.actions.max(size.webhooks))
        .flat_map(|k| {
            let api = (k < size.actions).then_some(Job::Api(k));
            let hook = (k < size.webhooks).then_some(Job::Webhook(k));
            [api, hook].into_iter().flatten()
        })
        .collect()
}

/// How to start the killed instance again: same database, folder, address (so same name).
struct Restart {
    url: String,
    data_dir: std::path::PathBuf,
    address: String,
    env: Vec<(String, String)>,
}

/// Kills `server` with SIGKILL once `answered` reaches `halfway`, starts it again, and leaves
/// the new process (and when it started) in `restarted`.
async fn kill_and_restart(
    server: Server,
    again: Restart,
    answered: Arc<AtomicUsize>,
    halfway: usize,
    restarted: Arc<Mutex<Option<(Server, Instant)>>>,
) {
    while answered.load(Ordering::SeqCst) < halfway {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let server = tokio::task::spawn_blocking(move || {
        Server::start_at(&again.url, &again.data_dir, &again.address, &again.env)
    })
    .await
    .unwrap();
    *restarted.lock().await = Some((server, Instant::now()));
}

/// Every invariant the run must keep; returns the counts.
async fn check(
    fixture: &Fixture,
    results: &[(Answered, usize)],
    actions: &[ActionRecord],
    detections: &[DetectionRecord],
) -> LoadReport {
    check_one_action_each(fixture.size, results, actions, detections);
    for action in actions {
        assert_eq!(
            action.state,
            ActionState::Succeeded,
            "{}: {:?}",
            action.id,
            action.detail
        );
    }
    check_outcome_entries(fixture, actions).await;
    check_entra(fixture, actions);
    LoadReport {
        requests: 0,
        elapsed: Duration::ZERO,
        retried: 0,
        actions_settled: actions.len(),
        redriven: actions.iter().filter(|a| redriven(a)).count(),
        duplicate_patches: duplicate_patches(fixture, actions),
        settled_after_restart: Duration::ZERO,
    }
}

fn redriven(action: &ActionRecord) -> bool {
    action
        .detail
        .as_deref()
        .is_some_and(|d| d.starts_with("completed after an interruption"))
}

/// Every API request was answered with its own action, every detection stored once (even
/// customers' disabled automatically), and no action exists that neither names, nor two for
/// one account.
fn check_one_action_each(
    size: LoadSize,
    results: &[(Answered, usize)],
    actions: &[ActionRecord],
    detections: &[DetectionRecord],
) {
    let answered: std::collections::HashSet<Uuid> = results
        .iter()
        .filter_map(|(a, _)| match a {
            Answered::Action(id) => Some(*id),
            Answered::Detection(_) => None,
        })
        .collect();
    assert_eq!(answered.len(), size.actions, "one action per API request");
    assert_eq!(
        detections.len(),
        size.webhooks,
        "each detection stored once"
    );
    let from_detections: std::collections::HashSet<Uuid> =
        detections.iter().filter_map(|d| d.action_id).collect();
    let stray: Vec<_> = actions
        .iter()
        .filter(|a| !answered.contains(&a.id) && !from_detections.contains(&a.id))
        .collect();
    assert!(
        stray.is_empty(),
        "actions no request or detection names: {stray:#?}"
    );
    let mut by_account: HashMap<(String, String), Vec<&ActionRecord>> = HashMap::new();
    for action in actions {
        by_account
            .entry((action.customer.to_string(), action.account.to_lowercase()))
            .or_default()
            .push(action);
    }
    let twice: Vec<_> = by_account.values().filter(|v| v.len() > 1).collect();
    assert!(twice.is_empty(), "one action per account: {twice:#?}");
    let auto = detections
        .iter()
        .filter(|d| d.state == DetectionState::AutoRemediated)
        .count();
    let even = (0..size.webhooks)
        .filter(|j| (j % size.customers).is_multiple_of(2))
        .count();
    assert_eq!(auto, even, "automatic disables");
    assert_eq!(
        actions.len(),
        size.actions + even,
        "every action recorded once"
    );
}

/// Each action has exactly one outcome entry, and every chain verifies.
async fn check_outcome_entries(fixture: &Fixture, actions: &[ActionRecord]) {
    let mut outcomes: HashMap<Uuid, usize> = HashMap::new();
    for t in 0..fixture.size.customers {
        let chain = format!("load{t}");
        for event in common::events(&fixture.store, &chain).await {
            if let AuditEvent::ActionOutcome { action_id, .. } = event {
                *outcomes.entry(action_id).or_default() += 1;
            }
        }
        common::verify_chain(&fixture.store, &chain).await;
    }
    common::verify_chain(&fixture.store, "system").await;
    assert_eq!(outcomes.len(), actions.len(), "an outcome entry per action");
    assert!(
        outcomes.values().all(|n| *n == 1),
        "exactly one outcome per action"
    );
}

/// Each account is as its action asked; no other account changed.
fn check_entra(fixture: &Fixture, actions: &[ActionRecord]) {
    let size = fixture.size;
    for t in 0..size.customers {
        for n in 0..size.actions.div_ceil(size.customers) {
            if n * size.customers + t >= size.actions {
                continue;
            }
            let (id, upn, enabled) = api_user(t, n);
            let now = fixture.fake.user(tenant(t), &id.to_string()).unwrap();
            assert_eq!(now.account_enabled, !enabled, "{upn} as asked");
        }
        for n in 0..size.webhooks.div_ceil(size.customers) {
            let (id, upn) = webhook_user(t, n);
            let asked = n * size.customers + t < size.webhooks && t.is_multiple_of(2);
            let now = fixture.fake.user(tenant(t), &id.to_string()).unwrap();
            assert_eq!(now.account_enabled, !asked, "{upn}");
        }
    }
    for action in actions {
        let desired = action.operation == Operation::Enable;
        let after = action.after.as_ref().and_then(|s| s.account_enabled);
        assert_eq!(after, Some(desired), "{}: the outcome read back", action.id);
    }
}

/// PATCHes to an account beyond one plus its re-drives.
fn duplicate_patches(fixture: &Fixture, actions: &[ActionRecord]) -> usize {
    let mut patches: HashMap<String, usize> = HashMap::new();
    for call in fixture.fake.calls() {
        // Every PATCH received counts, answered or not: one cut off by the kill may have applied.
        if call.endpoint == Endpoint::PatchUser {
            let id = call.path.rsplit('/').next().unwrap_or_default().to_owned();
            *patches.entry(id).or_default() += 1;
        }
    }
    let mut allowed: HashMap<String, usize> = HashMap::new();
    for action in actions {
        let id = action.target_id.clone().unwrap_or_default();
        *allowed.entry(id).or_default() += 1 + usize::from(redriven(action));
    }
    patches
        .iter()
        .map(|(id, n)| n.saturating_sub(allowed.get(id).copied().unwrap_or(0)))
        .sum()
}

/// What [`recovery`] measured.
#[derive(Debug)]
pub struct Recovery {
    /// Actions in flight when the instance was killed.
    pub interrupted: usize,
    /// From the kill (or, restarted, from the restart) until the new process listened.
    pub listening_after: Option<Duration>,
    /// From the restart (or, with a second instance, from the kill) until every action had its
    /// outcome.
    pub settled_after: Duration,
    pub redriven: usize,
    pub duplicate_patches: usize,
}

/// Starts `actions` disables at once on one instance with Graph answering after `latency`,
/// kills it with SIGKILL once every one is recorded, then either restarts it on the same
/// address (`restart`) or leaves a second, already running instance to take over; measures
/// how long until every action is settled, and checks each ended once and succeeded.
pub async fn recovery(db: &TestDb, actions: usize, latency: Duration, restart: bool) -> Recovery {
    let size = LoadSize {
        customers: 20,
        actions,
        webhooks: 0,
        in_flight: actions,
    };
    let fixture = Arc::new(fixture(db, size).await);
    let env = {
        let mut env = env_of(entra::settings(&fixture.fake.base_url()));
        env.extend(env_of([("server.max_connections_per_client", "4096")]));
        env
    };
    let address = format!("127.0.0.1:{}", free_port());
    let first = Server::start_on(db, &address, &env);
    let other = (!restart).then(|| Server::start(db, &env));
    let instances = Arc::new(Instances {
        bases: [first.base.clone(), first.base.clone()],
        client: reqwest::Client::new(),
    });
    fixture.fake.set_latency(latency);
    for i in 0..actions {
        let (fixture, instances) = (fixture.clone(), instances.clone());
        tokio::spawn(async move {
            let _ = fixture.api_request(&instances, i, 0).await.send().await;
        });
    }
    while count_actions(&fixture.store, size).await < actions {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    let from = Instant::now();
    let (restarted, listening_after) = if restart {
        let server = Server::start_on(db, &address, &env);
        (Some(server), Some(from.elapsed()))
    } else {
        (None, None)
    };
    let (settled, _) = common::settled(&fixture.store, limit_of(size), actions).await;
    let settled_after = from.elapsed();
    let open = settled
        .iter()
        .filter(|a| a.state != ActionState::Succeeded)
        .count();
    assert_eq!(open, 0, "every interrupted action succeeded");
    check_outcome_entries(&fixture, &settled).await;
    drop((restarted, other));
    Recovery {
        interrupted: actions,
        listening_after,
        settled_after,
        redriven: settled.iter().filter(|a| redriven(a)).count(),
        duplicate_patches: duplicate_patches(&fixture, &settled),
    }
}

async fn count_actions(store: &Arc<dyn Store>, size: LoadSize) -> usize {
    store
        .actions(&ActionFilter {
            limit: limit_of(size),
            ..ActionFilter::default()
        })
        .await
        .unwrap()
        .len()
}
