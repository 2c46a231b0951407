//! The point reads on the hot paths (a customer as an action or a webhook finds it), read
//! straight from SQLite on the caller's thread; the SQL is the text sqlx runs on PostgreSQL.

use rusqlite::{Connection, Row};

use super::domain_sql::{CustomerRecord, SELECT_CUSTOMER};
use super::onboarding_sql::{CUSTOMER_WITH_SECRETS, CustomerSecretRow};
use super::sqlite_direct::{prepared, query_first};

/// The customer `slug`, as stored.
pub(super) fn customer(conn: &Connection, slug: &str) -> rusqlite::Result<Option<CustomerRecord>> {
    query_first(conn, SELECT_CUSTOMER, &[&slug], customer_record)
}

/// The customer `slug` with each of its webhook secrets valid at `now`, newest first (one row
/// without a secret when it has none).
pub(super) fn customer_with_secrets(
    conn: &Connection,
    slug: &str,
    now: &str,
) -> rusqlite::Result<Vec<CustomerSecretRow>> {
    let mut statement = prepared(conn, CUSTOMER_WITH_SECRETS, &[&slug, &now])?;
    let mut rows = statement.raw_query();
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(CustomerSecretRow {
            customer: customer_record(row)?,
            secret_id: row.get(10)?,
            secret: row.get(11)?,
            secret_created_at: row.get(12)?,
            secret_expires_at: row.get(13)?,
        });
    }
    Ok(found)
}

/// A customer's columns, first in the row in `SELECT_CUSTOMER`'s order.
fn customer_record(row: &Row<'_>) -> rusqlite::Result<CustomerRecord> {
    Ok(CustomerRecord {
        slug: row.get(0)?,
        name: row.get(1)?,
        domain: row.get(2)?,
        tenant_id: row.get(3)?,
        policy: row.get(4)?,
        created_at: row.get(5)?,
        connection_ready: row.get(6)?,
        connection_detail: row.get(7)?,
        connection_checked_at: row.get(8)?,
        connection_ok_at: row.get(9)?,
    })
}
