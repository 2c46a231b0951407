//! Chain verification, one entry at a time, so millions of entries verify in constant memory.
//!
//! The verifier recomputes every link from the stored bytes, checks that the indexed columns
//! agree with the entry, checks each signed checkpoint against the recomputed hash at its
//! sequence number, and finally compares the end of the chain with its head and its newest
//! checkpoint, which is how truncation of the newest entries is caught.

use std::collections::VecDeque;
use std::fmt;

use crate::audit::entry::{ENTRY_FORMAT_VERSION, Link};
use crate::audit::hash::Hash;
use crate::audit::records::{BadCheckpoint, CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::{CheckpointRefusal, KeyRing};

/// The first place a chain stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: u64,
    pub reason: String,
}

impl Break {
    fn at(seq: u64, fault: Fault) -> Break {
        Break {
            seq,
            reason: fault.to_string(),
        }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "first bad seq {}: {}", self.seq, self.reason)
    }
}

/// Why the chain breaks where it does; the message is a [`Break`]'s `reason`.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("entry {expected} is missing (the next stored entry is {found})")]
    EntryMissing { expected: u64, found: i64 },
    #[error("a row numbered {found} appears where entry {expected} belongs")]
    RowOutOfPlace { expected: u64, found: i64 },
    #[error("row belongs to chain `{0}`")]
    RowOfAnotherChain(String),
    #[error("entry is not a valid audit entry: {0}")]
    NotAnEntry(serde_json::Error),
    #[error("entry has unsupported format version {0}")]
    UnsupportedVersion(u32),
    #[error("entry names chain `{0}`")]
    EntryOfAnotherChain(String),
    #[error("entry names seq {0}")]
    EntryNamesAnotherSeq(u64),
    #[error("prev_hash is not the chain's genesis value")]
    NotFromGenesis,
    #[error("prev_hash does not match the hash of entry {0}")]
    NotFromPrevious(u64),
    /// The indexed columns were edited apart from the entry they index.
    #[error("the time column differs from the entry's time")]
    TimeColumnDiffers,
    #[error("the event column differs from the entry's event type")]
    EventColumnDiffers,
    #[error("stored hash does not match the entry's content")]
    HashDiffers,
    #[error("a checkpoint names impossible seq {0}")]
    ImpossibleCheckpoint(i64),
    #[error("{0}")]
    BadCheckpoint(BadCheckpoint),
    #[error("checkpoint names chain `{0}`")]
    CheckpointOfAnotherChain(String),
    #[error("the signed checkpoint's hash differs from the recomputed chain")]
    CheckpointHashDiffers,
    #[error("{0}")]
    CheckpointRefused(CheckpointRefusal),
    /// A checkpoint signs further than the stored entries reach: the newest were removed.
    #[error(
        "a signed checkpoint covers entries up to {checkpoint} but the chain ends at {last}: entries were removed"
    )]
    EntriesRemoved { checkpoint: i64, last: u64 },
    #[error("the chain head says {head} entries but {last} are stored")]
    HeadCountDiffers { head: i64, last: u64 },
    #[error("the chain head's hash differs from the last entry's hash")]
    HeadHashDiffers,
    #[error("the chain head record is missing")]
    HeadMissing,
}

/// What a clean chain looks like after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub chain: String,
    pub entries: u64,
    pub checkpoints: u64,
    pub head: Hash,
    pub last_checkpoint: Option<u64>,
}

pub struct ChainVerifier<'k> {
    chain: String,
    keys: &'k KeyRing,
    next_seq: u64,
    prev: Hash,
    prev_hex: [u8; 64],
    pending: VecDeque<CheckpointRecord>,
    checkpoints: u64,
    last_checkpoint: Option<u64>,
}

impl<'k> ChainVerifier<'k> {
    pub fn new(chain: &str, keys: &'k KeyRing, mut checkpoints: Vec<CheckpointRecord>) -> Self {
        checkpoints.sort_by_key(|c| c.seq);
        ChainVerifier {
            chain: chain.to_owned(),
            keys,
            next_seq: 1,
            prev: Hash::genesis(chain),
            prev_hex: Hash::genesis(chain).hex_bytes(),
            pending: checkpoints.into(),
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    /// Checks the next stored entry; entries must arrive in stored `seq` order.
    pub fn push(&mut self, row: &EntryRecord) -> Result<(), Break> {
        let seq = self.next_seq;
        let bad = |fault: Fault| Break::at(seq, fault);
        self.check_place(row, seq).map_err(bad)?;
        self.check_entry(row, seq).map_err(bad)?;
        let computed = Hash::link(&self.prev, row.entry.as_bytes());
        let computed_hex = computed.hex_bytes();
        if row.hash.as_bytes() != computed_hex {
            return Err(bad(Fault::HashDiffers));
        }
        self.check_checkpoints_at(seq, row.seq, &computed)?;
        self.prev = computed;
        self.prev_hex = computed_hex;
        self.next_seq += 1;
        Ok(())
    }

    /// The row is the one expected next: its number, in this chain.
    fn check_place(&self, row: &EntryRecord, seq: u64) -> Result<(), Fault> {
        let place = i64::try_from(seq).unwrap_or(i64::MAX);
        if row.seq != place {
            let (expected, found) = (seq, row.seq);
            return Err(if found > place {
                Fault::EntryMissing { expected, found }
            } else {
                Fault::RowOutOfPlace { expected, found }
            });
        }
        if row.chain != self.chain {
            return Err(Fault::RowOfAnotherChain(row.chain.clone()));
        }
        Ok(())
    }

    /// The entry says what its row and its place say, and chains from the previous entry.
    fn check_entry(&self, row: &EntryRecord, seq: u64) -> Result<(), Fault> {
        let link = Link::parse(&row.entry).map_err(Fault::NotAnEntry)?;
        if link.v != ENTRY_FORMAT_VERSION {
            return Err(Fault::UnsupportedVersion(link.v));
        }
        if link.chain != self.chain {
            return Err(Fault::EntryOfAnotherChain(link.chain.into_owned()));
        }
        if link.seq != seq {
            return Err(Fault::EntryNamesAnotherSeq(link.seq));
        }
        // Hex is compared as text: only the lowercase spelling that was hashed is accepted.
        if link.prev_hash.as_bytes() != self.prev_hex {
            return Err(if seq == 1 {
                Fault::NotFromGenesis
            } else {
                Fault::NotFromPrevious(seq - 1)
            });
        }
        if link.time != row.time {
            return Err(Fault::TimeColumnDiffers);
        }
        if link.event.kind != row.event {
            return Err(Fault::EventColumnDiffers);
        }
        Ok(())
    }

    /// Every pending checkpoint up to this entry must sign exactly its recomputed hash.
    fn check_checkpoints_at(
        &mut self,
        seq: u64,
        row_seq: i64,
        computed: &Hash,
    ) -> Result<(), Break> {
        while let Some(front) = self.pending.front() {
            if front.seq > row_seq {
                break;
            }
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            if record.seq < row_seq {
                // Only reachable for checkpoints numbered below 1: nothing can sit there.
                return Err(Break::at(1, Fault::ImpossibleCheckpoint(record.seq)));
            }
            self.check_checkpoint(seq, computed, &record)?;
        }
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        seq: u64,
        computed: &Hash,
        record: &CheckpointRecord,
    ) -> Result<(), Break> {
        let bad = |fault: Fault| Break::at(seq, fault);
        let checkpoint = record.parse().map_err(|e| bad(Fault::BadCheckpoint(e)))?;
        if checkpoint.chain != self.chain {
            return Err(bad(Fault::CheckpointOfAnotherChain(checkpoint.chain)));
        }
        if checkpoint.hash != *computed {
            return Err(bad(Fault::CheckpointHashDiffers));
        }
        self.keys
            .verify(&checkpoint)
            .map_err(|e| bad(Fault::CheckpointRefused(e)))?;
        self.checkpoints += 1;
        self.last_checkpoint = Some(seq);
        Ok(())
    }

    /// Ends verification: no checkpoint may lie beyond the last entry, and the head row must
    /// name the last entry.
    pub fn finish(self, head: Option<&HeadRecord>) -> Result<ChainSummary, Break> {
        let last = self.next_seq - 1;
        if let Some(cp) = self.pending.back() {
            let checkpoint = cp.seq;
            return Err(Break::at(
                last + 1,
                Fault::EntriesRemoved { checkpoint, last },
            ));
        }
        match head {
            Some(h) if h.seq != i64::try_from(last).unwrap_or(i64::MAX) => {
                let head_seq = u64::try_from(h.seq).unwrap_or(0);
                let fault = Fault::HeadCountDiffers { head: h.seq, last };
                return Err(Break::at(head_seq.min(last) + 1, fault));
            }
            Some(h) if last > 0 && Hash::from_hex(&h.hash) != Some(self.prev) => {
                return Err(Break::at(last, Fault::HeadHashDiffers));
            }
            None if last > 0 => {
                return Err(Break::at(last + 1, Fault::HeadMissing));
            }
            _ => {}
        }
        Ok(ChainSummary {
            chain: self.chain,
            entries: last,
            checkpoints: self.checkpoints,
            head: self.prev,
            last_checkpoint: self.last_checkpoint,
        })
    }
}
