//! The home page: the analyst's customers with their connection light, the detections waiting
//! for an analyst, and the last actions, all within the analyst's scope and role.

use std::collections::BTreeMap;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::frame::Frame;
use super::{AppState, error_page, html_page, shown};
use crate::auth::Permission;
use crate::customers::Customer;
use crate::domain::CustomerSlug;
use crate::domain::detection::{DetectionFilter, DetectionRecord, DetectionState};
use crate::error::Result;
use crate::http::caller::Caller;
use crate::remediation::action::ActionRecord;
use crate::store::ActionFilter;

/// How many pending detections and actions the page lists.
const PENDING_SHOWN: u32 = 50;
const ACTIONS_SHOWN: u32 = 10;

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    frame: Option<Frame>,
    customers: Vec<CustomerCard>,
    pending: Vec<PendingRow>,
    actions: Vec<ActionRow>,
}

struct CustomerCard {
    slug: String,
    name: String,
    /// The CSS class of the light: `ready`, `not-ready` or `unknown`.
    light: &'static str,
    connection: String,
    checked_at: Option<String>,
    pending: u64,
}

struct PendingRow {
    id: String,
    received: String,
    customer: String,
    severity: &'static str,
    account: String,
    waiting: String,
}

struct ActionRow {
    id: String,
    requested: String,
    customer: String,
    account: String,
    operation: &'static str,
    outcome: &'static str,
}

pub async fn page(state: &AppState, caller: &Caller) -> Response {
    match gather(state, caller).await {
        Ok(home) => html_page(StatusCode::OK, &home),
        Err(e) => error_page(&e),
    }
}

async fn gather(state: &AppState, caller: &Caller) -> Result<HomePage> {
    let analyst = &caller.analyst;
    let scope = analyst.customers.slugs();
    // The cards count every pending detection, not only the ones listed.
    let (pending, counts) = if analyst.role.allows(Permission::ReadDetections) {
        let filter = DetectionFilter {
            customers: scope.clone(),
            state: Some(DetectionState::Pending),
            before: None,
            limit: PENDING_SHOWN,
        };
        let counts = state.store.pending_by_customer(scope.as_deref()).await?;
        (state.store.detections(&filter).await?, counts)
    } else {
        (Vec::new(), BTreeMap::new())
    };
    let actions = if analyst.role.allows(Permission::ReadActions) {
        let filter = ActionFilter {
            customers: scope,
            limit: ACTIONS_SHOWN,
            ..ActionFilter::default()
        };
        state.store.actions(&filter).await?
    } else {
        Vec::new()
    };
    let customers = state
        .store
        .customers()
        .await?
        .iter()
        .filter(|c| analyst.customers.covers(&c.slug))
        .map(|c| card(c, &counts))
        .collect();
    Ok(HomePage {
        frame: Frame::of(caller, "/"),
        customers,
        pending: pending.iter().map(pending_row).collect(),
        actions: actions.iter().map(action_row).collect(),
    })
}

/// The customer's connection light: its CSS class (`ready`, `not-ready` or `unknown`), its
/// words (with the exact reason the last test gave), and when it was checked.
pub(super) fn connection_light(customer: &Customer) -> (&'static str, String, Option<String>) {
    match &customer.connection {
        Some(c) if c.ready => ("ready", "Ready".to_owned(), Some(shown(&c.checked_at))),
        Some(c) => (
            "not-ready",
            format!("Not ready: {}", c.detail),
            Some(shown(&c.checked_at)),
        ),
        None => ("unknown", "Not tested yet".to_owned(), None),
    }
}

fn card(customer: &Customer, pending: &BTreeMap<CustomerSlug, u64>) -> CustomerCard {
    let (light, connection, checked_at) = connection_light(customer);
    CustomerCard {
        slug: customer.slug.to_string(),
        name: customer.name.clone(),
        light,
        connection,
        checked_at,
        pending: pending.get(&customer.slug).copied().unwrap_or(0),
    }
}

fn pending_row(detection: &DetectionRecord) -> PendingRow {
    PendingRow {
        id: detection.id.to_string(),
        received: shown(&detection.received_at),
        customer: detection.customer.to_string(),
        severity: detection.severity.as_str(),
        account: super::detections::account_of(detection),
        waiting: detection
            .pending_reason
            .clone()
            .unwrap_or_else(|| "waiting for an analyst".to_owned()),
    }
}

fn action_row(action: &ActionRecord) -> ActionRow {
    ActionRow {
        id: action.id.to_string(),
        requested: shown(&action.created_at),
        customer: action.customer.to_string(),
        account: action.account.clone(),
        operation: action.operation.as_str(),
        outcome: action.state.as_str(),
    }
}
