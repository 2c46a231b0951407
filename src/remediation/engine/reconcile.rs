//! Reconciliation: settling actions whose run is gone (or whose lease ended) before their outcome
//! was recorded, from what Entra shows now, and carrying a fresh one through.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::{Attempt, Job, Remediator, enabled_word, interrupted, parse_id, state_of};
use crate::audit::event::Outcome;
use crate::customers::Customer;
use crate::domain::AccountRef;
use crate::error::{Error, Result};
use crate::graph::{GraphError, GraphUser};
use crate::remediation::action::{ActionRecord, Finish};
use crate::store::ActionFilter;

/// Interrupted actions settled at once, so a restart after a crash with many in flight settles
/// them in about one Graph round trip each, not one after another (Graph's per-tenant limits
/// still apply).
const RECONCILE_CONCURRENCY: usize = 128;

impl Remediator {
    /// Finishes every action whose owner is gone (or whose lease ran out) before recording an
    /// outcome: from what Entra says about the account now, carrying a fresh one through (see
    /// [`reconcile_one`](Self::reconcile_one)). Returns how many were settled.
    pub async fn reconcile(&self) -> Result<usize> {
        let stale = self.store.stale_actions(&self.takeover()).await?;
        let settled: Vec<Result<bool>> = futures::stream::iter(stale)
            .map(|record| self.settle_interrupted(record))
            .buffer_unordered(RECONCILE_CONCURRENCY)
            .collect()
            .await;
        let mut reconciled = 0;
        for result in settled {
            if result? {
                reconciled += 1;
            }
        }
        Ok(reconciled)
    }

    /// Takes one interrupted action over and records its outcome; `false` when another process
    /// took it first or Entra cannot be asked yet. Graph is done with before the lease taken
    /// here ends, so nobody else takes the action over while this call may still change it.
    async fn settle_interrupted(&self, record: ActionRecord) -> Result<bool> {
        let lease = self.lease_from(self.clock.now());
        if !self
            .store
            .claim_action(&record, lease, self.owner())
            .await?
        {
            return Ok(false);
        }
        let _running = super::Running::start(&self.running);
        let deadline = self.deadline_within(lease);
        let finish = match self.reconcile_one(&record, deadline).await {
            Ok(finish) => finish,
            Err(e) => match self.given_up(&record, &e) {
                Some(finish) => {
                    tracing::error!(action = %record.id, error = %e, "gave up reconciling an interrupted action; recorded as failed, its effect unknown");
                    finish
                }
                None => {
                    tracing::warn!(action = %record.id, error = %e, "cannot reconcile yet; will try again");
                    return Ok(false);
                }
            },
        };
        let recorded = self.store.finish_action(&finish).await?;
        if recorded {
            tracing::info!(action = %record.id, outcome = finish.outcome.as_str(), detail = finish.detail.as_deref().unwrap_or_default(), "reconciled an interrupted action");
        }
        Ok(recorded)
    }

    /// The failed outcome of an action that could not be reconciled for
    /// [`give_up_after`](super::RemediationSettings::give_up_after), or `None` while there is
    /// time.
    fn given_up(&self, record: &ActionRecord, error: &Error) -> Option<Finish> {
        let mut finish = interrupted(record, self.clock.now());
        let waited = Duration::from_millis(finish.duration_ms);
        if waited < self.settings.give_up_after {
            return None;
        }
        finish.detail = Some(format!(
            "interrupted, and still not reconciled after {} min ({error}); whether the change reached Entra is unknown: check the account",
            waited.as_secs() / 60
        ));
        Some(finish)
    }

    /// An interrupted action's outcome: succeeded if Entra already shows the change; else,
    /// while the request is fresh and nobody asked otherwise for the account since, the change
    /// is sent again (setting `accountEnabled` is idempotent) and verified; else failed, with
    /// the reason. `Err` when Entra cannot be asked now.
    async fn reconcile_one(&self, record: &ActionRecord, deadline: Instant) -> Result<Finish> {
        let mut finish = interrupted(record, self.clock.now());
        let desired = record.operation.target_enabled();
        let Some(customer) = self.store.customer(&finish.customer).await? else {
            finish.detail = Some("interrupted, and the customer no longer exists".to_owned());
            return Ok(finish);
        };
        let account: AccountRef = record
            .target_id
            .as_deref()
            .unwrap_or(&record.account)
            .parse()?;
        let user = match self
            .graph
            .get_user(customer.tenant_id, &account, deadline)
            .await
        {
            Ok(answer) => {
                finish.graph = Some(answer.evidence);
                answer.value
            }
            Err(GraphError::NotFound { evidence }) => {
                finish.graph = Some(evidence);
                finish.detail =
                    Some("interrupted, and the account no longer exists in Entra".to_owned());
                return Ok(finish);
            }
            // Entra cannot tell us now; keep the action for the next round.
            Err(e) => {
                return Err(Error::AuditUnavailable(format!(
                    "cannot read the account to reconcile: {e}"
                )));
            }
        };
        finish.target_id = Some(user.id.clone());
        finish.after = Some(state_of(&user));
        if user.account_enabled == Some(desired) {
            finish.outcome = Outcome::Succeeded;
            finish.detail = Some(format!(
                "interrupted before its outcome was recorded; on reconciliation Entra shows the account {}",
                enabled_word(desired)
            ));
            return Ok(finish);
        }
        if let Some(why) = self.not_carried_through(record, &user).await? {
            finish.before = finish.after.clone();
            finish.detail = Some(why);
            return Ok(finish);
        }
        Ok(self.carry_through(record, &customer, &user, deadline).await)
    }

    /// Why an interrupted action whose change has not reached Entra must not be sent again:
    /// re-driving is off, the action is too old, or someone asked killswitch for this account
    /// after it (their request stands, even if it was denied). `None`: carry it through.
    async fn not_carried_through(
        &self,
        record: &ActionRecord,
        user: &GraphUser,
    ) -> Result<Option<String>> {
        let still = enabled_word(!record.operation.target_enabled());
        let window = self.settings.redrive_within;
        let waited = (self.clock.now().as_datetime() - record.created_at.as_datetime())
            .to_std()
            .unwrap_or_default();
        if window.is_zero() || waited > window {
            return Ok(Some(format!(
                "interrupted before the change reached Entra, and requested more than {} min ago, so it was not sent again; the account is still {still}. Request the action again if it is still needed",
                window.as_secs() / 60
            )));
        }
        let later = self.later_action_on(record, user).await?;
        Ok(later.map(|later| {
            format!(
                "interrupted before the change reached Entra, and not sent again: action {} ({} of the same account, {}) was requested after it and stands; the account is still {still}",
                later.id,
                later.operation.as_str(),
                later.state.as_str()
            )
        }))
    }

    /// An action on the same account (by any of its names) requested after `record`: later in
    /// the customer's chain, which orders requests as they were committed, whatever the clocks
    /// of the instances that took them.
    async fn later_action_on(
        &self,
        record: &ActionRecord,
        user: &GraphUser,
    ) -> Result<Option<ActionRecord>> {
        let names = vec![
            record.account.clone(),
            user.id.clone(),
            user.user_principal_name.clone(),
        ];
        let filter = ActionFilter {
            customers: Some(vec![record.customer.clone()]),
            accounts: Some(names),
            limit: 100,
            ..ActionFilter::default()
        };
        Ok(self
            .store
            .actions(&filter)
            .await?
            .into_iter()
            .find(|a| a.requested_seq > record.requested_seq))
    }

    /// Sends an interrupted action's change again by `deadline`, through the same steps as the
    /// first time (read, protected list as it is now, change, revoke if asked, read back),
    /// recorded as the service's.
    async fn carry_through(
        &self,
        record: &ActionRecord,
        customer: &Customer,
        user: &GraphUser,
        deadline: Instant,
    ) -> Finish {
        let object = AccountRef::ObjectId(parse_id(&user.id));
        let job = Job::interrupted(record, object);
        let attempt = Attempt::start(customer, job, deadline);
        let mut finish = self.run_attempt(attempt, customer, None).await;
        finish.duration_ms = interrupted(record, self.clock.now()).duration_ms;
        let detail = finish.detail.take().unwrap_or_default();
        finish.detail = Some(match finish.outcome {
            Outcome::Succeeded => format!(
                "completed after an interruption: the change was sent again on reconciliation; {detail}"
            ),
            _ => {
                format!("interrupted, and carrying it through on reconciliation ended so: {detail}")
            }
        });
        metrics::counter!("killswitch_actions_redriven_total", "outcome" => finish.outcome.as_str())
            .increment(1);
        finish
    }
}
