//! Group commit for plain appends on PostgreSQL.
//!
//! Appends to one chain serialise on its head row, so one transaction per append caps a chain
//! at one durable commit at a time: about a thousand appends a second, whatever the number of
//! writers. Here the appends waiting for a chain are taken together by whichever of their
//! callers gets the chain's turn, sealed one after another against the locked head, and
//! written and committed in one transaction. The head row lock still orders every writer
//! (other instances, domain writes with their own entry), so the chain cannot fork; each caller
//! hears back only after the commit that holds its entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{PgPool, Postgres};
use tokio::sync::oneshot;

use super::audit_sql;
use crate::audit::append::{AppendPlan, Appended, Sealer};
use crate::domain::ChainId;
use crate::domain::event::{Actor, AuditEvent};
use crate::error::{Error, Result};

/// Most appends in one transaction; bounds how long the first of them waits for the commit.
const MAX_BATCH: usize = 512;

struct Waiting {
    actor: Actor,
    event: AuditEvent,
    reply: oneshot::Sender<Result<Appended>>,
}

/// One chain's waiting appends and the turn to commit them.
#[derive(Default)]
struct ChainQueue {
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub struct GroupCommit {
    chains: Mutex<HashMap<ChainId, Arc<ChainQueue>>>,
}

impl GroupCommit {
    /// Appends one event; returns once the transaction holding it has committed.
    pub async fn append(
        &self,
        pool: &PgPool,
        sealer: Arc<Sealer>,
        chain: &ChainId,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<Appended> {
        let queue = self.queue(chain);
        let (reply, answer) = oneshot::channel();
        lock(&queue.waiting).push(Waiting {
            actor: actor.clone(),
            event: event.clone(),
            reply,
        });
        let mut answer = answer;
        // Whoever holds the turn commits everything waiting, so a caller whose entry was taken
        // by the batch before it stops waiting for the turn as soon as its answer arrives.
        tokio::select! {
            biased;
            answered = &mut answer => return answered.unwrap_or_else(|_| Err(dropped())),
            _turn = queue.turn.lock() => {
                let batch = take_batch(&queue);
                if !batch.is_empty() {
                    // A task of its own, so a caller that goes away mid-commit cannot leave the
                    // others of its batch without an answer.
                    let commit = commit_batch(pool.clone(), sealer, chain.clone(), batch);
                    tokio::spawn(commit).await.map_err(|e| {
                        Error::AuditUnavailable(format!("the append task ended: {e}"))
                    })?;
                }
            }
        }
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }

    fn queue(&self, chain: &ChainId) -> Arc<ChainQueue> {
        lock(&self.chains).entry(chain.clone()).or_default().clone()
    }
}

fn dropped() -> Error {
    Error::AuditUnavailable("the append was dropped before its commit".to_owned())
}

/// A poisoned lock only means another caller panicked while pushing or taking; the vector and
/// the map are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take_batch(queue: &ChainQueue) -> Vec<Waiting> {
    let mut waiting = lock(&queue.waiting);
    let taken = waiting.len().min(MAX_BATCH);
    let rest = waiting.split_off(taken);
    std::mem::replace(&mut *waiting, rest)
}

/// Seals and writes the batch in one transaction and answers every caller in it.
async fn commit_batch(pool: PgPool, sealer: Arc<Sealer>, chain: ChainId, batch: Vec<Waiting>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|w| ((w.actor, w.event), w.reply))
        .unzip();
    match write_batch(&pool, &sealer, &chain, &requests).await {
        Ok(plans) => {
            for (plan, reply) in plans.into_iter().zip(replies) {
                // The caller may have gone away; its entry stands either way.
                let _ = reply.send(Ok(plan.appended));
            }
        }
        Err(e) => {
            tracing::error!(chain = %chain, error = %e, appends = replies.len(), "PostgreSQL append transaction failed");
            let reason = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(Error::AuditUnavailable(reason.clone())));
            }
        }
    }
}

async fn write_batch(
    pool: &PgPool,
    sealer: &Sealer,
    chain: &ChainId,
    requests: &[(Actor, AuditEvent)],
) -> Result<Vec<AppendPlan>> {
    let mut tx = pool.begin().await?;
    let mut head = super::postgres::lock_head(&mut tx, chain).await?;
    let mut plans = Vec::with_capacity(requests.len());
    for (actor, event) in requests {
        let plan = sealer.plan(chain, head.as_ref(), actor, event)?;
        head = Some(plan.head.clone());
        plans.push(plan);
    }
    audit_sql::write_plans::<Postgres>(&mut tx, &plans).await?;
    tx.commit().await?;
    Ok(plans)
}
