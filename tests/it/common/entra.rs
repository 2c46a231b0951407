//! A remediation engine wired to a fake Entra on loopback, with one customer tenant of users
//! covering the cases Graph distinguishes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use fake_entra::{AppCredential, FakeEntra, Tenant, User};
use killswitch::audit::event::{AuditEvent, Operation};
use killswitch::audit::verify::ChainSummary;
use killswitch::audit::{Actor, AuditKey};
use killswitch::customers::{Customer, Policy};
use killswitch::domain::{CustomerSlug, TenantId};
use killswitch::graph::{Certificate, ClientCredential, GraphClient, GraphSettings};
use killswitch::remediation::{ActionRequest, RemediationSettings, Remediator};
use killswitch::store::Store;
use killswitch::time::ManualClock;
use uuid::Uuid;

use super::{TestApp, TestDb};

pub const CLIENT_ID: &str = "5d1f2c6e-8a47-4b36-9a0e-6c1f0b2d7e41";
pub const CLIENT_SECRET: &str = "test-secret-for-the-fake-only";
pub const CONTOSO: Uuid = Uuid::from_u128(0x11111111_2222_3333_4444_555555555555);
/// The second customer's tenant, for tests that an analyst or a secret of one stays there.
pub const FABRIKAM: Uuid = Uuid::from_u128(0xFAB);
pub const ALICE: Uuid = Uuid::from_u128(1);
pub const BOB: Uuid = Uuid::from_u128(2);
pub const CAROL: Uuid = Uuid::from_u128(3);
pub const BREAKGLASS: Uuid = Uuid::from_u128(4);
pub const DAVE: Uuid = Uuid::from_u128(5);

pub fn user(id: Uuid, upn: &str, enabled: bool) -> User {
    User {
        id,
        user_principal_name: upn.to_owned(),
        display_name: upn.split('@').next().unwrap().to_owned(),
        account_enabled: enabled,
        on_premises_sync_enabled: None,
        on_premises_security_identifier: None,
        privileged: false,
    }
}

/// A fake with the remediation app registered (secret and certificate) and `tenant` consented.
pub async fn fake_entra() -> FakeEntra {
    let fake = FakeEntra::start().await;
    fake.register_app(CLIENT_ID, AppCredential::Secret(CLIENT_SECRET.to_owned()));
    fake.register_app(
        CLIENT_ID,
        AppCredential::Certificate {
            cert_pem: fake_entra::TEST_CERT_PEM.to_owned(),
        },
    );
    add_tenant(&fake, CONTOSO, "contoso");
    fake
}

/// A consented tenant `{name}.onmicrosoft.com` with alice (enabled), bob (synced from AD), carol
/// (an administrator), breakglass (enabled) and dave (already disabled).
pub fn add_tenant(fake: &FakeEntra, id: Uuid, name: &str) {
    fake.add_tenant(Tenant {
        id,
        domain: format!("{name}.onmicrosoft.com"),
        consented: true,
        granted_roles: fake_entra::DEFAULT_ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
    });
    let domain = format!("{name}.onmicrosoft.com");
    fake.add_user(id, user(ALICE, &format!("alice@{domain}"), true));
    let mut bob = user(BOB, &format!("bob@{domain}"), true);
    bob.on_premises_sync_enabled = Some(true);
    bob.on_premises_security_identifier =
        Some("S-1-5-21-1004336348-1177238915-682003330-1105".to_owned());
    fake.add_user(id, bob);
    let mut carol = user(CAROL, &format!("carol.admin@{domain}"), true);
    carol.privileged = true;
    fake.add_user(id, carol);
    fake.add_user(id, user(BREAKGLASS, &format!("breakglass@{domain}"), true));
    fake.add_user(id, user(DAVE, &format!("dave@{domain}"), false));
}

/// An app whose remediation app is registered at `fake`; `overrides` come after (and so win
/// over) the four entra.* settings.
pub async fn spawn_app(fake: &FakeEntra, overrides: &[(&str, &str)]) -> TestApp {
    let base = fake.base_url();
    let mut settings: Vec<(&str, &str)> = settings(&base).to_vec();
    settings.extend_from_slice(overrides);
    TestApp::spawn_with(&settings).await
}

/// The four entra.* settings of an app whose remediation app is registered at the fake
/// serving `base`.
pub fn settings(base: &str) -> [(&'static str, &str); 4] {
    [
        ("entra.authority_url", base),
        ("entra.graph_url", base),
        ("entra.client_id", CLIENT_ID),
        ("entra.client_secret", CLIENT_SECRET),
    ]
}

/// The start of every HTTP test: the fake Entra with contoso's and fabrikam's tenants, the
/// service against it (with `overrides`), and both customers under `policy`.
pub struct TwoTenants {
    pub app: TestApp,
    pub fake: FakeEntra,
    pub contoso: Customer,
    pub fabrikam: Customer,
}

pub async fn two_tenants(overrides: &[(&str, &str)], policy: Policy) -> TwoTenants {
    let fake = fake_entra().await;
    add_tenant(&fake, FABRIKAM, "fabrikam");
    let app = spawn_app(&fake, overrides).await;
    let contoso = add_customer(&app.store, "contoso", CONTOSO, policy.clone()).await;
    let fabrikam = add_customer(&app.store, "fabrikam", FABRIKAM, policy).await;
    TwoTenants {
        app,
        fake,
        contoso,
        fabrikam,
    }
}

/// Customer `slug` ("{slug} Ltd", domain `{slug}.onmicrosoft.com`) on `tenant`.
pub fn customer(slug: &str, tenant: Uuid, policy: Policy) -> Customer {
    Customer {
        slug: slug.parse().unwrap(),
        name: format!("{slug} Ltd"),
        domain: format!("{slug}.onmicrosoft.com"),
        tenant_id: TenantId::new(tenant),
        policy,
        created_at: killswitch::time::Timestamp::now(),
        connection: None,
    }
}

/// Adds [`customer`] to `store` as the operator, and returns it.
pub async fn add_customer(
    store: &Arc<dyn Store>,
    slug: &str,
    tenant: Uuid,
    policy: Policy,
) -> Customer {
    let customer = customer(slug, tenant, policy);
    store
        .add_customer(&customer, &Actor::operator())
        .await
        .unwrap();
    customer
}

pub fn graph_client(fake: &FakeEntra, credential: ClientCredential) -> GraphClient {
    let base = url::Url::parse(&fake.base_url()).unwrap();
    GraphClient::new(GraphSettings {
        authority_url: base.clone(),
        graph_url: base,
        client_id: CLIENT_ID.to_owned(),
        credential,
        request_timeout: Duration::from_secs(5),
        max_in_flight_per_tenant: 8,
        max_in_flight: 256,
    })
    .unwrap()
}

pub fn secret() -> ClientCredential {
    ClientCredential::Secret(CLIENT_SECRET.to_owned().into())
}

pub fn certificate() -> ClientCredential {
    ClientCredential::Certificate(Certificate::from_pem(fake_entra::TEST_CERT_PEM).unwrap())
}

pub struct Rig {
    pub fake: FakeEntra,
    pub db: TestDb,
    pub store: Arc<dyn Store>,
    pub key: Arc<AuditKey>,
    pub remediator: Arc<Remediator>,
    pub settings: RemediationSettings,
    /// The engines' clock: tests move it instead of sleeping.
    pub clock: ManualClock,
}

impl Rig {
    /// A store on a fresh database, customer `contoso` on the fake's tenant, and an engine with
    /// `deadline` for Graph.
    pub async fn new(deadline: Duration) -> Rig {
        let fake = fake_entra().await;
        let db = TestDb::new().await;
        let (store, key) = db.store(1000).await;
        let settings = RemediationSettings {
            deadline,
            lease_margin: Duration::ZERO,
            ..RemediationSettings::default()
        };
        let clock = ManualClock::starting_now();
        let remediator = Arc::new(
            Remediator::new(
                store.clone(),
                Arc::new(graph_client(&fake, secret())),
                settings.clone(),
            )
            .with_clock(Arc::new(clock.clone())),
        );
        let rig = Rig {
            fake,
            db,
            store,
            key,
            remediator,
            settings,
            clock,
        };
        rig.add_customer("contoso", CONTOSO, Policy::default())
            .await;
        rig
    }

    /// A second engine on the same store and fake, as a restarted process would build it.
    pub fn restart(&self) -> Arc<Remediator> {
        self.restart_with(self.settings.clone())
    }

    /// [`restart`](Self::restart) with other settings.
    pub fn restart_with(&self, settings: RemediationSettings) -> Arc<Remediator> {
        Arc::new(
            Remediator::new(
                self.store.clone(),
                Arc::new(graph_client(&self.fake, secret())),
                settings,
            )
            .with_clock(Arc::new(self.clock.clone())),
        )
    }

    pub async fn add_customer(&self, slug: &str, tenant: Uuid, policy: Policy) {
        add_customer(&self.store, slug, tenant, policy).await;
    }

    pub async fn set_policy(&self, slug: &str, policy: Policy) {
        let customer = self
            .store
            .customer(&slug.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        self.store
            .update_policy(&customer, &policy, &Actor::operator())
            .await
            .unwrap();
    }

    /// Every audit entry of the customer's chain that concerns `action`.
    pub async fn entries_for(&self, customer: &str, action: &str) -> Vec<AuditEvent> {
        super::events(&self.store, customer)
            .await
            .into_iter()
            .filter(|event| match event {
                AuditEvent::ActionRequested { action_id, .. }
                | AuditEvent::ActionOutcome { action_id, .. } => action_id.to_string() == action,
                _ => false,
            })
            .collect()
    }

    pub async fn verify(&self, customer: &str) -> ChainSummary {
        super::verify_chain(&self.store, customer).await
    }
}

pub fn request(customer: &str, operation: Operation, account: &str) -> ActionRequest {
    ActionRequest {
        customer: customer.parse::<CustomerSlug>().unwrap(),
        operation,
        account: account.parse().unwrap(),
        reason: "Falcon ITP: impossible travel followed by MFA fatigue"
            .parse()
            .unwrap(),
        ticket: Some("SOC-4711".parse().unwrap()),
        revoke_sessions: None,
        idempotency_key: None,
        actor: Actor::Analyst {
            id: Uuid::from_u128(42),
            email: "night.shift@provider.example".to_owned(),
            auth: killswitch::audit::event::AuthMethod::ApiToken,
            client_ip: None,
        },
        mfa: None,
        context: None,
    }
}
