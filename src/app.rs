//! Building and running the service: open the store, load the audit key, bind, serve, stop
//! gracefully. Tests build the same `Application` on port 0 and read back the real port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use crate::audit::AuditKey;
use crate::audit::append::Sealer;
use crate::audit::signing::KeyOrigin;
use crate::auth::gate::{Authenticator, MfaPolicy};
use crate::config::Settings;
use crate::customers::onboarding::{Onboarding, OnboardingSettings};
use crate::domain::ChainId;
use crate::domain::instance::InstanceRun;
use crate::error::{Error, Result};
use crate::falcon::intake::{Intake, IntakeSettings};
use crate::graph::{Certificate, ClientCredential, GraphClient, GraphSettings};
use crate::http::{self, AppState};
use crate::notify::route::Router;
use crate::notify::worker::Notifier;
use crate::remediation::{RemediationSettings, Remediator};
use crate::secrets::SecretCipher;
use crate::store::{self, Store, StoreOptions};
use crate::time::{Clock, SystemClock, Timestamp};

/// The parts every command that writes needs: a migrated store and the audit key; and, when the
/// remediation app is configured, the engine that talks to Graph.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub audit_key: Arc<AuditKey>,
    pub auth: Arc<Authenticator>,
    pub remediator: Option<Arc<Remediator>>,
    pub onboarding: Arc<Onboarding>,
    pub intake: Arc<Intake>,
    /// Seals secrets at rest and state that leaves the server (the sign-in cookie).
    pub cipher: Arc<SecretCipher>,
    /// Where the services read the time (the system clock unless a test moves its own).
    pub clock: Arc<dyn Clock>,
}

impl Services {
    /// Loads (or on first start creates) the signing key, opens and migrates the database, and
    /// registers the key's public half in the system chain.
    pub async fn open(settings: &Settings) -> Result<Services> {
        Services::open_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`open`](Self::open), with the services reading the time from `clock`.
    pub async fn open_with_clock(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Services> {
        crate::files::secure_data_dir(&settings.data_dir)?;
        let audit_key = load_audit_key(settings)?;
        let store = open_store(settings, &audit_key).await?;
        let cipher = load_cipher(settings)?;
        let auth = Arc::new(
            Authenticator::new(
                store.clone(),
                cipher.clone(),
                MfaPolicy {
                    max_failures: settings.mfa.max_failures,
                    lockout: settings.mfa.lockout,
                },
            )
            .with_clock(clock.clone()),
        );
        let graph = graph_client(settings)?;
        let remediator = graph
            .clone()
            .map(|graph| remediator(settings, &store, graph, &clock));
        let intake = intake(settings, &store, &cipher, remediator.clone());
        let onboarding = onboarding(settings, &store, &cipher, graph, &clock);
        Ok(Services {
            store,
            audit_key,
            auth,
            remediator,
            onboarding,
            intake,
            cipher,
            clock,
        })
    }
}

fn load_audit_key(settings: &Settings) -> Result<Arc<AuditKey>> {
    let path = &settings.audit.signing_key_file;
    let (key, origin) = AuditKey::load_or_generate(path)?;
    if origin == KeyOrigin::Generated {
        // Losing this key makes the history unverifiable from here on, so say so loudly.
        tracing::warn!(
            path = %path.display(),
            key_id = %key.key_id(),
            "generated a new audit signing key; back it up, and publish `killswitch audit public-key` to customers"
        );
    }
    Ok(Arc::new(key))
}

/// Opens and migrates the database, with every audit write sealed by `audit_key`.
async fn open_store(settings: &Settings, audit_key: &Arc<AuditKey>) -> Result<Arc<dyn Store>> {
    let sealer = Sealer::new(audit_key.clone(), settings.audit.checkpoint_every);
    let url = settings.database.url.expose_secret();
    let store = store::open(
        url,
        StoreOptions {
            max_connections: settings.database.max_connections,
            acquire_timeout: settings.database.acquire_timeout,
            create_if_missing: true,
            migrate: true,
            sealer: Some(Arc::new(sealer)),
        },
    )
    .await?;
    store.register_signing_key(&audit_key.public_key()).await?;
    tracing::info!(database = %store::redact_url(url), backend = store.backend().name(), "database ready");
    Ok(store)
}

/// The cipher for secrets at rest: the configured key (or one generated into the data folder),
/// plus the keys it replaced, which still open what they sealed.
fn load_cipher(settings: &Settings) -> Result<Arc<SecretCipher>> {
    let configured = settings.mfa.encryption_key.as_ref().map(|k| k.expose());
    let previous: Vec<&[u8]> = settings
        .mfa
        .previous_encryption_keys
        .iter()
        .map(|k| k.expose())
        .collect();
    let (cipher, origin) =
        SecretCipher::load_or_generate(configured, &previous, &settings.data_dir)?;
    if origin == KeyOrigin::Generated {
        tracing::warn!(
            path = %settings.data_dir.join("mfa-encryption.key").display(),
            "generated a new key for secrets at rest; back it up with the database, or set mfa.encryption_key"
        );
    }
    Ok(Arc::new(cipher))
}

fn remediator(
    settings: &Settings,
    store: &Arc<dyn Store>,
    graph: Arc<GraphClient>,
    clock: &Arc<dyn Clock>,
) -> Arc<Remediator> {
    let remediation = RemediationSettings {
        deadline: settings.graph.deadline,
        give_up_after: settings.remediation.reconcile_give_up,
        redrive_within: settings.remediation.redrive_within,
        liveness: settings.instance.liveness,
        ..RemediationSettings::default()
    };
    Arc::new(Remediator::new(store.clone(), graph, remediation).with_clock(clock.clone()))
}

fn intake(
    settings: &Settings,
    store: &Arc<dyn Store>,
    cipher: &Arc<SecretCipher>,
    remediator: Option<Arc<Remediator>>,
) -> Arc<Intake> {
    Arc::new(Intake::new(
        store.clone(),
        cipher.clone(),
        remediator,
        IntakeSettings {
            signature_header: settings.falcon.signature_header.to_ascii_lowercase(),
            tolerance: settings.falcon.timestamp_tolerance,
        },
    ))
}

fn onboarding(
    settings: &Settings,
    store: &Arc<dyn Store>,
    cipher: &Arc<SecretCipher>,
    graph: Option<Arc<GraphClient>>,
    clock: &Arc<dyn Clock>,
) -> Arc<Onboarding> {
    let onboarding = Onboarding::new(
        store.clone(),
        cipher.clone(),
        graph,
        OnboardingSettings {
            authority_url: settings.entra.authority_url.clone(),
            client_id: settings.entra.client_id.clone(),
            public_url: settings.server.public_url.clone(),
            consent_link_ttl: settings.onboarding.consent_link_ttl,
            webhook_grace: settings.falcon.secret_grace,
            signature_header: settings.falcon.signature_header.clone(),
            check_deadline: settings.graph.deadline,
        },
    );
    Arc::new(onboarding.with_clock(clock.clone()))
}

/// The Graph client of the remediation app, when its client id and a credential are configured.
pub fn graph_client(settings: &Settings) -> Result<Option<Arc<GraphClient>>> {
    let entra = &settings.entra;
    let Some(client_id) = entra.client_id.clone() else {
        return Ok(None);
    };
    let credential = match (&entra.certificate_file, &entra.client_secret) {
        (Some(path), secret) => {
            if secret.is_some() {
                tracing::warn!(
                    "both entra.certificate_file and entra.client_secret are set; using the certificate"
                );
            }
            ClientCredential::Certificate(Certificate::load(path)?)
        }
        (None, Some(secret)) => ClientCredential::Secret(secret.clone()),
        (None, None) => return Ok(None),
    };
    Ok(Some(Arc::new(GraphClient::new(GraphSettings {
        authority_url: entra.authority_url.clone(),
        graph_url: entra.graph_url.clone(),
        client_id,
        credential,
        request_timeout: settings.graph.request_timeout,
        max_in_flight_per_tenant: settings.graph.max_in_flight_per_tenant,
        max_in_flight: settings.graph.max_in_flight,
    })?)))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application> {
        let services = Services::open(&settings).await?;
        Application::with_services(settings, services).await
    }

    pub async fn with_services(settings: Settings, services: Services) -> Result<Application> {
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", settings.server.listen), e))?;
        let failures = crate::http::limiter::FailureLimiter::new(
            settings.auth.max_failures_per_client,
            settings.auth.failure_window,
        );
        let callbacks = crate::http::limiter::FailureLimiter::new(
            settings.onboarding.callbacks_per_minute,
            Duration::from_secs(60),
        );
        // Single sign-on, when configured; an unreachable provider is retried on first use.
        let oidc = if settings.oidc.enabled() {
            Some(Arc::new(
                crate::auth::oidc::OidcProvider::discover(
                    &settings.oidc,
                    &settings.server.public_url,
                    settings.oidc.session_ttl,
                )
                .await?,
            ))
        } else {
            None
        };
        let state = AppState {
            settings: Arc::new(settings),
            store: services.store,
            audit_key: services.audit_key,
            auth: services.auth,
            oidc,
            failures: Arc::new(failures),
            callbacks: Arc::new(callbacks),
            remediator: services.remediator,
            onboarding: services.onboarding,
            intake: services.intake,
            cipher: services.cipher,
            metrics: crate::telemetry::metrics(),
            clock: services.clock,
        };
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for the grace
    /// period, and signs a final checkpoint over every chain that advanced.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let state = self.state.clone();
        let local = self.local_addr()?;
        let run = register_run(&state, local).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let timers = spawn_timers(&state, &stop_rx);
        // The heartbeat outlives the server: it stops only once this run's actions are done,
        // so no other instance takes over an action this one is still executing.
        let (beat_stop_tx, beat_stop_rx) = watch::channel(false);
        let fenced = Arc::new(tokio::sync::Notify::new());
        let heartbeat = tokio::spawn(heartbeat_timer(
            state.store.clone(),
            run.run,
            state.settings.instance.liveness.heartbeat,
            beat_stop_rx,
            fenced.clone(),
        ));
        let server = spawn_server(self.listener, &state, stop_rx);
        tracing::info!(listen = %local, "killswitch is serving");
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = fenced.notified() => {}
            }
        };
        let served = stop_after(
            server,
            shutdown,
            stop_tx,
            state.settings.server.shutdown_grace,
        )
        .await;
        for task in timers {
            let _ = task.await;
        }
        if let Some(remediator) = &state.remediator {
            remediator.drain(state.settings.graph.deadline).await;
        }
        let _ = beat_stop_tx.send(true);
        let _ = heartbeat.await;
        if let Err(e) = state.store.stop_run(run.run, Timestamp::now()).await {
            tracing::warn!(error = %e, "could not record this instance's stop; others take over after its heartbeat times out");
        }
        checkpoint_all(state.store.as_ref()).await;
        served.map_err(|e| Error::Internal(format!("server task failed: {e}")))
    }
}

/// The periodic checkpoints (unless turned off) and, with remediation configured, the
/// reconciler; both end when `stop` changes.
fn spawn_timers(state: &AppState, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let settings = &state.settings;
    let checkpoints = settings
        .audit
        .checkpoint_interval
        .map(|every| tokio::spawn(checkpoint_timer(state.store.clone(), every, stop.clone())));
    let reconciler = state.remediator.as_ref().map(|remediator| {
        tokio::spawn(reconcile_timer(
            remediator.clone(),
            state.intake.clone(),
            settings.remediation.reconcile_interval,
            stop.clone(),
        ))
    });
    let notifier = notifier(state).map(|notifier| tokio::spawn(notifier.run(stop.clone())));
    [checkpoints, reconciler, notifier]
        .into_iter()
        .flatten()
        .collect()
}

/// The notification worker. Without a working channel it still runs: notices are routed (to
/// no one) so they do not pile up, and messages left from an earlier configuration are retried.
fn notifier(state: &AppState) -> Option<Arc<Notifier>> {
    let router = Router {
        store: state.store.clone(),
        key: state.audit_key.clone(),
        cipher: state.cipher.clone(),
        settings: Arc::new(state.settings.notify.clone()),
        public_url: state.settings.server.public_url.clone(),
        clock: state.clock.clone(),
    };
    match Notifier::new(router) {
        Ok(notifier) => Some(Arc::new(notifier)),
        Err(e) => {
            tracing::error!(error = %e, "notifications cannot start; nothing will be sent");
            None
        }
    }
}

/// The HTTP server, accepting connections until `stop` changes.
fn spawn_server(
    listener: TcpListener,
    state: &AppState,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let server = &state.settings.server;
    let limits = http::serve::ConnectionLimits {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections,
        max_connections_per_client: server.max_connections_per_client,
        trusted: server.trusted_proxies.clone(),
    };
    tokio::spawn(http::serve::serve(
        listener,
        http::router(state.clone()),
        limits,
        async move {
            let _ = stop.changed().await;
        },
    ))
}

/// Waits for `shutdown` (or for the server to end on its own), tells everything to stop, and
/// gives in-flight requests `grace` to finish before closing what remains.
async fn stop_after(
    mut server: JoinHandle<()>,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
    grace: Duration,
) -> std::result::Result<(), JoinError> {
    let finished_early = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown => None,
    };
    let _ = stop.send(true);
    if let Some(result) = finished_early {
        return result;
    }
    tracing::info!(grace = ?grace, "shutting down");
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            server.abort();
            Ok(())
        }
    }
}

/// Signs a checkpoint for every chain whose head moved since its last checkpoint, so an export
/// taken at any time ends close to a signed point.
async fn checkpoint_timer(store: Arc<dyn Store>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => checkpoint_all(store.as_ref()).await,
            _ = stop.changed() => return,
        }
    }
}

/// Settles what a crash left unfinished (actions without an outcome, detections stored but not
/// decided): once at start, then periodically (another instance may die while this one runs).
async fn reconcile_timer(
    remediator: Arc<Remediator>,
    intake: Arc<Intake>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (actions, detections) =
                    tokio::join!(remediator.reconcile(), intake.resume_undecided());
                if let Err(e) = actions {
                    tracing::error!(error = %e, "reconciliation failed; will try again");
                }
                if let Err(e) = detections {
                    tracing::error!(error = %e, "deciding interrupted detections failed; will try again");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Registers this start of the instance (a newer run under its name makes the older one gone
/// at once) and names it the owner of what the engine admits from now on.
async fn register_run(state: &AppState, local: SocketAddr) -> Result<InstanceRun> {
    let instance = state
        .settings
        .instance
        .id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", host_name(), local.port()));
    let run = InstanceRun {
        instance,
        run: uuid::Uuid::new_v4(),
        started_at: Timestamp::now(),
    };
    state.store.register_run(&run).await?;
    // A week without a heartbeat: a name that will not come back.
    let week_ago =
        Timestamp::from_datetime(run.started_at.as_datetime() - chrono::Duration::days(7));
    if let Err(e) = state.store.forget_instances(week_ago).await {
        tracing::warn!(error = %e, "could not forget long-gone instances");
    }
    if let Some(remediator) = &state.remediator {
        remediator.set_owner(run.run);
    }
    tracing::info!(instance = %run.instance, run = %run.run, "instance registered");
    Ok(run)
}

/// This host's name, for the default instance name: unique per host together with the port,
/// which no other live process on the host can hold.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Records every `every` that this run is alive, so others leave its work alone. When another
/// process registered under this instance's name, this run is no longer the instance: it says
/// so and `fenced` asks the service to stop (the other process takes its work over).
async fn heartbeat_timer(
    store: Arc<dyn Store>,
    run: uuid::Uuid,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    fenced: Arc<tokio::sync::Notify>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => match store.heartbeat(run, Timestamp::now()).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(%run, "another process registered under this instance's name (instance.id); stopping: give each instance its own name");
                    fenced.notify_one();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not record this instance's heartbeat"),
            },
            _ = stop.changed() => return,
        }
    }
}

pub async fn checkpoint_all(store: &dyn Store) {
    let chains = match store.chain_names().await {
        Ok(chains) => chains,
        Err(e) => {
            tracing::error!(error = %e, "cannot list audit chains for checkpointing");
            return;
        }
    };
    for name in chains {
        let Ok(chain) = name.parse::<ChainId>() else {
            tracing::error!(chain = %name, "a stored audit chain has an invalid name; run `killswitch audit check`");
            continue;
        };
        match store.checkpoint(&chain).await {
            Ok(Some(cp)) => tracing::debug!(chain = %name, seq = cp.seq, "checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::error!(chain = %name, error = %e, "cannot sign checkpoint"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
