//! An account's page (its state in Entra now, killswitch's actions on it, and the disable and
//! enable forms), what the forms post, and an action's page. The forms go through the API's own
//! path: the session (whose CSRF token the form carries), the role, the customer's scope, the
//! one-time code, the same admission and audit entries.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::forms::Posted;
use super::frame::Frame;
use super::{AppState, error_page, html_page, message, problem_text, refused, see_other, shown};
use crate::audit::event::{AccountState, Actor, Operation};
use crate::auth::Permission;
use crate::customers::Customer;
use crate::domain::AccountRef;
use crate::domain::action::{ActionRecord, ActionState, Denial};
use crate::http::actions::{Asked, live_account, run_action};
use crate::http::caller::Caller;
use crate::http::customers::in_scope;
use crate::http::problem::Problem;
use crate::store::ActionFilter;

/// How many of the account's latest actions its page lists.
const HISTORY_SHOWN: u32 = 50;

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    frame: Option<Frame>,
    customer: String,
    customer_name: String,
    account: String,
    base: String,
    csrf_token: String,
    refusal: Option<String>,
    live: Option<LiveAccount>,
    unavailable: Option<String>,
    can_disable: bool,
    can_enable: bool,
    revoke_by_default: bool,
    history: Vec<HistoryRow>,
}

struct LiveAccount {
    state: &'static str,
    state_class: &'static str,
    display_name: String,
    upn: String,
    id: String,
    synced: &'static str,
    protected: &'static str,
}

struct HistoryRow {
    id: String,
    requested: String,
    operation: &'static str,
    outcome: &'static str,
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not said by Entra",
    }
}

/// `GET /customers/{customer}/accounts/{account}`.
pub async fn account_page(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    Path((slug, account)): Path<(String, String)>,
) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(problem) => return refused(&problem),
    };
    match account_view(&state, &caller, &slug, &account, None).await {
        Ok(page) => html_page(StatusCode::OK, &page),
        Err(problem) => refused(&problem),
    }
}

async fn account_view(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    account: &str,
    refusal: Option<String>,
) -> Result<AccountPage, Problem> {
    caller.require(Permission::ReadAccounts)?;
    let customer = in_scope(state, caller, slug).await?;
    let reference: AccountRef = account.parse().map_err(Problem::invalid_input)?;
    let (live, unavailable) = match live_account(state, &customer, &reference).await {
        Ok((user, protected)) => (
            Some(LiveAccount {
                state: match user.account_enabled {
                    Some(true) => "Enabled: it can sign in",
                    Some(false) => "Disabled: it cannot sign in",
                    None => "Not said by Entra",
                },
                state_class: match user.account_enabled {
                    Some(true) => "enabled",
                    Some(false) => "disabled",
                    None => "unknown",
                },
                display_name: user.display_name.clone().unwrap_or_default(),
                upn: user.user_principal_name.clone(),
                id: user.id.clone(),
                synced: yes_no(user.on_premises_sync_enabled),
                protected: if protected {
                    "yes: killswitch will not change it"
                } else {
                    "no"
                },
            }),
            None,
        ),
        Err(problem) => (None, Some(problem.detail.unwrap_or(problem.title))),
    };
    let history = history(state, &customer, account, live.as_ref()).await?;
    Ok(AccountPage {
        frame: Frame::of(caller, "/customers"),
        customer: customer.slug.to_string(),
        customer_name: customer.name.clone(),
        account: account.to_owned(),
        base: format!(
            "/customers/{}/accounts/{}",
            customer.slug,
            url_path(account)
        ),
        csrf_token: super::csrf_of(caller),
        refusal,
        live,
        unavailable,
        can_disable: caller.analyst.role.allows(Permission::Disable),
        can_enable: caller.analyst.role.allows(Permission::Enable),
        revoke_by_default: customer.policy.revoke_sessions,
        history,
    })
}

/// A path segment: the account as typed, percent-encoded (form encoding, with a space as
/// `%20`, since `+` means a plus sign in a path).
pub(super) fn url_path(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The account's latest actions: those naming it as typed, or by the UPN or object id Entra
/// reports for it now (an action may have been asked for either way).
async fn history(
    state: &AppState,
    customer: &Customer,
    account: &str,
    live: Option<&LiveAccount>,
) -> Result<Vec<HistoryRow>, Problem> {
    let mut names = vec![account.to_owned()];
    if let Some(live) = live {
        names.extend([live.upn.clone(), live.id.clone()]);
    }
    let filter = ActionFilter {
        customers: Some(vec![customer.slug.clone()]),
        accounts: Some(names),
        limit: HISTORY_SHOWN,
        ..ActionFilter::default()
    };
    let actions = state.store.actions(&filter).await.map_err(Problem::from)?;
    Ok(actions
        .iter()
        .map(|a| HistoryRow {
            id: a.id.to_string(),
            requested: shown(&a.created_at),
            operation: a.operation.as_str(),
            outcome: a.state.as_str(),
        })
        .collect())
}

pub async fn disable(
    State(state): State<AppState>,
    Path((slug, account)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    act(state, Operation::Disable, slug, account, posted).await
}

pub async fn enable(
    State(state): State<AppState>,
    Path((slug, account)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    act(state, Operation::Enable, slug, account, posted).await
}

/// A form's action: the form's CSRF token and code take the places of the API's headers, and
/// only the session speaks for the request.
async fn act(
    state: AppState,
    operation: Operation,
    slug: String,
    account: String,
    Posted {
        caller,
        form,
        headers,
    }: Posted,
) -> Response {
    let permission = match operation {
        Operation::Disable => Permission::Disable,
        Operation::Enable => Permission::Enable,
    };
    if let Err(problem) = caller.require(permission) {
        return refused(&problem);
    }
    if let Err(problem) = in_scope(&state, &caller, &slug).await {
        return refused(&problem);
    }
    let asked = Asked {
        operation,
        customer: slug.clone(),
        account: account.clone(),
        reason: form.text("reason").to_owned(),
        ticket: form.optional("ticket"),
        revoke_sessions: (operation == Operation::Disable)
            .then_some(form.checked("revoke_sessions")),
    };
    let view_caller = caller.clone();
    match run_action(state.clone(), caller, asked, headers).await {
        Ok(record) => see_other(&format!("/actions/{}", record.id)),
        Err(problem) => {
            let status = super::status_of(&problem);
            let text = problem_text(&problem);
            match account_view(&state, &view_caller, &slug, &account, Some(text)).await {
                Ok(page) => html_page(status, &page),
                Err(problem) => refused(&problem),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "console/action.html")]
struct ActionPage {
    frame: Option<Frame>,
    id: String,
    headline: String,
    sentence: String,
    outcome_class: &'static str,
    running: bool,
    warnings: Vec<String>,
    account: String,
    account_href: String,
    customer: String,
    operation: &'static str,
    requested: String,
    by: String,
    reason: String,
    ticket: Option<String>,
    before: String,
    after: String,
    request_id: Option<String>,
    audit_seq: u64,
}

/// `GET /actions/{id}`: the outcome in words nobody can misread at 3 a.m.
pub async fn action_page(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(problem) => return refused(&problem),
    };
    if let Err(problem) = caller.require(Permission::ReadActions) {
        return refused(&problem);
    }
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            "No such action",
            &format!("There is no action `{id}` for you."),
        )
    };
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return not_found();
    };
    match state.store.action(uuid).await {
        Ok(Some(record)) if caller.sees(record.customer.as_str()) => {
            html_page(StatusCode::OK, &action_view(&caller, &record))
        }
        Ok(_) => not_found(),
        Err(e) => error_page(&e),
    }
}

/// The headline, the sentence under it, and its colour, for the action's state.
fn outcome_words(record: &ActionRecord) -> (String, String, &'static str) {
    let account = &record.account;
    let (done, doing) = match record.operation {
        Operation::Disable => ("disabled", "disable"),
        Operation::Enable => ("enabled", "enable"),
    };
    let detail = record.detail.clone().unwrap_or_default();
    match (record.state, record.denial) {
        (ActionState::Succeeded, _) => (
            format!("Done: {done}"),
            format!("{account} is now {done} in Entra; Entra confirmed it."),
            "good",
        ),
        (ActionState::Noop, _) => (
            format!("Already {done}"),
            format!("Nothing was changed: {account} was already {done}."),
            "good",
        ),
        (ActionState::Denied, Some(Denial::HourlyLimit)) => (
            format!("Refused: not {done}"),
            format!("The customer's hourly limit is reached; nothing was sent to Entra. {detail}"),
            "bad",
        ),
        (ActionState::Denied, _) => (
            format!("Refused: not {done}"),
            format!("{account} is protected by the customer's policy; nothing was sent to Entra."),
            "bad",
        ),
        (ActionState::Failed, _) => (
            format!("FAILED: not {done}"),
            format!("killswitch could not {doing} {account}: {detail}"),
            "bad",
        ),
        (ActionState::Requested, _) => (
            "Still running".to_owned(),
            format!("The request to {doing} {account} is with Entra; waiting for its answer."),
            "",
        ),
    }
}

fn state_words(state: Option<&AccountState>) -> String {
    let Some(state) = state else {
        return "not known".to_owned();
    };
    let enabled = match state.account_enabled {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => "not said by Entra",
    };
    match state.on_premises_sync_enabled {
        Some(true) => format!("{enabled} (synced from on-premises AD)"),
        _ => enabled.to_owned(),
    }
}

fn actor_words(actor: &Actor) -> String {
    match actor {
        Actor::Analyst { email, auth, .. } => {
            let how = match auth {
                crate::audit::event::AuthMethod::ApiToken => "signed in with an API token",
                crate::audit::event::AuthMethod::Oidc => "signed in with single sign-on",
            };
            format!("{email}, {how}, with a one-time code")
        }
        Actor::Falcon { policy, .. } => format!("the automatic rule `{policy}`"),
        Actor::Operator { user } => format!("operator {user} on the server"),
        Actor::Service => "killswitch itself".to_owned(),
        Actor::Unauthenticated { .. } => "nobody signed in".to_owned(),
    }
}

fn action_view(caller: &Caller, record: &ActionRecord) -> ActionPage {
    let (headline, sentence, outcome_class) = outcome_words(record);
    ActionPage {
        frame: Frame::of(caller, "/actions"),
        id: record.id.to_string(),
        headline,
        sentence,
        outcome_class,
        running: record.state == ActionState::Requested,
        warnings: record.warnings.clone(),
        account: record.account.clone(),
        account_href: format!(
            "/customers/{}/accounts/{}",
            record.customer,
            url_path(&record.account)
        ),
        customer: record.customer.to_string(),
        operation: record.operation.as_str(),
        requested: shown(&record.created_at),
        by: actor_words(&record.actor),
        reason: record.reason.clone(),
        ticket: record.ticket.clone(),
        before: state_words(record.before.as_ref()),
        after: state_words(record.after.as_ref()),
        request_id: record.graph.as_ref().and_then(|g| g.request_id.clone()),
        audit_seq: record.requested_seq,
    }
}
