//! A customer's page: its connection light, the form that finds an account in its tenant, and,
//! for the roles that may, its connection test, a consent link to copy, and its policy. Each
//! change goes through the API's own operation (role, scope, one-time code, audit entry).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::forms::{Form, Posted};
use super::frame::Frame;
use super::home::connection_light;
use super::{AppState, html_page, problem_text, refused, see_other, shown};
use crate::auth::Permission;
use crate::customers::Customer;
use crate::domain::customer::AutoDisable;
use crate::domain::customer::NotifyMode;
use crate::http::caller::Caller;
use crate::http::customers::{
    PolicyView, change_policy, in_scope, issue_consent_link, test_connection,
};
use crate::http::input::QueryParams;
use crate::http::problem::Problem;

#[derive(Template)]
#[template(path = "console/customer.html")]
struct CustomerPage {
    frame: Option<Frame>,
    slug: String,
    name: String,
    domain: String,
    tenant: String,
    light: &'static str,
    connection: String,
    checked_at: Option<String>,
    csrf_token: String,
    notice: Option<String>,
    refusal: Option<String>,
    consent: Option<ConsentShown>,
    can_read_accounts: bool,
    can_manage: bool,
    can_change_policy: bool,
    policy: PolicyShown,
}

struct ConsentShown {
    url: String,
    expires: String,
}

struct PolicyShown {
    /// Which policy the form was filled from (see [`policy_version`]).
    version: String,
    /// One protected account per line.
    protected: String,
    max_actions_per_hour: u32,
    revoke_sessions: bool,
    auto_disable: Vec<(&'static str, bool)>,
    contact: String,
    /// Each way the contacts may hear of actions, and whether it is the one chosen.
    notify: Vec<(&'static str, bool)>,
}

/// What the page says above its content after a form was sent.
#[derive(Default)]
struct Said {
    notice: Option<String>,
    refusal: Option<String>,
    consent: Option<ConsentShown>,
}

/// `GET /customers/{customer}`.
pub async fn customer_page(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    Path(slug): Path<String>,
) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(problem) => return refused(&problem),
    };
    show(&state, &caller, &slug, StatusCode::OK, Said::default()).await
}

async fn show(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    status: StatusCode,
    said: Said,
) -> Response {
    match in_scope(state, caller, slug).await {
        Ok(customer) => html_page(status, &view(caller, &customer, said)),
        Err(problem) => refused(&problem),
    }
}

fn view(caller: &Caller, customer: &Customer, said: Said) -> CustomerPage {
    let (light, connection, checked_at) = connection_light(customer);
    let role = caller.analyst.role;
    let policy = &customer.policy;
    CustomerPage {
        frame: Frame::of(caller, "/customers"),
        slug: customer.slug.to_string(),
        name: customer.name.clone(),
        domain: customer.domain.clone(),
        tenant: customer.tenant_id.to_string(),
        light,
        connection,
        checked_at,
        csrf_token: super::csrf_of(caller),
        notice: said.notice,
        refusal: said.refusal,
        consent: said.consent,
        can_read_accounts: role.allows(Permission::ReadAccounts),
        can_manage: role.allows(Permission::ManageCustomers),
        can_change_policy: role.allows(Permission::ManagePolicy),
        policy: PolicyShown {
            version: policy_version(policy),
            protected: policy
                .protected
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            max_actions_per_hour: policy.max_actions_per_hour,
            revoke_sessions: policy.revoke_sessions,
            auto_disable: AutoDisable::ALL
                .iter()
                .map(|level| (level.as_str(), *level == policy.auto_disable))
                .collect(),
            contact: policy.contact.clone().unwrap_or_default(),
            notify: NotifyMode::ALL
                .iter()
                .map(|mode| (mode.as_str(), *mode == policy.notify))
                .collect(),
        },
    }
}

#[derive(Deserialize)]
pub struct FindParams {
    #[serde(default)]
    account: String,
}

/// `GET /customers/{customer}/accounts?account=…`: the find form, answered with the account's
/// page.
pub async fn find_account(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    Path(slug): Path<String>,
    params: Result<QueryParams<FindParams>, Problem>,
) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(problem) => return refused(&problem),
    };
    let account = match params {
        Ok(QueryParams(params)) => params.account.trim().to_owned(),
        Err(problem) => return refused(&problem),
    };
    if let Err(problem) = in_scope(&state, &caller, &slug).await {
        return refused(&problem);
    }
    if account.is_empty() {
        let said = Said {
            refusal: Some("Type the account's userPrincipalName or object id.".to_owned()),
            ..Said::default()
        };
        return show(
            &state,
            &caller,
            &slug,
            StatusCode::UNPROCESSABLE_ENTITY,
            said,
        )
        .await;
    }
    see_other(&format!(
        "/customers/{slug}/accounts/{}",
        super::accounts::url_path(&account)
    ))
}

/// `POST /customers/{customer}/test`: runs the connection test, then shows its light.
pub async fn test(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Posted {
        caller, headers, ..
    }: Posted,
) -> Response {
    let said = match test_connection(&state, &caller, &slug, &headers).await {
        Ok(customer) => Said {
            notice: Some(match customer.connection {
                Some(c) if c.ready => "Connection test passed: ready.".to_owned(),
                Some(c) => format!("Connection test failed: {}", c.detail),
                None => "Connection test ran.".to_owned(),
            }),
            ..Said::default()
        },
        Err(problem) => return refusal(&state, &caller, &slug, &problem).await,
    };
    show(&state, &caller, &slug, StatusCode::OK, said).await
}

/// `POST /customers/{customer}/consent-link`: a new link, shown once to copy.
pub async fn consent_link(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Posted {
        caller, headers, ..
    }: Posted,
) -> Response {
    match issue_consent_link(&state, &caller, &slug, &headers).await {
        Ok(link) => {
            let said = Said {
                consent: Some(ConsentShown {
                    url: link.url,
                    expires: shown(&link.expires_at),
                }),
                ..Said::default()
            };
            show(&state, &caller, &slug, StatusCode::OK, said).await
        }
        Err(problem) => refusal(&state, &caller, &slug, &problem).await,
    }
}

/// `POST /customers/{customer}/policy`: the whole policy as the form states it.
pub async fn policy(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Posted {
        caller,
        form,
        headers,
    }: Posted,
) -> Response {
    let customer = match in_scope(&state, &caller, &slug).await {
        Ok(customer) => customer,
        Err(problem) => return refused(&problem),
    };
    if form.text("policy_version") != policy_version(&customer.policy) {
        let stale = Problem::of(crate::http::problem::ProblemKind::Conflict).detail(
            "the policy was changed since this page was opened; it is shown as it is now, make your change again",
        );
        return refusal(&state, &caller, &slug, &stale).await;
    }
    let asked = match policy_asked(&form, &customer) {
        Ok(asked) => asked,
        Err(problem) => return refusal(&state, &caller, &slug, &problem).await,
    };
    match change_policy(&state, &caller, &customer, asked, &headers).await {
        Ok(_) => see_other(&format!("/customers/{slug}")),
        Err(problem) => refusal(&state, &caller, &slug, &problem).await,
    }
}

/// A short fingerprint of a policy, carried by the form, so saving a page opened before
/// someone else's change cannot silently undo it.
fn policy_version(policy: &crate::customers::Policy) -> String {
    use sha2::Digest;
    let stated = serde_json::to_vec(policy).unwrap_or_default();
    const_hex::encode(&sha2::Sha256::digest(&stated)[..8])
}

/// The policy the form states; what it does not show (the Falcon webhook's signed string, the
/// customer's notice webhook) stays.
fn policy_asked(form: &Form, customer: &Customer) -> Result<PolicyView, Problem> {
    let limit = form.trimmed("max_actions_per_hour");
    let max_actions_per_hour = limit.parse::<u32>().map_err(|_| {
        Problem::invalid_input(format!(
            "the hourly limit must be a whole number from 1 to 10000, not `{limit}`"
        ))
    })?;
    Ok(PolicyView {
        protected: form
            .text("protected")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
        max_actions_per_hour,
        revoke_sessions: form.checked("revoke_sessions"),
        auto_disable: form.trimmed("auto_disable"),
        contact: form.optional("contact"),
        webhook_signature: Some(customer.policy.webhook_signature.as_str().to_owned()),
        notify: Some(form.trimmed("notify")).filter(|mode| !mode.is_empty()),
        webhook_url: customer.policy.webhook_url.clone(),
    })
}

/// The customer's page again, saying why the form was refused; a refusal of the request
/// itself (no session, another customer) is the usual refused page.
async fn refusal(state: &AppState, caller: &Caller, slug: &str, problem: &Problem) -> Response {
    if super::ends_the_request(problem) {
        return refused(problem);
    }
    let status = super::status_of(problem);
    let said = Said {
        refusal: Some(problem_text(problem)),
        ..Said::default()
    };
    show(state, caller, slug, status, said).await
}
