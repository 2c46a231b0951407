//! The admin page: customers (add one by its domain; its own page has the consent link, the
//! connection test and the policy) and analysts (enroll, disable or enable, reset MFA, rotate
//! the API token). Every change needs the admin's one-time code and is written to the audit log
//! as the CLI's are. Only an admin of every customer may make them, so no admin can grant a
//! scope wider than their own.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};

use super::forms::Posted;
use super::frame::Frame;
use super::home::connection_light;
use super::{AppState, html_page, problem_text, refused, see_other};
use crate::auth::analysts::AnalystRecord;
use crate::auth::{Permission, Role, Scope};
use crate::domain::analyst::AnalystStatus;
use crate::http::caller::Caller;
use crate::http::problem::{Problem, ProblemKind};

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    frame: Option<Frame>,
    csrf_token: String,
    refusal: Option<String>,
    notice: Option<String>,
    customers: Vec<CustomerRow>,
    analysts: Vec<AnalystRow>,
    roles: [&'static str; 4],
}

struct CustomerRow {
    slug: String,
    name: String,
    domain: String,
    light: &'static str,
    connection: String,
}

struct AnalystRow {
    id: String,
    email: String,
    name: String,
    role: &'static str,
    scope: String,
    status: &'static str,
    active: bool,
}

/// What is shown once after an enrollment, a reset or a rotation: never stored, never again.
#[derive(Template)]
#[template(path = "console/credentials.html")]
struct CredentialsPage {
    frame: Option<Frame>,
    email: String,
    headline: &'static str,
    token: Option<String>,
    otpauth_uri: Option<String>,
    qr_svg: Option<String>,
}

/// `GET /admin`.
pub async fn page(State(state): State<AppState>, caller: Result<Caller, Problem>) -> Response {
    match caller {
        Ok(caller) => show(&state, &caller, StatusCode::OK, Said::default()).await,
        Err(problem) => refused(&problem),
    }
}

#[derive(Default)]
struct Said {
    notice: Option<String>,
    refusal: Option<String>,
}

async fn show(state: &AppState, caller: &Caller, status: StatusCode, said: Said) -> Response {
    let gathered = async {
        require_admin(caller)?;
        let customers = state.store.customers().await.map_err(Problem::from)?;
        let analysts = state.store.analysts().await.map_err(Problem::from)?;
        Ok::<_, Problem>(AdminPage {
            frame: Frame::of(caller, "/admin"),
            csrf_token: super::csrf_of(caller),
            refusal: said.refusal,
            notice: said.notice,
            customers: customers.iter().map(customer_row).collect(),
            analysts: analysts.iter().filter_map(analyst_row).collect(),
            roles: Role::ALL.map(Role::as_str),
        })
    };
    match gathered.await {
        Ok(page) => html_page(status, &page),
        Err(problem) => refused(&problem),
    }
}

fn customer_row(customer: &crate::customers::Customer) -> CustomerRow {
    let (light, connection, _) = connection_light(customer);
    CustomerRow {
        slug: customer.slug.to_string(),
        name: customer.name.clone(),
        domain: customer.domain.clone(),
        light,
        connection,
    }
}

fn analyst_row(record: &AnalystRecord) -> Option<AnalystRow> {
    let analyst = record.analyst().ok()?;
    Some(AnalystRow {
        id: analyst.id.to_string(),
        email: analyst.email.clone(),
        name: analyst.display_name.clone(),
        role: analyst.role.as_str(),
        scope: analyst.customers.names().join(", "),
        status: analyst.status.as_str(),
        active: record.is_active(),
    })
}

/// Admin pages are for admins of every customer.
fn require_admin(caller: &Caller) -> Result<(), Problem> {
    caller.require(Permission::ManageAnalysts)?;
    caller.require(Permission::ManageCustomers)?;
    if caller.analyst.customers != Scope::All {
        return Err(Problem::of(ProblemKind::Forbidden)
            .detail("only an admin of every customer may manage customers and analysts"));
    }
    Ok(())
}

/// Spends the admin's one-time code, once the form's fields have been checked (a typo must
/// not cost the code).
async fn spend_code(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(), Response> {
    match caller.second_factor(state, headers, None).await {
        Ok(_) => Ok(()),
        Err(problem) => Err(refusal(state, caller, &problem).await),
    }
}

/// The admin page again, saying why; a refusal of the request itself is the refused page.
async fn refusal(state: &AppState, caller: &Caller, problem: &Problem) -> Response {
    if super::ends_the_request(problem) || problem.status == 403 {
        return refused(problem);
    }
    let status = super::status_of(problem);
    let said = Said {
        refusal: Some(problem_text(problem)),
        ..Said::default()
    };
    show(state, caller, status, said).await
}

/// `POST /admin/customers`: a customer by its slug, name and e-mail domain (its tenant is
/// found from the domain), then its page, where the consent link is made.
pub async fn add_customer(State(state): State<AppState>, posted: Posted) -> Response {
    // Admin forms are for admins of every customer.
    if let Err(problem) = require_admin(&posted.caller) {
        return refused(&problem);
    }
    let Posted {
        caller,
        form,
        headers,
    } = posted;
    let asked = crate::customers::NewCustomer {
        slug: form.text("slug"),
        name: form.text("name"),
        domain: form.text("domain"),
        tenant_id: None,
    };
    if let Err(e) = asked.check("name") {
        return refusal(&state, &caller, &Problem::from(&e)).await;
    }
    if let Err(page) = spend_code(&state, &caller, &headers).await {
        return page;
    }
    let authority = &state.settings.entra.authority_url;
    let added = crate::customers::register(
        state.store.as_ref(),
        authority,
        &asked,
        "name",
        &caller.actor(),
    )
    .await;
    match added {
        Ok(customer) => see_other(&format!("/customers/{}", customer.slug)),
        Err(e) => refusal(&state, &caller, &Problem::from(&e)).await,
    }
}

/// `POST /admin/analysts`: enrolls an analyst; the token and the authenticator's QR code are
/// shown on the answer, once.
pub async fn enroll(State(state): State<AppState>, posted: Posted) -> Response {
    // Admin forms are for admins of every customer.
    if let Err(problem) = require_admin(&posted.caller) {
        return refused(&problem);
    }
    let Posted {
        caller,
        form,
        headers,
    } = posted;
    let checked = async {
        let role: Role = form.trimmed("role").parse()?;
        let scope: Scope = form.trimmed("customers").parse()?;
        crate::auth::analysts::normalize_email(form.text("email"))?;
        crate::customers::require_known(state.store.as_ref(), &scope).await?;
        Ok::<_, crate::Error>((role, scope))
    };
    let (role, scope) = match checked.await {
        Ok(checked) => checked,
        Err(e) => return refusal(&state, &caller, &Problem::from(&e)).await,
    };
    if let Err(page) = spend_code(&state, &caller, &headers).await {
        return page;
    }
    let name = form.optional("name");
    let enrolled = state
        .auth
        .enroll(
            form.text("email"),
            name.as_deref(),
            role,
            scope,
            &caller.actor(),
        )
        .await;
    match enrolled {
        Ok(enrolled) => credentials(
            &caller,
            &enrolled.analyst.email,
            "Analyst enrolled",
            Some(&enrolled.token),
            Some(&enrolled.otpauth_uri),
        ),
        Err(e) => refusal(&state, &caller, &Problem::from(&e)).await,
    }
}

/// What an admin may change about an analyst (the form's `change`).
#[derive(Clone, Copy)]
enum Change {
    Disable,
    Enable,
    ResetMfa,
    RotateToken,
}

impl Change {
    fn parse(text: &str) -> Option<Change> {
        Some(match text {
            "disable" => Change::Disable,
            "enable" => Change::Enable,
            "reset-mfa" => Change::ResetMfa,
            "rotate-token" => Change::RotateToken,
            _ => return None,
        })
    }
}

/// `POST /admin/analysts/{id}`: one change (`change`), with the admin's code.
pub async fn change_analyst(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Response {
    // Admin forms are for admins of every customer.
    if let Err(problem) = require_admin(&posted.caller) {
        return refused(&problem);
    }
    let Posted {
        caller,
        form,
        headers,
    } = posted;
    let checked = async {
        let change = Change::parse(form.text("change")).ok_or_else(|| {
            Problem::invalid_input("`change` is one of disable, enable, reset-mfa or rotate-token")
        })?;
        let record = find_analyst(&state, &id).await?;
        if matches!(change, Change::Disable) && record.id == caller.analyst.id.to_string() {
            return Err(Problem::invalid_input(
                "you cannot disable yourself: ask another admin, so one always remains",
            ));
        }
        Ok((change, record))
    };
    let (change, record) = match checked.await {
        Ok(checked) => checked,
        Err(problem) => return refusal(&state, &caller, &problem).await,
    };
    if let Err(page) = spend_code(&state, &caller, &headers).await {
        return page;
    }
    match apply(&state, &caller, &record, change).await {
        Ok(Some(page)) => page,
        Ok(None) => see_other("/admin"),
        Err(e) => refusal(&state, &caller, &Problem::from(&e)).await,
    }
}

async fn find_analyst(state: &AppState, id: &str) -> Result<AnalystRecord, Problem> {
    let not_found = || Problem::not_found().detail(format!("there is no analyst {id}"));
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    state
        .store
        .analyst(id)
        .await
        .map_err(Problem::from)?
        .ok_or_else(not_found)
}

/// Makes the change; the page showing a new credential once, if it made one.
async fn apply(
    state: &AppState,
    caller: &Caller,
    record: &AnalystRecord,
    change: Change,
) -> crate::Result<Option<Response>> {
    let actor = caller.actor();
    let auth = &state.auth;
    Ok(match change {
        Change::Disable => {
            auth.set_status(record, AnalystStatus::Disabled, &actor)
                .await?;
            None
        }
        Change::Enable => {
            auth.set_status(record, AnalystStatus::Active, &actor)
                .await?;
            None
        }
        Change::ResetMfa => {
            let uri = auth.reset_mfa(record, &actor).await?;
            let headline = "New authenticator secret";
            Some(credentials(
                caller,
                &record.email,
                headline,
                None,
                Some(&uri),
            ))
        }
        Change::RotateToken => {
            let token = auth.rotate_token(record, &actor).await?;
            let headline = "New API token";
            Some(credentials(
                caller,
                &record.email,
                headline,
                Some(&token),
                None,
            ))
        }
    })
}

/// The page that shows new credentials once (never cached; nothing of it is stored).
fn credentials(
    caller: &Caller,
    email: &str,
    headline: &'static str,
    token: Option<&SecretString>,
    otpauth_uri: Option<&SecretString>,
) -> Response {
    let qr_svg = match otpauth_uri.map(|uri| crate::auth::mfa::svg_qr(uri.expose_secret())) {
        Some(Ok(svg)) => Some(svg),
        Some(Err(e)) => return super::error_page(&e),
        None => None,
    };
    html_page(
        StatusCode::OK,
        &CredentialsPage {
            frame: Frame::of(caller, "/admin"),
            email: email.to_owned(),
            headline,
            token: token.map(|t| t.expose_secret().to_owned()),
            otpauth_uri: otpauth_uri.map(|u| u.expose_secret().to_owned()),
            qr_svg,
        },
    )
}
