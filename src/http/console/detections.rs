//! The detection queue (what waits for an analyst first), a detection's page, and its approve
//! and dismiss forms, which go through the API's own operations.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::forms::Posted;
use super::frame::Frame;
use super::{AppState, html_page, problem_text, refused, see_other, shown};
use crate::auth::Permission;
use crate::domain::cursor::ListCursor;
use crate::domain::detection::{DetectionFilter, DetectionRecord, DetectionState};
use crate::http::caller::Caller;
use crate::http::falcon::{Approval, approve_detection, detection_in_scope, dismiss_detection};
use crate::http::input::QueryParams;
use crate::http::problem::Problem;

/// How many rows each part of the queue shows.
const QUEUE_SHOWN: u32 = 100;

#[derive(Template)]
#[template(path = "console/detections.html")]
struct QueuePage {
    frame: Option<Frame>,
    customer: Option<String>,
    pending: Vec<Row>,
    decided: Vec<Row>,
    /// The next page of the queue, and the way back to its start.
    older: Option<String>,
    newest: Option<String>,
}

struct Row {
    id: String,
    received: String,
    customer: String,
    severity: &'static str,
    account: String,
    state: &'static str,
    why: String,
}

#[derive(Deserialize)]
pub struct QueueParams {
    customer: Option<String>,
    before: Option<String>,
}

/// The queue's address for `customer` (if any), from `before` (`None`: its start).
fn queue_href(customer: Option<&str>, before: Option<&ListCursor>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(customer) = customer {
        query.append_pair("customer", customer);
    }
    if let Some(before) = before {
        query.append_pair("before", &before.to_string());
    }
    match query.finish() {
        query if query.is_empty() => "/detections".to_owned(),
        query => format!("/detections?{query}"),
    }
}

/// `GET /detections`: pending detections first, then the ones decided lately.
pub async fn queue(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    params: Result<QueryParams<QueueParams>, Problem>,
) -> Response {
    let gathered = async {
        let caller = caller?;
        let QueryParams(params) = params?;
        caller.require(Permission::ReadDetections)?;
        let customers = caller.customer_filter(params.customer.as_deref())?;
        let before = params
            .before
            .as_deref()
            .map(str::parse::<ListCursor>)
            .transpose()
            .map_err(Problem::invalid_input)?;
        let list = |state_filter, before| DetectionFilter {
            customers: customers.clone(),
            state: state_filter,
            limit: QUEUE_SHOWN,
            before,
        };
        let waiting = list(Some(DetectionState::Pending), before);
        let pending = state.store.detections(&waiting).await;
        let pending = pending.map_err(Problem::from)?;
        // Each decided state on its own, so a long queue cannot crowd the decisions out.
        // Later pages go on through the queue only.
        let mut decided = Vec::new();
        for decision in DetectionState::ALL
            .into_iter()
            .filter(|s| *s != DetectionState::Pending && before.is_none())
        {
            let listed = state.store.detections(&list(Some(decision), None)).await;
            decided.extend(listed.map_err(Problem::from)?);
        }
        decided.sort_by_key(|d| std::cmp::Reverse((d.received_at, d.id)));
        decided.truncate(QUEUE_SHOWN as usize);
        let customer = params.customer.as_deref();
        let older = (pending.len() == QUEUE_SHOWN as usize)
            .then(|| pending.last())
            .flatten()
            .map(|last| queue_href(customer, Some(&ListCursor::new(last.received_at, last.id))));
        Ok::<_, Problem>(QueuePage {
            frame: Frame::of(&caller, "/detections"),
            older,
            newest: before.is_some().then(|| queue_href(customer, None)),
            customer: params.customer,
            pending: pending.iter().map(row).collect(),
            decided: decided.iter().map(row).collect(),
        })
    };
    match gathered.await {
        Ok(page) => html_page(StatusCode::OK, &page),
        Err(problem) => refused(&problem),
    }
}

/// The account a detection is about: the Entra account it was matched to, else as Falcon
/// named it.
pub(super) fn account_of(detection: &DetectionRecord) -> String {
    detection
        .target_upn
        .clone()
        .or_else(|| detection.account_upn.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn row(detection: &DetectionRecord) -> Row {
    Row {
        id: detection.id.to_string(),
        received: shown(&detection.received_at),
        customer: detection.customer.to_string(),
        severity: detection.severity.as_str(),
        account: account_of(detection),
        state: detection.state.as_str(),
        why: detection
            .pending_reason
            .clone()
            .or_else(|| detection.decision_reason.clone())
            .unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "console/detection.html")]
struct DetectionPage {
    frame: Option<Frame>,
    id: String,
    headline: &'static str,
    outcome_class: &'static str,
    refusal: Option<String>,
    customer: String,
    received: String,
    severity: &'static str,
    tactic: String,
    technique: String,
    falcon_account: String,
    account: Option<(String, String)>,
    falcon_link: Option<String>,
    falcon_id: String,
    why: Option<String>,
    decided: Option<String>,
    action_id: Option<String>,
    pending: bool,
    can_decide: bool,
    csrf_token: String,
}

/// `GET /detections/{id}`.
pub async fn detection_page(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    Path(id): Path<String>,
) -> Response {
    let shown = async {
        let caller = caller?;
        caller.require(Permission::ReadDetections)?;
        let (_, detection) = detection_in_scope(&state, &caller, &id).await?;
        Ok::<_, Problem>(html_page(
            StatusCode::OK,
            &detection_view(&caller, &detection, None),
        ))
    };
    shown.await.unwrap_or_else(|problem| refused(&problem))
}

fn headline(detection: &DetectionRecord) -> (&'static str, &'static str) {
    match detection.state {
        DetectionState::Pending => ("Waiting for an analyst", ""),
        DetectionState::Approved => ("Approved: the account's disable was requested", ""),
        DetectionState::AutoRemediated => ("Disabled automatically by the policy", "good"),
        DetectionState::Dismissed => ("Dismissed: nothing was sent to Entra", ""),
    }
}

fn detection_view(
    caller: &Caller,
    detection: &DetectionRecord,
    refusal: Option<String>,
) -> DetectionPage {
    let (headline, outcome_class) = headline(detection);
    let pending = detection.state == DetectionState::Pending;
    DetectionPage {
        frame: Frame::of(caller, "/detections"),
        id: detection.id.to_string(),
        headline,
        outcome_class,
        refusal,
        customer: detection.customer.to_string(),
        received: shown(&detection.received_at),
        severity: detection.severity.as_str(),
        tactic: detection.tactic.clone().unwrap_or_default(),
        technique: detection.technique.clone().unwrap_or_default(),
        falcon_account: detection.account_upn.clone().unwrap_or_default(),
        account: detection.target_upn.as_ref().map(|upn| {
            let href = format!(
                "/customers/{}/accounts/{}",
                detection.customer,
                super::accounts::url_path(upn)
            );
            (upn.clone(), href)
        }),
        falcon_link: detection.falcon_host_link.as_deref().and_then(falcon_link),
        falcon_id: detection.composite_id.clone(),
        why: detection.pending_reason.clone().filter(|_| pending),
        decided: detection.decided_at.as_ref().map(|at| {
            let reason = detection.decision_reason.clone().unwrap_or_default();
            format!("{} UTC {reason}", shown(at)).trim().to_owned()
        }),
        action_id: detection.action_id.map(|id| id.to_string()),
        pending,
        can_decide: pending && caller.analyst.role.allows(Permission::DecideDetections),
        csrf_token: super::csrf_of(caller),
    }
}

/// Falcon's link for the detection, when it leads to a Falcon console: anyone holding the
/// webhook's secret writes this text, so an analyst's page links only to https addresses on
/// CrowdStrike's own domain.
fn falcon_link(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let host = url.host_str()?;
    let falcon = host == "crowdstrike.com" || host.ends_with(".crowdstrike.com");
    (url.scheme() == "https" && falcon && url.port().is_none()).then(|| url.to_string())
}

/// `POST /detections/{id}/approve`: the form's code, then the disable.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        caller, headers, ..
    }: Posted,
) -> Response {
    let decided = async {
        let found = detection_in_scope(&state, &caller, &id).await?;
        approve_detection(&state, &caller, found, &headers).await
    };
    match decided.await {
        // The action's page says in words whether Entra took the change.
        Ok(Approval::Done(approved)) => {
            see_other(&format!("/actions/{}", approved.action.record().id))
        }
        Ok(Approval::StillRunning(detection)) => {
            see_other(&format!("/detections/{}", detection.id))
        }
        Err(problem) => decision_refused(&state, &caller, &id, &problem).await,
    }
}

/// `POST /detections/{id}/dismiss`: the form's reason and code; nothing is sent to Entra.
pub async fn dismiss(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        caller,
        form,
        headers,
    }: Posted,
) -> Response {
    let decided = async {
        let found = detection_in_scope(&state, &caller, &id).await?;
        dismiss_detection(&state, &caller, found, form.text("reason"), &headers).await
    };
    match decided.await {
        Ok(detection) => see_other(&format!("/detections/{}", detection.id)),
        Err(problem) => decision_refused(&state, &caller, &id, &problem).await,
    }
}

/// The detection's page again, saying why the decision was refused.
async fn decision_refused(
    state: &AppState,
    caller: &Caller,
    id: &str,
    problem: &Problem,
) -> Response {
    if super::ends_the_request(problem) || problem.status == 404 {
        return refused(problem);
    }
    let status = super::status_of(problem);
    match detection_in_scope(state, caller, id).await {
        Ok((_, detection)) => html_page(
            status,
            &detection_view(caller, &detection, Some(problem_text(problem))),
        ),
        Err(problem) => refused(&problem),
    }
}

#[cfg(test)]
mod tests {
    use super::falcon_link;

    #[test]
    fn only_https_links_to_crowdstrike_become_links() {
        let falcon = "https://falcon.us-2.crowdstrike.com/identity-protection/detections/1";
        assert_eq!(falcon_link(falcon).as_deref(), Some(falcon));
        for refused in [
            "http://falcon.crowdstrike.com/x",
            "https://falcon.crowdstrike.com.evil.example/x",
            "https://evilcrowdstrike.com/x",
            "javascript:alert(1)",
            "https://falcon.crowdstrike.com:8443/x",
            "not a url",
        ] {
            assert_eq!(falcon_link(refused), None, "{refused}");
        }
    }
}
