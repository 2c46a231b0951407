//! The export for SIEMs: one OCSF 1.3 event per line (NDJSON). Disables and enables are
//! Account Change (3001), failed sign-ins and lock-outs Authentication (3002), everything else
//! API Activity (6003). docs/audit-format.md lists the mapping; `.ci/ocsf-check` validates an
//! export of every event type against the published 1.3.0 schema.

use futures::TryStreamExt;
use serde_json::{Map, Value, json};

use super::{Facts, OpenActions, Sink, Window};
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;

pub(crate) const OCSF_VERSION: &str = "1.3.0";

/// OCSF's name for the cloud the accounts live in (Microsoft Entra ID is part of Azure).
const CLOUD_PROVIDER: &str = "Azure";

/// What the events of one export share: the chain, and the customer's Entra tenant (none for
/// the system chain).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub chain: &'a str,
    pub tenant: Option<Tenant<'a>>,
}

/// A customer's Entra tenant: its id and the customer's name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tenant<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// The OCSF class an entry maps to, with its activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    pub category_uid: u32,
    pub category_name: &'static str,
    pub class_uid: u32,
    pub class_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
}

const IAM: (u32, &str) = (3, "Identity & Access Management");
const APPLICATION: (u32, &str) = (6, "Application Activity");

fn class(
    category: (u32, &'static str),
    class: (u32, &'static str),
    activity: (u32, &'static str),
) -> Class {
    Class {
        category_uid: category.0,
        category_name: category.1,
        class_uid: class.0,
        class_name: class.1,
        activity_id: activity.0,
        activity_name: activity.1,
    }
}

/// The class and activity for an entry. An outcome whose request lies outside the export
/// still maps by the state Graph reported after it.
pub(crate) fn classify(f: &Facts) -> Class {
    const ACCOUNT_CHANGE: (u32, &str) = (3001, "Account Change");
    const AUTHENTICATION: (u32, &str) = (3002, "Authentication");
    const API_ACTIVITY: (u32, &str) = (6003, "API Activity");
    match f.event.as_str() {
        "action_requested" | "action_outcome" => {
            let operation = match f.operation.as_str() {
                "" => match f.raw["event"]["after"]["account_enabled"].as_bool() {
                    Some(true) => "enable",
                    Some(false) => "disable",
                    None => "",
                },
                other => other,
            };
            let activity = match operation {
                "disable" => (5, "Disable"),
                "enable" => (2, "Enable"),
                _ => (99, "Other"),
            };
            class(IAM, ACCOUNT_CHANGE, activity)
        }
        "authentication_failed" => class(IAM, AUTHENTICATION, (1, "Logon")),
        "analyst_locked_out" => class(IAM, AUTHENTICATION, (99, "Other")),
        "customer_added"
        | "analyst_added"
        | "detection_received"
        | "webhook_secret_issued"
        | "signing_key_registered" => class(APPLICATION, API_ACTIVITY, (1, "Create")),
        "audit_exported" | "connection_tested" => class(APPLICATION, API_ACTIVITY, (2, "Read")),
        "customer_updated"
        | "customer_policy_changed"
        | "consent_granted"
        | "consent_failed"
        | "analyst_disabled"
        | "analyst_enabled"
        | "analyst_mfa_reset"
        | "analyst_token_rotated"
        | "detection_decided"
        | "secrets_resealed" => class(APPLICATION, API_ACTIVITY, (3, "Update")),
        _ => class(APPLICATION, API_ACTIVITY, (99, "Other")),
    }
}

/// OCSF `status_id`/`status` and the severity, from what the entry says happened.
fn status(f: &Facts) -> (u32, &'static str, u32, &'static str) {
    const INFO: (u32, &str) = (1, "Informational");
    const LOW: (u32, &str) = (2, "Low");
    const MEDIUM: (u32, &str) = (3, "Medium");
    let (status_id, status, severity) = match (f.event.as_str(), f.outcome.as_str()) {
        ("action_requested", _) => (0, "Unknown", INFO),
        (_, "succeeded" | "noop" | "ready") => (1, "Success", INFO),
        (_, "failed" | "denied" | "not ready") => (2, "Failure", MEDIUM),
        ("authentication_failed" | "consent_failed", _) => (2, "Failure", LOW),
        ("analyst_locked_out", _) => (2, "Failure", MEDIUM),
        _ => (1, "Success", INFO),
    };
    (status_id, status, severity.0, severity.1)
}

fn put(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// One entry as an OCSF event: what every class shares, then what its class adds.
pub(crate) fn event(f: &Facts, source: Source<'_>, hash: &str) -> Value {
    let chain = source.chain;
    let c = classify(f);
    let (status_id, status_name, severity_id, severity) = status(f);
    let time = f
        .time
        .parse::<Timestamp>()
        .map(|t| t.as_datetime().timestamp_millis())
        .unwrap_or(0);
    let user = actor_user(f);
    let mut out = json!({
        "category_uid": c.category_uid,
        "category_name": c.category_name,
        "class_uid": c.class_uid,
        "class_name": c.class_name,
        "activity_id": c.activity_id,
        "activity_name": c.activity_name,
        "type_uid": c.class_uid * 100 + c.activity_id,
        "type_name": format!("{}: {}", c.class_name, c.activity_name),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status_name,
        "time": time,
        "message": message(f),
        "metadata": metadata(f, chain),
        "actor": actor(f, &user),
        "src_endpoint": src_endpoint(f),
        "unmapped": {"killswitch": {"chain": chain, "seq": f.seq, "hash": hash, "event": f.raw["event"].clone()}},
    });
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    add_status_detail(obj, f);
    add_http_request(obj, f);
    match c.class_uid {
        3001 => add_account_change(obj, f, source.tenant),
        3002 => add_authentication(obj, f, user),
        _ => add_api_activity(obj, f),
    }
    out
}

/// Where the event comes from; the action id correlates a request with its outcome.
fn metadata(f: &Facts, chain: &str) -> Value {
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "killswitch", "vendor_name": "killswitch", "version": env!("CARGO_PKG_VERSION")},
        "uid": format!("{chain}:{}", f.seq),
        "sequence": f.seq,
        "log_name": format!("audit/{chain}"),
        "original_time": f.time,
    });
    if !f.action_id.is_empty()
        && let Some(metadata) = metadata.as_object_mut()
    {
        metadata.insert(
            "correlation_uid".to_owned(),
            Value::String(f.action_id.clone()),
        );
    }
    metadata
}

/// The analyst or operator behind the entry as an OCSF user; empty for anyone else.
fn actor_user(f: &Facts) -> Map<String, Value> {
    let mut user = Map::new();
    put(&mut user, "uid", &f.analyst_id);
    match f.actor_type.as_str() {
        "analyst" => {
            put(&mut user, "email_addr", &f.actor);
            put(&mut user, "name", &f.actor);
        }
        "operator" => put(&mut user, "name", f.actor.trim_start_matches("operator ")),
        _ => {}
    }
    user
}

/// The actor: its user (except on a failed sign-in, where the user is who tried, not who
/// acted), and the application it acted through.
fn actor(f: &Facts, user: &Map<String, Value>) -> Map<String, Value> {
    let mut actor = Map::new();
    if !user.is_empty() && f.event != "authentication_failed" {
        actor.insert("user".to_owned(), Value::Object(user.clone()));
    }
    let app = match f.actor_type.as_str() {
        "falcon" => "CrowdStrike Falcon (killswitch auto-disable policy)",
        "service" => "killswitch",
        "operator" => "killswitch CLI",
        _ => "killswitch API",
    };
    actor.insert("app_name".to_owned(), Value::String(app.to_owned()));
    actor
}

/// Where the request that caused an entry came from, as OCSF's network endpoint (which needs
/// at least one identifying attribute, and API Activity requires one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The client address recorded with the entry (behind trusted proxies, the one they name).
    Address(String),
    /// No network request: the command line on the server, start-up, or the automatic rule.
    Local,
    /// A network request whose address the entry does not record (written before addresses
    /// were recorded for it).
    Unrecorded,
}

fn origin(f: &Facts) -> Origin {
    if !f.client_ip.is_empty() {
        return Origin::Address(f.client_ip.clone());
    }
    let automatic_rule = f.actor_type == "falcon" && f.raw["actor"]["policy"] != "intake";
    match f.actor_type.as_str() {
        "operator" | "service" => Origin::Local,
        _ if automatic_rule => Origin::Local,
        _ => Origin::Unrecorded,
    }
}

fn src_endpoint(f: &Facts) -> Value {
    match origin(f) {
        Origin::Address(ip) => json!({"ip": ip}),
        Origin::Local => json!({"svc_name": "killswitch"}),
        Origin::Unrecorded => json!({"name": "unknown"}),
    }
}

/// `outcome: detail`, when the entry says either.
fn add_status_detail(obj: &mut Map<String, Value>, f: &Facts) {
    let detail: Vec<&str> = [f.outcome.as_str(), f.detail.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if !detail.is_empty() {
        obj.insert("status_detail".to_owned(), Value::String(detail.join(": ")));
    }
}

fn add_http_request(obj: &mut Map<String, Value>, f: &Facts) {
    let mut request = Map::new();
    put(&mut request, "user_agent", &f.user_agent);
    put(
        &mut request,
        "uid",
        f.raw["event"]["request"]["request_id"]
            .as_str()
            .unwrap_or_default(),
    );
    if !request.is_empty() {
        obj.insert("http_request".to_owned(), Value::Object(request));
    }
}

/// Account Change (3001): the Entra account acted on, the customer's tenant it lives in (the
/// `cloud` profile), and the Graph call that did it (`api`, which 1.3.0 allows here only with
/// that profile).
fn add_account_change(obj: &mut Map<String, Value>, f: &Facts, tenant: Option<Tenant<'_>>) {
    let mut user = Map::new();
    put(&mut user, "name", &f.account);
    let state = &f.raw["event"]["after"];
    let state = if state.is_object() {
        state
    } else {
        &f.raw["event"]["before"]
    };
    put(&mut user, "uid", state["id"].as_str().unwrap_or_default());
    obj.insert("user".to_owned(), named(user));
    let mut cloud = json!({"provider": CLOUD_PROVIDER});
    if let Some(tenant) = tenant {
        cloud["org"] = json!({"uid": tenant.id, "name": tenant.name});
    }
    obj.insert("cloud".to_owned(), cloud);
    if let Some(metadata) = obj.get_mut("metadata") {
        metadata["profiles"] = json!(["cloud"]);
    }
    if !f.graph_request_id.is_empty() {
        obj.insert(
            "api".to_owned(),
            json!({"operation": "PATCH /users/{id} accountEnabled", "request": {"uid": f.graph_request_id}, "service": {"name": "Microsoft Graph"}}),
        );
    }
}

/// Authentication (3002): who tried to sign in to killswitch, and whether a one-time code was
/// part of it.
fn add_authentication(obj: &mut Map<String, Value>, f: &Facts, user: Map<String, Value>) {
    obj.insert("user".to_owned(), named(user));
    obj.insert("service".to_owned(), json!({"name": "killswitch"}));
    obj.insert(
        "is_mfa".to_owned(),
        Value::Bool(f.reason.contains("one-time code")),
    );
}

/// A user the class requires: OCSF's user needs a name or uid, and where the entry knows neither
/// (a sign-in by someone who is no analyst) it says so.
fn named(mut user: Map<String, Value>) -> Value {
    if user.is_empty() {
        user.insert("name".to_owned(), Value::String("unknown".to_owned()));
    }
    Value::Object(user)
}

/// API Activity (6003): the killswitch operation, named by its event.
fn add_api_activity(obj: &mut Map<String, Value>, f: &Facts) {
    obj.insert(
        "api".to_owned(),
        json!({"operation": f.event, "service": {"name": "killswitch"}}),
    );
}

fn message(f: &Facts) -> String {
    let mut parts = vec![f.event.replace('_', " ")];
    for part in [&f.operation, &f.account, &f.outcome] {
        if !part.is_empty() {
            parts.push(part.clone());
        }
    }
    if !f.actor.is_empty() {
        parts.push(format!("by {}", f.actor));
    }
    parts.join(" ")
}

pub(super) async fn write(store: &dyn Store, window: &Window, sink: &mut Sink) -> Result<()> {
    let source = Source {
        chain: &window.chain,
        tenant: window.tenant_id.as_deref().map(|id| Tenant {
            id,
            name: &window.customer_name,
        }),
    };
    let mut rows = super::rows(store, window);
    let mut open = OpenActions::default();
    while let Some(row) = rows.try_next().await? {
        let facts = Facts::read(&row, &mut open);
        let line = event(&facts, source, &row.hash);
        serde_json::to_writer(&mut *sink.buffer(), &line)
            .map_err(|e| Error::Internal(format!("ocsf: {e}")))?;
        sink.buffer().push(b'\n');
        sink.maybe_flush().await?;
    }
    Ok(())
}

/// Every entry of `chain` as the OCSF export writes it, for checking the mapping (the system
/// chain has no export of its own). A customer chain's events name its tenant.
pub async fn chain_events(store: &dyn Store, chain: &ChainId) -> Result<Vec<Value>> {
    let customer = match chain {
        ChainId::Customer(slug) => store.customer(slug).await?,
        ChainId::System => None,
    };
    let tenant_id = customer.as_ref().map(|c| c.tenant_id.to_string());
    let source = Source {
        chain: chain.as_str(),
        tenant: customer
            .as_ref()
            .zip(tenant_id.as_deref())
            .map(|(c, id)| Tenant { id, name: &c.name }),
    };
    let Some(head) = store.head(chain.as_str()).await?.filter(|h| h.seq > 0) else {
        return Ok(Vec::new());
    };
    let mut rows = store.entry_range(chain.as_str(), 1, head.seq);
    let mut open = OpenActions::default();
    let mut events = Vec::new();
    while let Some(row) = rows.try_next().await? {
        events.push(event(&Facts::read(&row, &mut open), source, &row.hash));
    }
    Ok(events)
}
