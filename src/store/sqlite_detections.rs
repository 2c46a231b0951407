//! A Falcon detection's two writes on the SQLite writer's plain connection: storing it as it
//! arrives, and storing the account it was matched to. The SQL is `detections_sql`'s.

use rusqlite::types::ToSql;
use rusqlite::{Connection, Row};

use super::detection_rows::DetectionRow;
use super::detections_sql::{self, TargetUpdate};
use super::sqlite_direct::query_first;

/// Inserts the detection unless its `composite_id` is known for the customer; `true` when it
/// was inserted.
pub(super) fn insert_new(conn: &Connection, d: &DetectionRow) -> rusqlite::Result<bool> {
    let inserted = query_first(conn, &detections_sql::insert_new_sql(), &columns(d), |_| {
        Ok(())
    })?;
    Ok(inserted.is_some())
}

/// The stored detection with the same customer and `composite_id` as `d`.
pub(super) fn existing(conn: &Connection, d: &DetectionRow) -> rusqlite::Result<DetectionRow> {
    let sql = detections_sql::existing_sql();
    query_first(conn, &sql, &[&d.customer, &d.composite_id], detection_row)?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// Stores the account a pending detection was matched to; the row as updated, if still pending.
pub(super) fn set_target(
    conn: &Connection,
    update: &TargetUpdate,
) -> rusqlite::Result<Option<DetectionRow>> {
    let values: [&dyn ToSql; 4] = [
        &update.id,
        &update.target_id,
        &update.target_upn,
        &update.pending_reason,
    ];
    query_first(
        conn,
        &detections_sql::set_target_sql(),
        &values,
        detection_row,
    )
}

/// A row's values in `DETECTION_COLUMNS` order.
fn columns(d: &DetectionRow) -> [&dyn ToSql; 24] {
    [
        &d.id,
        &d.customer,
        &d.composite_id,
        &d.detection_id,
        &d.severity,
        &d.tactic,
        &d.technique,
        &d.account_upn,
        &d.account_sid,
        &d.account_domain,
        &d.falcon_host_link,
        &d.cid,
        &d.falcon_time,
        &d.assurance,
        &d.state,
        &d.target_id,
        &d.target_upn,
        &d.pending_reason,
        &d.action_id,
        &d.decided_by,
        &d.decided_at,
        &d.decision_reason,
        &d.received_at,
        &d.received_run,
    ]
}

/// A row selected as `DETECTION_COLUMNS`.
fn detection_row(row: &Row<'_>) -> rusqlite::Result<DetectionRow> {
    Ok(DetectionRow {
        id: row.get(0)?,
        customer: row.get(1)?,
        composite_id: row.get(2)?,
        detection_id: row.get(3)?,
        severity: row.get(4)?,
        tactic: row.get(5)?,
        technique: row.get(6)?,
        account_upn: row.get(7)?,
        account_sid: row.get(8)?,
        account_domain: row.get(9)?,
        falcon_host_link: row.get(10)?,
        cid: row.get(11)?,
        falcon_time: row.get(12)?,
        assurance: row.get(13)?,
        state: row.get(14)?,
        target_id: row.get(15)?,
        target_upn: row.get(16)?,
        pending_reason: row.get(17)?,
        action_id: row.get(18)?,
        decided_by: row.get(19)?,
        decided_at: row.get(20)?,
        decision_reason: row.get(21)?,
        received_at: row.get(22)?,
        received_run: row.get(23)?,
    })
}
