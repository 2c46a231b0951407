//! Executing an action against Microsoft Graph, and reconciling actions a crash interrupted
//! (`reconcile`).

mod reconcile;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use uuid::Uuid;

use super::action::{ActionRecord, Admission, DetectionClaim, Finish, Guard, NewAction};
use crate::audit::event::{AccountState, Actor, MfaEvidence, Operation, Outcome, RequestContext};
use crate::customers::Customer;
use crate::domain::detection::DetectionState;
use crate::domain::instance::{Liveness, Takeover};
use crate::domain::{AccountRef, CustomerSlug, IdempotencyKey, Reason, TenantId, Ticket};
use crate::error::{Error, Result};
use crate::graph::token::REVOKE_ROLE;
use crate::graph::{Answer, GraphClient, GraphError, GraphUser};
use crate::store::Store;
use crate::time::{Clock, SystemClock, Timestamp};

#[derive(Debug, Clone)]
pub struct RemediationSettings {
    /// How long one action may spend on Graph, retries included.
    pub deadline: Duration,
    /// Added to the deadline for the lease: only after it may another process reconcile.
    pub lease_margin: Duration,
    /// An interrupted action whose account Entra still will not show this long after it was
    /// requested (consent withdrawn, tenant gone) is finished as failed, its effect unknown:
    /// every action ends.
    pub give_up_after: Duration,
    /// An interrupted action younger than this whose change had not reached Entra is carried
    /// through by reconciliation (the analyst's approved intent); an older one is recorded
    /// failed, to be requested again.
    pub redrive_within: Duration,
    /// When a run that owns an action counts as gone.
    pub liveness: Liveness,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        RemediationSettings {
            deadline: Duration::from_secs(30),
            lease_margin: Duration::from_secs(30),
            give_up_after: Duration::from_secs(3600),
            redrive_within: Duration::from_secs(900),
            liveness: Liveness::default(),
        }
    }
}

/// A validated request to change one account.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub customer: CustomerSlug,
    pub operation: Operation,
    pub account: AccountRef,
    pub reason: Reason,
    pub ticket: Option<Ticket>,
    /// `None`: the customer's policy decides (disable only).
    pub revoke_sessions: Option<bool>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub actor: Actor,
    pub mfa: Option<MfaEvidence>,
    pub context: Option<RequestContext>,
}

/// What admission decided: run the action, or it is already decided.
#[derive(Debug)]
// One per request, moved twice: boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    Pending(Pending),
    Done(Executed),
}

/// An admitted action waiting for its Graph calls.
#[derive(Debug)]
pub struct Pending {
    customer: Customer,
    new: NewAction,
    record: ActionRecord,
    /// What the event that triggered an automatic action brought along.
    trigger: Option<Trigger>,
}

/// What the event that triggers an automatic action (a Falcon detection) already knows.
#[derive(Debug)]
pub struct Trigger {
    /// When the event arrived, to time receipt → PATCH.
    pub received: std::time::Instant,
    /// The account as Graph answered the event's look-up, moments before the action was
    /// admitted. When it calls for the change, it serves as the action's read before it, so
    /// the PATCH follows the admission without a second read; reading is not a change, so
    /// nothing reaches Entra before the request is recorded.
    pub account: Answer<GraphUser>,
}

impl Pending {
    pub fn record(&self) -> &ActionRecord {
        &self.record
    }
}

/// How a call to [`Remediator::execute`] ended.
#[derive(Debug, Clone)]
pub enum Executed {
    /// This call recorded the action and (unless denied) ran it to its outcome.
    Ran(ActionRecord),
    /// The idempotency key named an action recorded earlier; returned as it is now.
    Replayed(ActionRecord),
}

impl Executed {
    pub fn record(&self) -> &ActionRecord {
        match self {
            Executed::Ran(r) | Executed::Replayed(r) => r,
        }
    }
}

pub struct Remediator {
    store: Arc<dyn Store>,
    graph: Arc<GraphClient>,
    settings: RemediationSettings,
    /// Stamps requests, sets leases and decides when one has run out.
    clock: Arc<dyn Clock>,
    /// The registered run this engine works for, once the service registered it: actions it
    /// admits carry it, so they are reconciled as soon as the run is gone.
    owner: OnceLock<Uuid>,
    /// Actions this engine is executing now (admitted or taken over, outcome not yet recorded).
    running: AtomicUsize,
}

/// Counts an action as running for as long as it lives.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn start(counter: &'a AtomicUsize) -> Running<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Running(counter)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const PRIVILEGED_HINT: &str = "Entra refused to change this account: it holds an administrator role. \
     The customer must assign the remediation app's service principal the Privileged Authentication Administrator \
     directory role (User Administrator suffices for accounts without admin roles); killswitch does not retry this.";

#[derive(Serialize)]
struct RequestFingerprint<'a> {
    operation: Operation,
    account: String,
    reason: &'a str,
    ticket: Option<&'a str>,
    revoke_sessions: Option<bool>,
}

impl Remediator {
    pub fn new(
        store: Arc<dyn Store>,
        graph: Arc<GraphClient>,
        settings: RemediationSettings,
    ) -> Remediator {
        Remediator {
            store,
            graph,
            settings,
            clock: Arc::new(SystemClock),
            owner: OnceLock::new(),
            running: AtomicUsize::new(0),
        }
    }

    /// Waits (at most `within`) until no action this engine runs is without its outcome: a
    /// stopping instance keeps its heartbeat until then, so nobody takes over what it still
    /// executes.
    pub async fn drain(&self, within: Duration) {
        let until = Instant::now() + within;
        while self.running.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Names the registered run this engine works for (once; later calls are ignored).
    pub fn set_owner(&self, run: Uuid) {
        let _ = self.owner.set(run);
    }

    pub fn owner(&self) -> Option<Uuid> {
        self.owner.get().copied()
    }

    /// What may be taken over now: work whose lease ended, or whose run is gone (heartbeats
    /// are real time, whatever clock stamps the actions).
    pub fn takeover(&self) -> Takeover {
        Takeover {
            lease_ended_before: self.clock.now(),
            alive_since: self.settings.liveness.alive_since(Timestamp::now()),
            mine: self.owner(),
        }
    }

    /// [`takeover`](Self::takeover) for work whose lease runs from its arrival (a detection
    /// being decided): it ends one lease length after the work arrived.
    pub fn takeover_of_arrivals(&self) -> Takeover {
        let lease = chrono::Duration::from_std(self.lease_length()).unwrap_or_default();
        Takeover {
            lease_ended_before: Timestamp::from_datetime(self.clock.now().as_datetime() - lease),
            ..self.takeover()
        }
    }

    /// The interrupted-action window: work requested before this is too old to carry through.
    pub fn redrive_within(&self) -> Duration {
        self.settings.redrive_within
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The same engine reading the time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Remediator {
        Remediator { clock, ..self }
    }

    pub fn graph(&self) -> &GraphClient {
        &self.graph
    }

    /// Records the request (nothing reaches Graph unless that write committed), applies the
    /// guard rails, and runs the action to its outcome.
    pub async fn execute(&self, request: ActionRequest) -> Result<Executed> {
        match self.admit(request).await? {
            Decision::Done(done) => Ok(done),
            Decision::Pending(pending) => Ok(Executed::Ran(self.complete(pending).await)),
        }
    }

    /// [`execute`](Self::execute) for the action that decides a pending detection: the
    /// detection moves to `claim.decision` in the same transaction that records the request, so
    /// a concurrent dismissal and this action cannot both win ([`Error::DetectionDecided`] when
    /// the detection was decided first; nothing is sent to Graph then). `trigger` is what the
    /// event behind an automatic decision brought along.
    pub async fn execute_deciding(
        &self,
        request: ActionRequest,
        claim: DetectionClaim,
        trigger: Option<Trigger>,
    ) -> Result<Executed> {
        let approval = claim.decision == DetectionState::Approved;
        match self.admit_with(request, Some(claim)).await? {
            Decision::Done(done) => Ok(done),
            Decision::Pending(mut pending) => {
                if approval {
                    crate::fault::point("approval.admitted").await;
                }
                pending.trigger = trigger;
                Ok(Executed::Ran(self.complete(pending).await))
            }
        }
    }

    /// The first half of [`execute`](Self::execute): records the request (nothing reaches
    /// Graph unless that write committed) and applies the guard rails. A [`Pending`] action
    /// must then be [`complete`](Self::complete)d; until it is, its lease keeps others off it.
    pub async fn admit(&self, request: ActionRequest) -> Result<Decision> {
        self.admit_with(request, None).await
    }

    async fn admit_with(
        &self,
        request: ActionRequest,
        claim: Option<DetectionClaim>,
    ) -> Result<Decision> {
        let customer = self
            .store
            .customer(&request.customer)
            .await
            .map_err(audit_unavailable)?
            .ok_or_else(|| Error::NotFound(format!("customer `{}`", request.customer)))?;
        let revoke = request.operation == Operation::Disable
            && request
                .revoke_sessions
                .unwrap_or(customer.policy.revoke_sessions);
        let now = self.clock.now();
        let new = NewAction {
            id: Uuid::new_v4(),
            customer: request.customer.clone(),
            operation: request.operation,
            account: request.account.clone(),
            reason: request.reason.clone(),
            ticket: request.ticket.clone(),
            revoke_sessions: revoke,
            idempotency_key: request.idempotency_key.clone(),
            request_hash: fingerprint(&request)?,
            actor: request.actor.clone(),
            mfa: request.mfa.clone(),
            request: request.context.clone(),
            created_at: now,
            lease_until: self.lease_from(now),
            owner_run: self.owner(),
            claim,
        };
        let guard = Guard {
            max_actions_per_hour: customer.policy.max_actions_per_hour,
            protected: customer.policy.protects(&request.account),
        };
        match self
            .store
            .admit_action(&new, guard)
            .await
            .map_err(audit_unavailable)?
        {
            Admission::Admitted(record) => Ok(Decision::Pending(Pending {
                customer,
                new,
                record,
                trigger: None,
            })),
            Admission::Denied(record) => Ok(Decision::Done(Executed::Ran(record))),
            Admission::Replayed(record) => Ok(Decision::Done(Executed::Replayed(record))),
            Admission::KeyConflict(_) => Err(Error::Conflict(
                "this Idempotency-Key was already used for a different request".to_owned(),
            )),
            Admission::AlreadyDecided(state) => Err(Error::DetectionDecided(state)),
        }
    }

    /// The second half: Graph, then the outcome. Returns the action as stored afterwards.
    ///
    /// It cannot fail: once admitted, Graph may have been changed, so a caller must never hear
    /// "nothing was done". When the outcome cannot be written, the action is returned as
    /// admitted (`requested`) and reconciliation records its outcome from Entra's state.
    pub async fn complete(&self, pending: Pending) -> ActionRecord {
        let _running = Running::start(&self.running);
        crate::fault::point("action.admitted").await;
        let finish = self
            .run(&pending.customer, &pending.new, pending.trigger)
            .await;
        crate::fault::point("action.answered").await;
        match self.store.finish_action_stored(&finish).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                tracing::warn!(action = %pending.new.id, "outcome already recorded by reconciliation");
                match self.store.action(pending.new.id).await {
                    Ok(Some(record)) => record,
                    Ok(None) | Err(_) => pending.record,
                }
            }
            Err(e) => {
                tracing::error!(action = %pending.new.id, error = %e, "the outcome could not be recorded; reconciliation will record it");
                pending.record
            }
        }
    }

    /// How long the executing run owns an action (and the receiving run a detection) before
    /// anyone may take it over, whether or not that run is alive.
    fn lease_length(&self) -> Duration {
        self.settings.deadline + self.settings.lease_margin
    }

    fn lease_from(&self, now: Timestamp) -> Timestamp {
        now.after(self.lease_length())
    }

    /// The Graph part: read, change unless already so, revoke if asked, read again.
    async fn run(&self, customer: &Customer, new: &NewAction, trigger: Option<Trigger>) -> Finish {
        let deadline = self.deadline_within(new.lease_until);
        let attempt = Attempt::start(customer, Job::admitted(new), deadline);
        self.run_attempt(attempt, customer, trigger).await
    }

    async fn run_attempt(
        &self,
        mut attempt: Attempt,
        customer: &Customer,
        trigger: Option<Trigger>,
    ) -> Finish {
        let ended = match self.steps(&mut attempt, customer, trigger).await {
            Ok(ended) | Err(ended) => ended,
        };
        attempt.end(ended)
    }

    /// Graph is done with before the lease ends, however long admission took: after it,
    /// another process may reconcile the action and record its outcome.
    fn deadline_within(&self, lease_until: Timestamp) -> Instant {
        let lease_left = (lease_until.as_datetime() - self.clock.now().as_datetime())
            .to_std()
            .unwrap_or_default()
            .saturating_sub(self.settings.lease_margin);
        Instant::now() + self.settings.deadline.min(lease_left)
    }

    /// The steps in order; a step that settles the outcome ends the run early with it.
    async fn steps(
        &self,
        attempt: &mut Attempt,
        customer: &Customer,
        trigger: Option<Trigger>,
    ) -> Step<Ended> {
        let (received, looked_up) = trigger.map(|t| (t.received, t.account)).unzip();
        // Only a look-up that calls for the change stands in for the read: the PATCH then sets
        // what was asked whatever happened since. One that found the account as asked is
        // read again now, after the request was recorded, so a change made in between (an
        // enable recorded before this disable) is not mistaken for a no-op.
        let calls_for_change = |read: &Answer<GraphUser>| {
            let user = &read.value;
            attempt
                .job
                .account
                .matches(&user.id, &user.user_principal_name)
                && user.account_enabled != Some(attempt.desired)
        };
        let user = match looked_up.filter(calls_for_change) {
            Some(read) => attempt.read_as(read),
            None => self.read(attempt).await?,
        };
        before_change(attempt, customer, &user)?;
        self.change(attempt, &user.id, received).await?;
        if attempt.job.revoke_sessions {
            self.revoke(
                attempt.tenant,
                &user.id,
                attempt.deadline,
                &mut attempt.finish.warnings,
            )
            .await;
        }
        Ok(self.confirm(attempt, &user.id).await)
    }

    /// Reads the account as requested; it names the object the other steps work on.
    async fn read(&self, attempt: &mut Attempt) -> Step<GraphUser> {
        match self
            .graph
            .get_user(attempt.tenant, &attempt.job.account, attempt.deadline)
            .await
        {
            Ok(answer) => Ok(attempt.read_as(answer)),
            Err(e) => {
                attempt.finish.graph = e.evidence().cloned();
                Err(Ended(
                    Outcome::Failed,
                    describe_failure(&e, &attempt.job.account, "reading"),
                ))
            }
        }
    }

    /// Writes `accountEnabled`. An unanswered write may still have been applied, so it is
    /// read back before being called failed.
    async fn change(
        &self,
        attempt: &mut Attempt,
        user_id: &str,
        received: Option<std::time::Instant>,
    ) -> Step<()> {
        let (tenant, desired, deadline) = (attempt.tenant, attempt.desired, attempt.deadline);
        match self
            .graph
            .set_account_enabled(tenant, user_id, desired, deadline)
            .await
        {
            Ok(answer) => {
                if let Some(received) = received {
                    metrics::histogram!("killswitch_falcon_receipt_to_patch_seconds")
                        .record(received.elapsed().as_secs_f64());
                }
                attempt.finish.graph = Some(answer.evidence);
                Ok(())
            }
            Err(e) => {
                attempt.finish.graph = e.evidence().cloned();
                let applied = e.is_ambiguous()
                    && self
                        .reads_as(tenant, user_id, desired, deadline)
                        .await
                        .is_some();
                if !applied {
                    return Err(Ended(
                        Outcome::Failed,
                        describe_failure(&e, &attempt.job.account, "changing"),
                    ));
                }
                attempt.finish.warnings.push(format!(
                    "Graph did not confirm the change ({e}), but the account now reads {}",
                    enabled_word(desired)
                ));
                Ok(())
            }
        }
    }

    /// Reads the account again: the action succeeded only if Entra now shows the change.
    async fn confirm(&self, attempt: &mut Attempt, user_id: &str) -> Ended {
        let (tenant, desired, deadline) = (attempt.tenant, attempt.desired, attempt.deadline);
        if let Some(after) = self.reads_as(tenant, user_id, desired, deadline).await {
            attempt.finish.after = Some(after);
            return Ended(
                Outcome::Succeeded,
                format!("the account is now {}", enabled_word(desired)),
            );
        }
        let object = AccountRef::ObjectId(parse_id(user_id));
        let after = self.graph.get_user(tenant, &object, deadline).await.ok();
        attempt.finish.after = after.map(|a| state_of(&a.value));
        Ended(
            Outcome::Failed,
            format!(
                "Graph accepted the change but the account does not read {} afterwards",
                enabled_word(desired)
            ),
        )
    }

    async fn revoke(
        &self,
        tenant: crate::domain::TenantId,
        user_id: &str,
        deadline: Instant,
        warnings: &mut Vec<String>,
    ) {
        let allowed = self
            .graph
            .token(tenant, deadline)
            .await
            .map(|t| t.has_role(REVOKE_ROLE))
            .unwrap_or(false);
        if !allowed {
            warnings.push(
                "sign-in sessions were not revoked: the customer has not granted User.RevokeSessions.All".to_owned(),
            );
            return;
        }
        if let Err(e) = self.graph.revoke_sessions(tenant, user_id, deadline).await {
            warnings.push(format!("sign-in sessions were not revoked: {e}"));
        }
    }

    /// Reads the account (a few times: a write may take a moment to show) and returns its state
    /// once `accountEnabled` is `desired`.
    async fn reads_as(
        &self,
        tenant: crate::domain::TenantId,
        user_id: &str,
        desired: bool,
        deadline: Instant,
    ) -> Option<AccountState> {
        let account = AccountRef::ObjectId(parse_id(user_id));
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if let Ok(answer) = self.graph.get_user(tenant, &account, deadline).await
                && answer.value.account_enabled == Some(desired)
            {
                return Some(state_of(&answer.value));
            }
        }
        None
    }
}

/// What the Graph steps work on: an admitted action, or an interrupted one carried through.
struct Job {
    id: Uuid,
    customer: CustomerSlug,
    operation: Operation,
    account: AccountRef,
    revoke_sessions: bool,
    /// Whom the outcome's entry names: the requester, or the service when it carries an
    /// interrupted action through.
    actor: Actor,
}

impl Job {
    fn admitted(new: &NewAction) -> Job {
        Job {
            id: new.id,
            customer: new.customer.clone(),
            operation: new.operation,
            account: new.account.clone(),
            revoke_sessions: new.revoke_sessions,
            actor: new.actor.clone(),
        }
    }

    fn interrupted(record: &ActionRecord, account: AccountRef) -> Job {
        Job {
            id: record.id,
            customer: record.customer.clone(),
            operation: record.operation,
            account,
            revoke_sessions: record.revoke_sessions,
            actor: Actor::Service,
        }
    }
}

/// One action's Graph work in progress: what it aims for, by when, and its outcome as it forms.
struct Attempt {
    job: Job,
    tenant: TenantId,
    /// The `accountEnabled` the operation leads to.
    desired: bool,
    started: Instant,
    deadline: Instant,
    finish: Finish,
}

/// The outcome a step settled, with the words recorded for it.
struct Ended(Outcome, String);

/// A step either lets the run go on (with its result) or ends it.
type Step<T> = std::result::Result<T, Ended>;

impl Attempt {
    fn start(customer: &Customer, job: Job, deadline: Instant) -> Self {
        Attempt {
            tenant: customer.tenant_id,
            desired: job.operation.target_enabled(),
            started: Instant::now(),
            deadline,
            finish: Finish {
                id: job.id,
                customer: job.customer.clone(),
                outcome: Outcome::Failed,
                detail: None,
                warnings: Vec::new(),
                target_id: None,
                before: None,
                after: None,
                graph: None,
                duration_ms: 0,
                actor: job.actor.clone(),
            },
            job,
        }
    }

    /// Takes Graph's answer to reading the account as the state before the change.
    fn read_as(&mut self, answer: Answer<GraphUser>) -> GraphUser {
        let user = answer.value;
        self.finish.graph = Some(answer.evidence);
        self.finish.target_id = Some(user.id.clone());
        self.finish.before = Some(state_of(&user));
        user
    }

    fn end(self, Ended(outcome, detail): Ended) -> Finish {
        Finish {
            outcome,
            detail: Some(detail),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..self.finish
        }
    }
}

/// What is settled before anything is written: a protected account is left alone, an account
/// already as asked is a no-op; a synced account only earns a warning.
fn before_change(attempt: &mut Attempt, customer: &Customer, user: &GraphUser) -> Step<()> {
    if customer
        .policy
        .protects_user(&user.id, &user.user_principal_name)
    {
        return Err(Ended(
            Outcome::Denied,
            "the account is on the customer's protected list (break-glass or service account); it was not changed".to_owned(),
        ));
    }
    if user.on_premises_sync_enabled == Some(true) {
        attempt
            .finish
            .warnings
            .push(synced_warning(attempt.job.operation));
    }
    if user.account_enabled == Some(attempt.desired) {
        attempt.finish.after = attempt.finish.before.clone();
        return Err(Ended(
            Outcome::Noop,
            format!(
                "the account was already {}; nothing was changed",
                enabled_word(attempt.desired)
            ),
        ));
    }
    Ok(())
}

/// A failed outcome for an interrupted action, to be filled in by what reconciliation learns;
/// its duration runs from the request to now.
fn interrupted(record: &ActionRecord, now: Timestamp) -> Finish {
    let waited = now.as_datetime() - record.created_at.as_datetime();
    Finish {
        id: record.id,
        customer: record.customer.clone(),
        outcome: Outcome::Failed,
        detail: None,
        warnings: Vec::new(),
        target_id: None,
        before: None,
        after: None,
        graph: None,
        duration_ms: u64::try_from(waited.num_milliseconds()).unwrap_or(0),
        actor: Actor::Service,
    }
}

fn audit_unavailable(e: Error) -> Error {
    match e {
        Error::Database(_) | Error::DatabaseUnavailable(_) | Error::Internal(_) => {
            Error::AuditUnavailable(e.to_string())
        }
        other => other,
    }
}

/// SHA-256 over what an action asks, so a replayed idempotency key can be told from a reused one.
pub fn fingerprint(request: &ActionRequest) -> Result<String> {
    let canonical = serde_jcs::to_vec(&RequestFingerprint {
        operation: request.operation,
        account: request.account.to_string(),
        reason: request.reason.as_str(),
        ticket: request.ticket.as_ref().map(Ticket::as_str),
        revoke_sessions: request.revoke_sessions,
    })
    .map_err(|e| Error::Internal(format!("cannot fingerprint the request: {e}")))?;
    Ok(const_hex::encode(Sha256::digest(canonical)))
}

fn state_of(user: &GraphUser) -> AccountState {
    AccountState {
        id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        account_enabled: user.account_enabled,
        on_premises_sync_enabled: user.on_premises_sync_enabled,
    }
}

fn parse_id(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_default()
}

fn enabled_word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn synced_warning(operation: Operation) -> String {
    match operation {
        Operation::Disable => "this account is synchronised from on-premises Active Directory: disable it there too, \
             or the next Entra Connect sync will enable it again"
            .to_owned(),
        Operation::Enable => "this account is synchronised from on-premises Active Directory: if it is disabled there, \
             the next Entra Connect sync will disable it again"
            .to_owned(),
    }
}

/// One sentence for the analyst and the customer; Graph's code and request-id are kept beside it.
fn describe_failure(error: &GraphError, account: &AccountRef, doing: &str) -> String {
    match error {
        GraphError::NotFound { .. } => {
            format!("there is no account {account} in the customer's tenant")
        }
        GraphError::Denied { code, .. }
            if doing == "changing" && code == "Authorization_RequestDenied" =>
        {
            PRIVILEGED_HINT.to_owned()
        }
        GraphError::Denied { code, .. } => format!(
            "Entra denied {doing} the account ({code}): the remediation app lacks a permission in this tenant; the customer must grant admin consent again"
        ),
        GraphError::GaveUp { status: 429, .. } => {
            "Microsoft Graph throttled every attempt until the deadline; try again in a few minutes"
                .to_owned()
        }
        GraphError::GaveUp { status, .. } => {
            format!("Microsoft Graph answered {status} on every attempt until the deadline")
        }
        GraphError::Unreachable { reason, .. } => {
            format!("Microsoft Graph could not be reached: {reason}")
        }
        GraphError::BadRequest { code, .. } => {
            format!("Microsoft Graph rejected the request ({code})")
        }
        GraphError::Unexpected { status, code, .. } => {
            format!("Microsoft Graph answered {status} ({code})")
        }
        GraphError::Token(e) => e.to_string(),
    }
}
