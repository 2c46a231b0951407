//! The demo directory the binary serves, and `GET /_fake/users`, a peek at the directory
//! state (not an Entra API) so a demo can show an account flipping to disabled.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use crate::state::{DEFAULT_ROLES, Shared};
use crate::{AppCredential, DemoSeed, FakeEntra, Tenant, User};

pub(crate) const DEMO_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000c1d1";
pub(crate) const DEMO_CLIENT_SECRET: &str = "demo-secret-not-for-production";
pub(crate) const DEMO_TENANT_ID: Uuid = Uuid::from_u128(0x11111111_1111_1111_1111_111111111111);
pub(crate) const DEMO_DOMAIN: &str = "contoso.onmicrosoft.com";

pub(crate) fn seed(fake: &FakeEntra) -> DemoSeed {
    fake.register_app(
        DEMO_CLIENT_ID,
        AppCredential::Secret(DEMO_CLIENT_SECRET.to_owned()),
    );
    fake.add_tenant(Tenant {
        id: DEMO_TENANT_ID,
        domain: DEMO_DOMAIN.to_owned(),
        consented: true,
        granted_roles: DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect(),
    });
    // Fixed ids so a demo script can use them across restarts.
    let user = |n: u128, local: &str, name: &str| User {
        id: Uuid::from_u128(0xaaaaaaaa_0000_4000_8000_000000000000 + n),
        user_principal_name: format!("{local}@{DEMO_DOMAIN}"),
        display_name: name.to_owned(),
        account_enabled: true,
        on_premises_sync_enabled: None,
        on_premises_security_identifier: None,
        privileged: false,
    };
    fake.add_user(DEMO_TENANT_ID, user(1, "alice", "Alice Example"));
    fake.add_user(
        DEMO_TENANT_ID,
        User {
            on_premises_sync_enabled: Some(true),
            on_premises_security_identifier: Some(
                "S-1-5-21-1004336348-1177238915-682003330-1105".to_owned(),
            ),
            ..user(2, "bob", "Bob Example")
        },
    );
    fake.add_user(
        DEMO_TENANT_ID,
        User {
            privileged: true,
            ..user(3, "carol.admin", "Carol Admin")
        },
    );
    fake.add_user(DEMO_TENANT_ID, user(4, "breakglass", "Break Glass"));
    DemoSeed {
        client_id: DEMO_CLIENT_ID.to_owned(),
        client_secret: DEMO_CLIENT_SECRET.to_owned(),
        tenant_id: DEMO_TENANT_ID,
        domain: DEMO_DOMAIN.to_owned(),
    }
}

pub(crate) fn users_response(shared: &Shared) -> Response {
    let body = {
        let st = shared.state.lock();
        let mut ids: Vec<Uuid> = st.tenants.keys().copied().collect();
        ids.extend(st.users.keys().filter(|k| !st.tenants.contains_key(k)));
        let tenants: Vec<_> = ids
            .iter()
            .map(|id| {
                let t = st.tenants.get(id);
                let users: Vec<_> = st
                    .users
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|rec| {
                        let mut v = serde_json::to_value(&rec.user).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("revokedSessions".into(), json!(rec.revocations));
                        }
                        v
                    })
                    .collect();
                json!({
                    "id": id,
                    "domain": t.map(|t| t.domain.clone()),
                    "consented": t.is_some_and(|t| t.consented),
                    "grantedRoles": t.map(|t| t.granted_roles.clone()).unwrap_or_default(),
                    "users": users,
                })
            })
            .collect();
        json!({ "tenants": tenants })
    };
    let mut resp = Response::new(Body::from(
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    ));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
