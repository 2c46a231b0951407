//! Audit data as the database stores it: plain columns, so both backends map rows the same way
//! and verification reads exactly what is on disk.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::audit::hash::Hash;
use crate::audit::signing::{Checkpoint, KeyId};
use crate::time::{NotRfc3339, Timestamp};

/// One stored entry. `time` and `event` duplicate fields of `entry` so they can be indexed;
/// verification checks that they agree with it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryRecord {
    pub chain: String,
    pub seq: i64,
    pub time: String,
    pub event: String,
    pub entry: String,
    pub hash: String,
}

/// Entry lines of a JSON Lines export as one run of text, the way a store hands them over for
/// an export: each `{"entry":…,"hash":"…","type":"entry"}` and a newline (docs/audit-format.md
/// §3), the entry exactly as it was hashed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryLines {
    pub text: String,
    pub count: u64,
    /// The last entry's seq and hash.
    pub last: Option<(i64, String)>,
}

impl EntryLines {
    /// Adds the line of one stored entry.
    pub fn push(&mut self, record: EntryRecord) {
        self.push_line(record.seq, &record.entry, &record.hash);
    }

    /// Adds the line of the entry `seq` stored as `entry` with `hash`.
    pub fn push_line(&mut self, seq: i64, entry: &str, hash: &str) {
        self.text.push_str("{\"entry\":");
        self.text.push_str(entry);
        self.text.push_str(",\"hash\":\"");
        self.text.push_str(hash);
        self.text.push_str("\",\"type\":\"entry\"}\n");
        self.count += 1;
        match &mut self.last {
            // The last hash's string is reused: a page of lines allocates only for its text.
            Some((last_seq, last_hash)) => {
                *last_seq = seq;
                last_hash.clear();
                last_hash.push_str(hash);
            }
            None => self.last = Some((seq, hash.to_owned())),
        }
    }
}

/// The head of a chain: the last sequence number and hash, and the row writers lock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeadRecord {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointRecord {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
    pub time: String,
    pub key_id: String,
    pub signature: String,
}

impl From<&Checkpoint> for CheckpointRecord {
    fn from(cp: &Checkpoint) -> Self {
        CheckpointRecord {
            chain: cp.chain.clone(),
            seq: i64::try_from(cp.seq).unwrap_or(i64::MAX),
            hash: cp.hash.to_hex(),
            time: cp.time.to_string(),
            key_id: cp.key_id.to_string(),
            signature: cp.signature_base64(),
        }
    }
}

/// Which column of a stored checkpoint cannot be what was signed: the row was edited.
#[derive(Debug, thiserror::Error)]
pub enum BadCheckpoint {
    #[error("checkpoint has invalid seq {0}")]
    Seq(i64),
    #[error("checkpoint hash is not 64 hex digits")]
    Hash,
    #[error("checkpoint time: {0}")]
    Time(NotRfc3339),
    /// The same instant spelled another way than the one ever written.
    #[error("checkpoint time is not in its canonical form")]
    TimeNotCanonical,
    #[error("checkpoint signature is not 64 base64-encoded bytes")]
    Signature,
    #[error("checkpoint key id: {0}")]
    KeyId(serde_json::Error),
}

impl CheckpointRecord {
    /// Parses the stored columns back into a checkpoint; the error names the bad column.
    pub fn parse(&self) -> Result<Checkpoint, BadCheckpoint> {
        let seq = u64::try_from(self.seq).map_err(|_| BadCheckpoint::Seq(self.seq))?;
        let hash = Hash::from_hex(&self.hash).ok_or(BadCheckpoint::Hash)?;
        let time: Timestamp = self.time.parse().map_err(BadCheckpoint::Time)?;
        // Only the canonical spelling is ever written; `t`/`z` or another offset for the same
        // instant still means the row was edited.
        if time.to_string() != self.time {
            return Err(BadCheckpoint::TimeNotCanonical);
        }
        let signature: [u8; 64] = BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(BadCheckpoint::Signature)?;
        let key_id: KeyId = serde_json::from_value(serde_json::Value::String(self.key_id.clone()))
            .map_err(BadCheckpoint::KeyId)?;
        Ok(Checkpoint {
            chain: self.chain.clone(),
            seq,
            hash,
            time,
            key_id,
            signature,
        })
    }
}
