//! Newest-first listings (actions, detections): one builder for the query both tables share,
//! narrowed to some customers and one state.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::domain::CustomerSlug;
use crate::error::Result;

/// What to list: `select` (`SELECT columns FROM table`) narrowed to `customers` (an empty scope
/// matches nothing rather than everything) and `state`, newest first by `time_column`.
pub(super) struct Listing<'a> {
    pub select: String,
    pub time_column: &'static str,
    pub customers: Option<&'a [CustomerSlug]>,
    pub state: Option<&'static str>,
    pub limit: u32,
}

impl Listing<'_> {
    /// The query; values are bound in the order customers, state, limit (see [`Self::binds`]).
    pub fn sql(&self) -> String {
        let mut n = 0;
        let mut clauses = Vec::new();
        if let Some(customers) = self.customers {
            let placeholders: Vec<String> = customers
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            clauses.push(if placeholders.is_empty() {
                "1 = 0".to_owned()
            } else {
                format!("customer IN ({})", placeholders.join(", "))
            });
        }
        if self.state.is_some() {
            n += 1;
            clauses.push(format!("state = ${n}"));
        }
        let mut sql = self.select.clone();
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY {} DESC, id LIMIT ${}",
            self.time_column,
            n + 1
        ));
        sql
    }

    /// The text values to bind before the limit, in placeholder order.
    pub fn binds(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .customers
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        values.extend(self.state.map(str::to_owned));
        values
    }

    /// The rows the listing names.
    pub async fn fetch<DB, R>(&self, pool: &Pool<DB>) -> Result<Vec<R>>
    where
        DB: Database,
        for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'t> String: Encode<'t, DB> + Type<DB>,
        for<'t> i64: Encode<'t, DB> + Type<DB>,
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let mut query = sqlx::query_as::<DB, R>(sqlx::AssertSqlSafe(self.sql()));
        for value in self.binds() {
            query = query.bind(value);
        }
        Ok(query.bind(i64::from(self.limit)).fetch_all(pool).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_scope_lists_nothing_and_no_filter_lists_all() {
        let none = Listing {
            select: "SELECT id FROM detections".to_owned(),
            time_column: "received_at",
            customers: Some(&[]),
            state: None,
            limit: 5,
        };
        assert_eq!(
            none.sql(),
            "SELECT id FROM detections WHERE 1 = 0 ORDER BY received_at DESC, id LIMIT $1"
        );
        let all = Listing {
            customers: None,
            ..none
        };
        assert_eq!(
            all.sql(),
            "SELECT id FROM detections ORDER BY received_at DESC, id LIMIT $1"
        );
    }
}
