//! Building and running the service: open the store, load the audit key, bind, serve, stop
//! gracefully. Tests build the same `Application` on port 0 and read back the real port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::AuditKey;
use crate::audit::append::Sealer;
use crate::audit::signing::KeyOrigin;
use crate::auth::gate::{Authenticator, MfaPolicy};
use crate::config::Settings;
use crate::customers::onboarding::{Onboarding, OnboardingSettings};
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::falcon::intake::{Intake, IntakeSettings};
use crate::graph::{Certificate, ClientCredential, GraphClient, GraphSettings};
use crate::http::{self, AppState};
use crate::remediation::{RemediationSettings, Remediator};
use crate::secrets::SecretCipher;
use crate::store::{self, Store, StoreOptions};

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
}

impl Services {
    /// Loads (or on first start creates) the signing key, opens and migrates the database, and
    /// registers the key's public half in the system chain.
    pub async fn open(settings: &Settings) -> Result<Services> {
        crate::files::secure_data_dir(&settings.data_dir)?;
        let (key, origin) = AuditKey::load_or_generate(&settings.audit.signing_key_file)?;
        if origin == KeyOrigin::Generated {
            tracing::warn!(
                path = %settings.audit.signing_key_file.display(),
                key_id = %key.key_id(),
                "generated a new audit signing key; back it up, and publish `killswitch audit public-key` to customers"
            );
        }
        let audit_key = Arc::new(key);
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
        let cipher = Arc::new(cipher);
        let auth = Arc::new(Authenticator::new(
            store.clone(),
            cipher.clone(),
            MfaPolicy {
                max_failures: settings.mfa.max_failures,
                lockout: settings.mfa.lockout,
            },
        ));
        let graph = graph_client(settings)?;
        let remediator = graph.clone().map(|graph| {
            let remediation = RemediationSettings {
                deadline: settings.graph.deadline,
                give_up_after: settings.remediation.reconcile_give_up,
                ..RemediationSettings::default()
            };
            Arc::new(Remediator::new(store.clone(), graph, remediation))
        });
        let intake = Arc::new(Intake::new(
            store.clone(),
            cipher.clone(),
            remediator.clone(),
            IntakeSettings {
                signature_header: settings.falcon.signature_header.to_ascii_lowercase(),
                tolerance: settings.falcon.timestamp_tolerance,
            },
        ));
        let onboarding = Arc::new(Onboarding::new(
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
        ));
        Ok(Services {
            store,
            audit_key,
            auth,
            remediator,
            onboarding,
            intake,
            cipher,
        })
    }
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
        let settings = state.settings.clone();
        let local = self.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let checkpoints = settings.audit.checkpoint_interval.map(|every| {
            tokio::spawn(checkpoint_timer(
                state.store.clone(),
                every,
                stop_rx.clone(),
            ))
        });

        let reconciler = match (&state.remediator, settings.remediation.reconcile_interval) {
            (Some(remediator), every) => Some(tokio::spawn(reconcile_timer(
                remediator.clone(),
                every,
                stop_rx.clone(),
            ))),
            _ => None,
        };
        let mut server_stop = stop_rx;
        let limits = http::serve::ConnectionLimits {
            header_read_timeout: settings.server.header_read_timeout,
            max_connections: settings.server.max_connections,
            max_connections_per_client: settings.server.max_connections_per_client,
            trusted: settings.server.trusted_proxies.clone(),
        };
        let server = http::serve::serve(
            self.listener,
            http::router(state.clone()),
            limits,
            async move {
                let _ = server_stop.changed().await;
            },
        );
        let mut server = tokio::spawn(server);

        tracing::info!(listen = %local, "killswitch is serving");
        let finished_early = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        let _ = stop_tx.send(true);
        let served = match finished_early {
            Some(result) => result,
            None => {
                tracing::info!(grace = ?settings.server.shutdown_grace, "shutting down");
                match tokio::time::timeout(settings.server.shutdown_grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("grace period over; closing the remaining connections");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        for task in [checkpoints, reconciler].into_iter().flatten() {
            let _ = task.await;
        }
        checkpoint_all(state.store.as_ref()).await;
        served.map_err(|e| Error::Internal(format!("server task failed: {e}")))
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

/// Settles actions a crash left without an outcome: once at start, then periodically (another
/// instance may die while this one runs).
async fn reconcile_timer(
    remediator: Arc<Remediator>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = remediator.reconcile().await {
                    tracing::error!(error = %e, "reconciliation failed; will try again");
                }
            }
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
