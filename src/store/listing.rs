//! Newest-first listings (actions, detections): one builder for the queries both tables share.
//! Rows come strictly in `(time, id)` descending order and a page starts strictly after the
//! cursor in that order, so equal times never make a page skip or repeat a row; the indexes of
//! migration 0009 serve each shape without sorting the table.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::domain::CustomerSlug;
use crate::domain::cursor::ListCursor;
use crate::error::Result;

/// A query under construction: `select` (`SELECT columns FROM table`) and the conditions added
/// so far, each value bound as text in placeholder order.
pub(super) struct Listing {
    select: String,
    /// The placeholders of the customers a row must belong to; `None`: any customer.
    customers: Option<Vec<String>>,
    conditions: Vec<String>,
    binds: Vec<String>,
    /// Whether the rows are one account's (few, found through the account indexes).
    naming: bool,
}

impl Listing {
    pub fn new(select: String) -> Listing {
        Listing {
            select,
            customers: None,
            conditions: Vec::new(),
            binds: Vec::new(),
            naming: false,
        }
    }

    /// Binds `value` and returns its placeholder.
    fn bind(&mut self, value: String) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// Rows of these customers (an analyst's scope); `None` adds nothing, and an empty list
    /// matches nothing rather than everything.
    pub fn customers(mut self, customers: Option<&[CustomerSlug]>) -> Listing {
        let placeholders = customers.map(|list| {
            list.iter()
                .map(|c| self.bind(c.to_string()))
                .collect::<Vec<_>>()
        });
        self.customers = placeholders;
        self
    }

    /// `column = value` when there is a value.
    pub fn equal(mut self, column: &str, value: Option<&str>) -> Listing {
        if let Some(value) = value {
            let p = self.bind(value.to_owned());
            self.conditions.push(format!("{column} = {p}"));
        }
        self
    }

    /// Rows naming one of `names`: the account as typed (case-insensitively, hence the
    /// `lower(account)` index; UPNs are ASCII, the only letters both databases' `lower` agree on)
    /// or the Entra object id, which Graph writes in lower case.
    pub fn naming(mut self, names: Option<&[String]>) -> Listing {
        if let Some(names) = names {
            let lowered = names.iter().map(|n| n.to_ascii_lowercase()).collect();
            let condition = match self.placeholders(lowered) {
                Some(list) => format!("(lower(account) IN ({list}) OR target_id IN ({list}))"),
                None => "1 = 0".to_owned(),
            };
            self.conditions.push(condition);
            self.naming = true;
        }
        self
    }

    /// Rows strictly older than the cursor in `(time_column, id)` order. A row value, which both
    /// databases compare column by column and match against a `(…, time, id)` index.
    pub fn before(mut self, time_column: &str, cursor: Option<&ListCursor>) -> Listing {
        if let Some(cursor) = cursor {
            let time = self.bind(cursor.time.to_string());
            let id = self.bind(cursor.id.to_string());
            self.conditions
                .push(format!("({time_column}, id) < ({time}, {id})"));
        }
        self
    }

    fn placeholders(&mut self, values: Vec<String>) -> Option<String> {
        let list: Vec<String> = values.into_iter().map(|v| self.bind(v)).collect();
        (!list.is_empty()).then(|| list.join(", "))
    }

    /// The statement with every condition, `customer` first when given, then `tail`.
    fn filtered(&self, customer: Option<String>, tail: &str) -> String {
        let conditions: Vec<&str> = customer
            .iter()
            .chain(&self.conditions)
            .map(String::as_str)
            .collect();
        let mut sql = self.select.clone();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push(' ');
        sql.push_str(tail);
        sql
    }

    /// The newest `limit` rows by `time_column`. The limit is written into the statement, not
    /// bound: PostgreSQL's plan for a prepared statement then knows how few rows are wanted
    /// (for a bound limit it guesses a tenth of the table, and may walk the whole time index).
    pub fn newest_first(&self, time_column: &str, limit: u32) -> String {
        let order = format!("ORDER BY {time_column} DESC, id DESC LIMIT {limit}");
        match self.customers.as_deref() {
            // Each customer's newest rows from its own index range, then the newest of those:
            // `customer IN (…)` would read and sort every row of every customer in the scope.
            // An account's few rows come from the account indexes and are sorted, whatever the
            // scope: `customer || ''` keeps SQLite, which has no statistics to tell it a
            // customer has thousands of rows, from walking them all in time order instead.
            scope if self.naming => self.filtered(
                scope.map(|s| customer_condition("customer || ''", s)),
                &order,
            ),
            Some(many @ [_, _, ..]) => {
                let branches: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(n, p)| {
                        let branch = self.filtered(Some(format!("customer = {p}")), &order);
                        format!("SELECT * FROM ({branch}) AS customer_{n}")
                    })
                    .collect();
                format!(
                    "SELECT * FROM ({}) AS scope {order}",
                    branches.join(" UNION ALL ")
                )
            }
            scope => self.filtered(scope.map(|s| customer_condition("customer", s)), &order),
        }
    }

    /// The rows [`Self::newest_first`] names, at most `limit`.
    pub async fn fetch<DB, R>(
        &self,
        pool: &Pool<DB>,
        time_column: &str,
        limit: u32,
    ) -> Result<Vec<R>>
    where
        DB: Database,
        for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'t> String: Encode<'t, DB> + Type<DB>,
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let sql = self.newest_first(time_column, limit);
        let mut query = sqlx::query_as::<DB, R>(sqlx::AssertSqlSafe(sql));
        for value in &self.binds {
            query = query.bind(value.clone());
        }
        Ok(query.fetch_all(pool).await?)
    }

    /// One row per group of `group_column` (the select names it and an aggregate).
    pub async fn fetch_grouped<DB, R>(&self, pool: &Pool<DB>, group_column: &str) -> Result<Vec<R>>
    where
        DB: Database,
        for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'t> String: Encode<'t, DB> + Type<DB>,
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let customers = self
            .customers
            .as_deref()
            .map(|s| customer_condition("customer", s));
        let sql = self.filtered(customers, &format!("GROUP BY {group_column}"));
        let mut query = sqlx::query_as::<DB, R>(sqlx::AssertSqlSafe(sql));
        for value in &self.binds {
            query = query.bind(value.clone());
        }
        Ok(query.fetch_all(pool).await?)
    }

    #[cfg(test)]
    pub fn binds(&self) -> &[String] {
        &self.binds
    }
}

/// The customer (`column`) among the placeholders; none matches nothing.
fn customer_condition(column: &str, placeholders: &[String]) -> String {
    match placeholders {
        [] => "1 = 0".to_owned(),
        [one] => format!("{column} = {one}"),
        many => format!("{column} IN ({})", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detections() -> Listing {
        Listing::new("SELECT id FROM detections".to_owned())
    }

    #[test]
    fn an_empty_scope_lists_nothing_and_no_filter_lists_all() {
        assert_eq!(
            detections()
                .customers(Some(&[]))
                .newest_first("received_at", 5),
            "SELECT id FROM detections WHERE 1 = 0 ORDER BY received_at DESC, id DESC LIMIT 5"
        );
        assert_eq!(
            detections().customers(None).newest_first("received_at", 5),
            "SELECT id FROM detections ORDER BY received_at DESC, id DESC LIMIT 5"
        );
    }

    #[test]
    fn a_page_starts_strictly_after_its_cursor_and_placeholders_follow_the_binds() {
        let cursor = ListCursor::new(
            "2026-11-27T09:40:05.123456Z".parse().unwrap(),
            uuid::Uuid::from_u128(7),
        );
        let listing = detections()
            .customers(Some(&["contoso".parse().unwrap()]))
            .equal("state", Some("pending"))
            .naming(Some(&["Alice@Contoso.example".to_owned()]))
            .before("received_at", Some(&cursor));
        assert_eq!(
            listing.newest_first("received_at", 5),
            "SELECT id FROM detections WHERE customer || '' = $1 AND state = $2 \
             AND (lower(account) IN ($3) OR target_id IN ($3)) \
             AND (received_at, id) < ($4, $5) ORDER BY received_at DESC, id DESC LIMIT 5"
        );
        assert_eq!(
            listing.binds(),
            [
                "contoso",
                "pending",
                "alice@contoso.example",
                "2026-11-27T09:40:05.123456Z",
                "00000000-0000-0000-0000-000000000007"
            ]
        );
        let two = detections()
            .customers(Some(&[
                "contoso".parse().unwrap(),
                "fabrikam".parse().unwrap(),
            ]))
            .equal("state", Some("pending"));
        assert_eq!(
            two.newest_first("received_at", 5),
            "SELECT * FROM (\
             SELECT * FROM (SELECT id FROM detections WHERE customer = $1 AND state = $3 \
             ORDER BY received_at DESC, id DESC LIMIT 5) AS customer_0 UNION ALL \
             SELECT * FROM (SELECT id FROM detections WHERE customer = $2 AND state = $3 \
             ORDER BY received_at DESC, id DESC LIMIT 5) AS customer_1\
             ) AS scope ORDER BY received_at DESC, id DESC LIMIT 5"
        );
        assert!(
            detections()
                .naming(Some(&[]))
                .newest_first("received_at", 5)
                .contains("WHERE 1 = 0")
        );
    }
}
