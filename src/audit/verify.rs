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
use crate::audit::records::{CheckpointRecord, EntryRecord, HeadRecord};
use crate::audit::signing::KeyRing;

/// The first place a chain stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: u64,
    pub reason: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "first bad seq {}: {}", self.seq, self.reason)
    }
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
        let bad = |reason: String| Break { seq, reason };
        self.check_place(row, seq).map_err(bad)?;
        self.check_entry(row, seq).map_err(bad)?;
        let computed = Hash::link(&self.prev, row.entry.as_bytes());
        let computed_hex = computed.hex_bytes();
        if row.hash.as_bytes() != computed_hex {
            return Err(bad(
                "stored hash does not match the entry's content".to_owned()
            ));
        }
        self.check_checkpoints_at(seq, row.seq, &computed)?;
        self.prev = computed;
        self.prev_hex = computed_hex;
        self.next_seq += 1;
        Ok(())
    }

    /// The row is the one expected next: its number, in this chain.
    fn check_place(&self, row: &EntryRecord, seq: u64) -> Result<(), String> {
        let expected = i64::try_from(seq).unwrap_or(i64::MAX);
        if row.seq != expected {
            return Err(if row.seq > expected {
                format!(
                    "entry {seq} is missing (the next stored entry is {})",
                    row.seq
                )
            } else {
                format!(
                    "a row numbered {} appears where entry {seq} belongs",
                    row.seq
                )
            });
        }
        if row.chain != self.chain {
            return Err(format!("row belongs to chain `{}`", row.chain));
        }
        Ok(())
    }

    /// The entry says what its row and its place say, and chains from the previous entry.
    fn check_entry(&self, row: &EntryRecord, seq: u64) -> Result<(), String> {
        let link = Link::parse(&row.entry)
            .map_err(|e| format!("entry is not a valid audit entry: {e}"))?;
        if link.v != ENTRY_FORMAT_VERSION {
            return Err(format!("entry has unsupported format version {}", link.v));
        }
        if link.chain != self.chain {
            return Err(format!("entry names chain `{}`", link.chain));
        }
        if link.seq != seq {
            return Err(format!("entry names seq {}", link.seq));
        }
        // Hex is compared as text: only the lowercase spelling that was hashed is accepted.
        if link.prev_hash.as_bytes() != self.prev_hex {
            return Err(if seq == 1 {
                "prev_hash is not the chain's genesis value".to_owned()
            } else {
                format!("prev_hash does not match the hash of entry {}", seq - 1)
            });
        }
        if link.time != row.time {
            return Err("the time column differs from the entry's time".to_owned());
        }
        if link.event.kind != row.event {
            return Err("the event column differs from the entry's event type".to_owned());
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
                return Err(Break {
                    seq: 1,
                    reason: format!("a checkpoint names impossible seq {}", record.seq),
                });
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
        let bad = |reason: String| Err(Break { seq, reason });
        let checkpoint = match record.parse() {
            Ok(cp) => cp,
            Err(reason) => return bad(reason.to_string()),
        };
        if checkpoint.chain != self.chain {
            return bad(format!("checkpoint names chain `{}`", checkpoint.chain));
        }
        if checkpoint.hash != *computed {
            return bad(
                "the signed checkpoint's hash differs from the recomputed chain".to_owned(),
            );
        }
        if let Err(reason) = self.keys.verify(&checkpoint) {
            return bad(reason.to_string());
        }
        self.checkpoints += 1;
        self.last_checkpoint = Some(seq);
        Ok(())
    }

    /// Ends verification: no checkpoint may lie beyond the last entry, and the head row must
    /// name the last entry.
    pub fn finish(self, head: Option<&HeadRecord>) -> Result<ChainSummary, Break> {
        let last = self.next_seq - 1;
        if let Some(cp) = self.pending.back() {
            return Err(Break {
                seq: last + 1,
                reason: format!(
                    "a signed checkpoint covers entries up to {} but the chain ends at {last}: entries were removed",
                    cp.seq
                ),
            });
        }
        match head {
            Some(h) if h.seq != i64::try_from(last).unwrap_or(i64::MAX) => {
                let head_seq = u64::try_from(h.seq).unwrap_or(0);
                return Err(Break {
                    seq: head_seq.min(last) + 1,
                    reason: format!(
                        "the chain head says {} entries but {last} are stored",
                        h.seq
                    ),
                });
            }
            Some(h) if last > 0 && Hash::from_hex(&h.hash) != Some(self.prev) => {
                return Err(Break {
                    seq: last,
                    reason: "the chain head's hash differs from the last entry's hash".to_owned(),
                });
            }
            None if last > 0 => {
                return Err(Break {
                    seq: last + 1,
                    reason: "the chain head record is missing".to_owned(),
                });
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
