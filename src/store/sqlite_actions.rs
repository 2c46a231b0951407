//! An action's admission and outcome on the SQLite writer's plain connection: the statements
//! `action_steps` names, run by rusqlite in the direct batch, each one's SQL shared with sqlx.

use async_trait::async_trait;
use rusqlite::Row;
use rusqlite::types::ToSql;

use super::action_rows::ActionRow;
use super::action_steps::{self, ActionStatements, DecisionUpdate, OutcomeUpdate};
use super::sqlite_direct::{DirectBatch, failed, prepared, query_first};
use crate::audit::append::{Appended, Sealer};
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::Result;

#[async_trait]
impl ActionStatements for DirectBatch<'_> {
    async fn lock_chain(&mut self, _chain: &ChainId) -> Result<()> {
        // The batch's BEGIN IMMEDIATE already holds SQLite's one write lock.
        Ok(())
    }

    async fn append(
        &mut self,
        sealer: &Sealer,
        chain: &ChainId,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<Appended> {
        self.seal(sealer, chain, actor, event)
    }

    async fn action_by_key(&mut self, customer: &str, key: &str) -> Result<Option<ActionRow>> {
        let sql = action_steps::action_by_key_sql();
        query_first(self.conn(), &sql, &[&customer, &key], action_row).map_err(failed)
    }

    async fn recent_actions(&mut self, customer: &str, since: &str) -> Result<i64> {
        let values: [&dyn ToSql; 2] = [&customer, &since];
        let recent = query_first(self.conn(), action_steps::RECENT_ACTIONS, &values, |row| {
            row.get(0)
        });
        Ok(recent.map_err(failed)?.unwrap_or(0))
    }

    async fn insert_action(&mut self, r: &ActionRow, owner_run: Option<String>) -> Result<()> {
        let sql = action_steps::insert_action_sql();
        let values: [&dyn ToSql; 25] = [
            &r.id,
            &r.customer,
            &r.operation,
            &r.account,
            &r.target_id,
            &r.state,
            &r.reason,
            &r.ticket,
            &r.revoke_sessions,
            &r.idempotency_key,
            &r.request_hash,
            &r.actor,
            &r.detail,
            &r.warnings,
            &r.graph,
            &r.before_state,
            &r.after_state,
            &r.requested_seq,
            &r.outcome_seq,
            &r.created_at,
            &r.lease_until,
            &r.finished_at,
            &r.duration_ms,
            &r.denial,
            &owner_run,
        ];
        let mut statement = prepared(self.conn(), &sql, &values).map_err(failed)?;
        match statement.raw_execute() {
            Err(e) if unique_violation(&e) => Err(action_steps::key_taken()),
            other => other.map(|_| ()).map_err(failed),
        }
    }

    async fn finish_action(&mut self, o: &OutcomeUpdate) -> Result<Option<ActionRow>> {
        let sql = action_steps::finish_action_sql();
        let values: [&dyn ToSql; 12] = [
            &o.id,
            &o.state,
            &o.detail,
            &o.warnings,
            &o.graph,
            &o.before,
            &o.after,
            &o.target_id,
            &o.finished_at,
            &o.duration_ms,
            &o.outcome_seq,
            &o.denial,
        ];
        query_first(self.conn(), &sql, &values, action_row).map_err(failed)
    }

    async fn set_target(&mut self, detection: &str, target_id: &str, upn: &str) -> Result<()> {
        let values: [&dyn ToSql; 4] = [&detection, &target_id, &upn, &None::<&str>];
        let mut statement =
            prepared(self.conn(), action_steps::SET_TARGET, &values).map_err(failed)?;
        statement.raw_execute().map_err(failed)?;
        Ok(())
    }

    async fn decide_detection(&mut self, d: &DecisionUpdate) -> Result<bool> {
        let values: [&dyn ToSql; 7] = [
            &d.id,
            &d.state,
            &d.action_id,
            &d.decided_by,
            &d.decided_at,
            &d.reason,
            &d.customer,
        ];
        let decided = query_first(self.conn(), action_steps::DECIDE_DETECTION, &values, |_| {
            Ok(())
        });
        Ok(decided.map_err(failed)?.is_some())
    }

    async fn detection_state(&mut self, id: &str) -> Result<String> {
        query_first(self.conn(), action_steps::DETECTION_STATE, &[&id], |row| {
            row.get(0)
        })
        .map_err(failed)?
        .ok_or_else(|| failed(rusqlite::Error::QueryReturnedNoRows))
    }
}

fn unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _)
        if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// A row selected as `ACTION_COLUMNS`.
fn action_row(row: &Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok(ActionRow {
        id: row.get(0)?,
        customer: row.get(1)?,
        operation: row.get(2)?,
        account: row.get(3)?,
        target_id: row.get(4)?,
        state: row.get(5)?,
        reason: row.get(6)?,
        ticket: row.get(7)?,
        revoke_sessions: row.get(8)?,
        idempotency_key: row.get(9)?,
        request_hash: row.get(10)?,
        actor: row.get(11)?,
        detail: row.get(12)?,
        warnings: row.get(13)?,
        graph: row.get(14)?,
        before_state: row.get(15)?,
        after_state: row.get(16)?,
        requested_seq: row.get(17)?,
        outcome_seq: row.get(18)?,
        created_at: row.get(19)?,
        lease_until: row.get(20)?,
        finished_at: row.get(21)?,
        duration_ms: row.get(22)?,
        denial: row.get(23)?,
    })
}
