//! The audit page (auditors and admins): the export form, which downloads the file through the
//! API's own export, and the public key with how a customer checks an export without trusting
//! us.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::forms::Posted;
use super::frame::Frame;
use super::{AppState, html_page, problem_text, refused};
use crate::auth::Permission;
use crate::http::audit::{ExportQuery, export_download};
use crate::http::caller::Caller;
use crate::http::problem::Problem;
use crate::reports::export::Format;

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    frame: Option<Frame>,
    csrf_token: String,
    refusal: Option<String>,
    customers: Vec<String>,
    formats: Vec<&'static str>,
    key_id: String,
    public_key: String,
    pem: String,
}

/// `GET /audit`.
pub async fn page(State(state): State<AppState>, caller: Result<Caller, Problem>) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(problem) => return refused(&problem),
    };
    show(&state, &caller, StatusCode::OK, None).await
}

async fn show(
    state: &AppState,
    caller: &Caller,
    status: StatusCode,
    refusal: Option<String>,
) -> Response {
    let gathered = async {
        caller.require(Permission::ExportAudit)?;
        let customers = state.store.customers().await.map_err(Problem::from)?;
        let key = state.audit_key.public_key();
        Ok::<_, Problem>(AuditPage {
            frame: Frame::of(caller, "/audit"),
            csrf_token: super::csrf_of(caller),
            refusal,
            customers: customers
                .iter()
                .filter(|c| caller.analyst.customers.covers(&c.slug))
                .map(|c| c.slug.to_string())
                .collect(),
            formats: Format::ALL.iter().map(|f| f.as_str()).collect(),
            key_id: key.key_id.to_string(),
            public_key: key.to_base64(),
            pem: key.to_pem().map_err(Problem::from)?,
        })
    };
    match gathered.await {
        Ok(page) => html_page(status, &page),
        Err(problem) => refused(&problem),
    }
}

/// `POST /audit/export`: the form's customer, period and format, answered with the file. A
/// POST, because an export is itself written into the audit log.
pub async fn export(
    State(state): State<AppState>,
    Posted { caller, form, .. }: Posted,
) -> Response {
    let query = ExportQuery {
        from: form.optional("from"),
        to: form.optional("to"),
        format: form.optional("format"),
    };
    match export_download(&state, &caller, form.text("customer"), &query).await {
        Ok(download) => download,
        Err(problem) if super::ends_the_request(&problem) => refused(&problem),
        Err(problem) => {
            let status = super::status_of(&problem);
            show(&state, &caller, status, Some(problem_text(&problem))).await
        }
    }
}
