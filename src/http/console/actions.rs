//! The actions page: every action across the analyst's customers, newest first, a page at a
//! time, narrowed by customer, state, operation and account in a plain GET form. The "Older"
//! link carries the filters and the position of the last row shown, so a page never skips or
//! repeats a row, however many actions share a time.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::accounts::url_path;
use super::frame::Frame;
use super::{AppState, html_page, refused, shown};
use crate::audit::event::Operation;
use crate::auth::Permission;
use crate::domain::action::{ActionRecord, ActionState};
use crate::domain::cursor::ListCursor;
use crate::http::caller::Caller;
use crate::http::problem::{Problem, ProblemKind};
use crate::store::ActionFilter;

const PATH: &str = "/actions";
/// Rows per page.
const PAGE_ROWS: usize = 50;
/// Longer than any UPN or object id; a longer value is a mistake, not an account.
const ACCOUNT_MAX_CHARS: usize = 320;

#[derive(Template)]
#[template(path = "console/actions.html")]
struct ActionsPage {
    frame: Option<Frame>,
    customers: Vec<Choice>,
    states: Vec<Choice>,
    operations: Vec<Choice>,
    account: String,
    /// Whether any filter is set (the empty list then says so).
    filtered: bool,
    rows: Vec<Row>,
    older: Option<String>,
    newest: Option<String>,
}

/// One option of a select: its value, its words, and whether the request asked for it.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

struct Row {
    id: String,
    requested: String,
    customer: String,
    account: String,
    account_href: String,
    operation: &'static str,
    outcome: &'static str,
}

/// What the form and the page links ask for; empty fields mean "all".
#[derive(Default)]
struct Asked {
    customer: Option<String>,
    state: Option<ActionState>,
    operation: Option<Operation>,
    account: Option<String>,
    before: Option<ListCursor>,
}

impl Asked {
    /// Reads the query string; a value that does not parse is a 422 naming it. Unknown
    /// parameters are ignored, as a browser may add its own.
    fn parse(query: Option<&str>) -> Result<Asked, Problem> {
        let mut asked = Asked::default();
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_ref() {
                "customer" => asked.customer = Some(value.to_owned()),
                "state" => asked.state = Some(value.parse().map_err(Problem::invalid_input)?),
                "operation" => {
                    asked.operation = Some(Operation::parse_stored(value).ok_or_else(|| {
                        Problem::invalid_input(format!("`{value}` is not disable or enable"))
                    })?);
                }
                "account" if value.chars().count() > ACCOUNT_MAX_CHARS => {
                    return Err(Problem::invalid_input(format!(
                        "an account is at most {ACCOUNT_MAX_CHARS} characters"
                    )));
                }
                "account" => asked.account = Some(value.to_owned()),
                "before" => asked.before = Some(value.parse().map_err(Problem::invalid_input)?),
                _ => {}
            }
        }
        Ok(asked)
    }

    /// This list's address with the same filters, from `before` (`None`: the newest page).
    fn href(&self, before: Option<&ListCursor>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(customer) = &self.customer {
            query.append_pair("customer", customer);
        }
        if let Some(state) = self.state {
            query.append_pair("state", state.as_str());
        }
        if let Some(operation) = self.operation {
            query.append_pair("operation", operation.as_str());
        }
        if let Some(account) = &self.account {
            query.append_pair("account", account);
        }
        if let Some(before) = before {
            query.append_pair("before", &before.to_string());
        }
        match query.finish() {
            query if query.is_empty() => PATH.to_owned(),
            query => format!("{PATH}?{query}"),
        }
    }
}

/// `GET /actions`.
pub async fn actions_page(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    RawQuery(query): RawQuery,
) -> Response {
    let view = match caller {
        Ok(caller) => actions_view(&state, &caller, query.as_deref()).await,
        Err(problem) => Err(problem),
    };
    match view {
        Ok(page) => html_page(StatusCode::OK, &page),
        Err(problem) => refused(&problem),
    }
}

async fn actions_view(
    state: &AppState,
    caller: &Caller,
    query: Option<&str>,
) -> Result<ActionsPage, Problem> {
    caller.require(Permission::ReadActions)?;
    let asked = Asked::parse(query)?;
    let mut customers = state.store.customers().await.map_err(Problem::from)?;
    customers.retain(|c| caller.sees(c.slug.as_str()));
    let scope = caller.customer_filter(asked.customer.as_deref())?;
    // A customer in the scope that does not exist answers as one outside it.
    if let Some(slug) = &asked.customer
        && !customers.iter().any(|c| c.slug.as_str() == slug)
    {
        return Err(Problem::of(ProblemKind::CustomerNotFound));
    }
    let filter = ActionFilter {
        customers: scope,
        state: asked.state,
        operation: asked.operation,
        accounts: asked.account.clone().map(|a| vec![a]),
        before: asked.before,
        // One more than shown tells whether there is an older page.
        limit: u32::try_from(PAGE_ROWS + 1).unwrap_or(u32::MAX),
    };
    let mut records = state.store.actions(&filter).await.map_err(Problem::from)?;
    let older = if records.len() > PAGE_ROWS {
        records.truncate(PAGE_ROWS);
        records
            .last()
            .map(|last| asked.href(Some(&ListCursor::new(last.created_at, last.id))))
    } else {
        None
    };
    let customer_choices = customers
        .iter()
        .map(|c| Choice {
            value: c.slug.to_string(),
            label: format!("{} ({})", c.name, c.slug),
            selected: asked.customer.as_deref() == Some(c.slug.as_str()),
        })
        .collect();
    Ok(ActionsPage {
        frame: Frame::of(caller, PATH),
        customers: customer_choices,
        states: choices(
            ActionState::ALL.map(ActionState::as_str),
            asked.state.map(ActionState::as_str),
        ),
        operations: choices(
            [Operation::Disable, Operation::Enable].map(Operation::as_str),
            asked.operation.map(Operation::as_str),
        ),
        account: asked.account.clone().unwrap_or_default(),
        filtered: asked.customer.is_some()
            || asked.state.is_some()
            || asked.operation.is_some()
            || asked.account.is_some(),
        rows: records.iter().map(row).collect(),
        older,
        newest: asked.before.is_some().then(|| asked.href(None)),
    })
}

fn choices<const N: usize>(values: [&'static str; N], asked: Option<&str>) -> Vec<Choice> {
    values
        .into_iter()
        .map(|value| Choice {
            value: value.to_owned(),
            label: value.to_owned(),
            selected: asked == Some(value),
        })
        .collect()
}

fn row(action: &ActionRecord) -> Row {
    Row {
        id: action.id.to_string(),
        requested: shown(&action.created_at),
        customer: action.customer.to_string(),
        account: action.account.clone(),
        account_href: format!(
            "/customers/{}/accounts/{}",
            action.customer,
            url_path(&action.account)
        ),
        operation: action.operation.as_str(),
        outcome: action.state.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_carry_every_filter_and_empty_fields_mean_all() {
        let asked = Asked::parse(Some(
            "customer=contoso&state=failed&operation=&account=Alice%40Contoso.example&x=1",
        ))
        .unwrap();
        assert_eq!(asked.operation, None);
        assert_eq!(
            asked.href(None),
            "/actions?customer=contoso&state=failed&account=Alice%40Contoso.example"
        );
        assert_eq!(Asked::default().href(None), "/actions");
        for bad in ["state=finished", "operation=delete", "before=abc"] {
            let problem = Asked::parse(Some(bad)).err().unwrap();
            assert_eq!(problem.status, 422, "{bad}");
        }
    }
}
