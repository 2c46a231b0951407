//! Planning an append: given the locked head of a chain, compute the next entry and, when due,
//! the checkpoint that signs it. Both backends run this inside their write transaction, so the
//! chain logic exists once and the stores only move rows.

use std::sync::Arc;

use crate::audit::entry::{Sealed, seal};
use crate::audit::event::{Actor, AuditEvent, NoticeKind};
use crate::audit::hash::Hash;
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::AuditKey;
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Default distance between automatic checkpoints on one chain.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// What an append wrote, returned to the caller once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub chain: String,
    pub seq: u64,
    pub hash: Hash,
    pub time: Timestamp,
}

/// Rows to write for one append, all in the transaction that holds the head.
#[derive(Debug, Clone)]
pub struct AppendPlan {
    pub entry: EntryRecord,
    pub head: HeadRecord,
    pub checkpoint: Option<CheckpointRecord>,
    /// The notice the entry calls for, written with it (see [`AuditEvent::notice`]).
    pub notice: Option<NoticeKind>,
    pub appended: Appended,
}

/// Seals entries and signs checkpoints with the service key.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Arc<AuditKey>,
    checkpoint_every: u64,
}

/// The last sequence number and hash of a chain as read from its head row (`seq` 0 and the
/// genesis hash for a chain with no entries yet).
pub fn parse_head(chain: &ChainId, head: Option<&HeadRecord>) -> Result<(u64, Hash)> {
    let Some(head) = head else {
        return Ok((0, Hash::genesis(chain.as_str())));
    };
    // A head that does not parse means someone edited it: refuse to extend the chain.
    let corrupt = || {
        Error::AuditUnavailable(format!(
            "the head of audit chain `{chain}` is corrupt; run `killswitch audit check`"
        ))
    };
    let seq = u64::try_from(head.seq).map_err(|_| corrupt())?;
    let hash = if seq == 0 {
        Hash::genesis(chain.as_str())
    } else {
        Hash::from_hex(&head.hash).ok_or_else(corrupt)?
    };
    Ok((seq, hash))
}

impl Sealer {
    pub fn new(key: Arc<AuditKey>, checkpoint_every: u64) -> Sealer {
        Sealer {
            key,
            checkpoint_every: checkpoint_every.max(1),
        }
    }

    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// The next entry of `chain` after `head`, with a checkpoint when its seq is a multiple of
    /// the checkpoint distance.
    pub fn plan(
        &self,
        chain: &ChainId,
        head: Option<&HeadRecord>,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<AppendPlan> {
        let (last_seq, prev) = parse_head(chain, head)?;
        let seq = last_seq + 1;
        let sealed = seal(chain, seq, &prev, Timestamp::now(), actor, event)?;
        let checkpoint = if seq % self.checkpoint_every == 0 {
            Some(self.sign(&sealed)?)
        } else {
            None
        };
        Ok(plan_from(sealed, checkpoint, event.notice_in(chain)))
    }

    /// A checkpoint over the current head, or `None` when the chain is empty or its head is
    /// already covered by `last_checkpoint_seq`.
    pub fn checkpoint_head(
        &self,
        chain: &ChainId,
        head: Option<&HeadRecord>,
        last_checkpoint_seq: Option<i64>,
    ) -> Result<Option<CheckpointRecord>> {
        let (seq, hash) = parse_head(chain, head)?;
        let covered = last_checkpoint_seq
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0);
        if seq == 0 || seq <= covered {
            return Ok(None);
        }
        let checkpoint = self
            .key
            .sign_checkpoint(chain.as_str(), seq, &hash, Timestamp::now())?;
        Ok(Some(CheckpointRecord::from(&checkpoint)))
    }

    fn sign(&self, sealed: &Sealed) -> Result<CheckpointRecord> {
        let checkpoint =
            self.key
                .sign_checkpoint(&sealed.chain, sealed.seq, &sealed.hash, sealed.time)?;
        Ok(CheckpointRecord::from(&checkpoint))
    }
}

fn plan_from(
    sealed: Sealed,
    checkpoint: Option<CheckpointRecord>,
    notice: Option<NoticeKind>,
) -> AppendPlan {
    let seq = i64::try_from(sealed.seq).unwrap_or(i64::MAX);
    let hash = sealed.hash.to_hex();
    AppendPlan {
        entry: EntryRecord {
            chain: sealed.chain.clone(),
            seq,
            time: sealed.time.to_string(),
            event: sealed.kind.to_owned(),
            entry: sealed.json,
            hash: hash.clone(),
        },
        head: HeadRecord {
            chain: sealed.chain.clone(),
            seq,
            hash,
        },
        checkpoint,
        notice,
        appended: Appended {
            chain: sealed.chain,
            seq: sealed.seq,
            hash: sealed.hash,
            time: sealed.time,
        },
    }
}
