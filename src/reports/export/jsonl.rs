//! The verifiable export: a signed header line, every entry exactly as hashed with its hash,
//! each stored checkpoint right after the entry it signs, and a closing seal signed at export
//! time over the header's digest, the entry count and the last hash. docs/audit-format.md
//! specifies it.

use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Sink, Window};
use crate::audit::AuditKey;
use crate::audit::records::{CheckpointRecord, EntryRecord};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;

pub const FORMAT: &str = "killswitch-audit-export";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: String,
    pub version: u32,
    /// The chain: the customer's slug.
    pub chain: String,
    /// The customer's name, for people.
    pub customer: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub exported_at: String,
    /// First and last entry in the export (`null` when it holds none).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The hash the first entry chains from (its own `prev_hash`).
    pub prev_hash: Option<String>,
    /// The key the seal is signed with.
    pub key_id: String,
    /// The entries each followed by a stored signed checkpoint, so a removed checkpoint line is
    /// caught where it was.
    pub checkpoint_seqs: Vec<u64>,
    /// Ed25519 over the RFC 8785 form of the header without `signature`, so the header is
    /// checked on its own line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Header {
    /// The bytes the header's signature covers.
    pub fn message(&self) -> Result<Vec<u8>> {
        jcs(&Header {
            signature: None,
            ..self.clone()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    #[serde(rename = "type")]
    pub kind: String,
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub key_id: String,
    pub signature: String,
}

/// The closing seal. Its signature covers the RFC 8785 form of this object without
/// `signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    #[serde(rename = "type")]
    pub kind: String,
    pub chain: String,
    pub entries: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// SHA-256 (hex) of the header line's bytes.
    pub header_sha256: String,
    pub time: String,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Seal {
    /// The bytes the seal's signature covers.
    pub fn message(&self) -> Result<Vec<u8>> {
        let unsigned = Seal {
            signature: None,
            ..self.clone()
        };
        serde_jcs::to_vec(&unsigned).map_err(|e| Error::Internal(format!("seal: {e}")))
    }
}

fn jcs<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_jcs::to_vec(value).map_err(|e| Error::Internal(format!("export line: {e}")))
}

fn unsigned(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

pub(super) async fn write(
    store: &dyn Store,
    key: &AuditKey,
    window: &Window,
    sink: &mut Sink,
) -> Result<()> {
    let first_row = match window.seqs {
        Some((first, _)) => {
            store
                .entry_range(&window.chain, first, first)
                .try_next()
                .await?
        }
        None => None,
    };
    let header = signed_header(key, window, first_row.as_ref())?;
    let header_line = jcs(&header)?;
    let header_sha256 = const_hex::encode(Sha256::digest(&header_line));
    push_line(sink, &header_line);
    let written = write_entries(store, sink, window).await?;
    if written.count != window.entry_count() {
        return Err(Error::AuditUnavailable(format!(
            "the stored chain has gaps in the exported range ({} entries read); run `killswitch audit check`",
            written.count
        )));
    }
    let seal = signed_seal(key, window, &header, written, header_sha256)?;
    push_line(sink, &jcs(&seal)?);
    Ok(())
}

/// The header, signed; `prev_hash` comes from the first entry, the one place it is stated.
fn signed_header(
    key: &AuditKey,
    window: &Window,
    first_row: Option<&EntryRecord>,
) -> Result<Header> {
    let mut header = Header {
        kind: "header".to_owned(),
        format: FORMAT.to_owned(),
        version: VERSION,
        chain: window.chain.clone(),
        customer: window.customer_name.clone(),
        from: window.from.map(|t| t.to_string()),
        to: window.to.map(|t| t.to_string()),
        exported_at: window.exported_at.to_string(),
        first_seq: window.seqs.and_then(|(first, _)| unsigned(first)),
        last_seq: window.seqs.and_then(|(_, last)| unsigned(last)),
        prev_hash: first_row.and_then(|row| {
            crate::audit::entry::Link::parse(&row.entry)
                .ok()
                .map(|l| l.prev_hash.into_owned())
        }),
        key_id: key.key_id().to_string(),
        checkpoint_seqs: window
            .checkpoints
            .iter()
            .filter_map(|c| unsigned(c.seq))
            .collect(),
        signature: None,
    };
    header.signature = Some(key.sign_bytes(&header.message()?));
    Ok(header)
}

/// What the entry lines came to, for the seal.
struct Written {
    count: u64,
    /// The last entry's seq and hash.
    last: Option<(i64, String)>,
}

/// Every entry line of the window, each followed by the stored checkpoints that sign it. The
/// store builds the lines, in runs that end at each checkpoint's entry so the checkpoint can
/// follow it; they go out as they come, without another copy.
async fn write_entries(store: &dyn Store, sink: &mut Sink, window: &Window) -> Result<Written> {
    let mut written = Written {
        count: 0,
        last: None,
    };
    let Some((first, last)) = window.seqs else {
        return Ok(written);
    };
    let mut checkpoints = window.checkpoints.iter().peekable();
    let mut from = first;
    while from <= last {
        let to = match checkpoints.peek() {
            Some(cp) if (from..=last).contains(&cp.seq) => cp.seq,
            _ => last,
        };
        let mut runs = store.entry_lines(&window.chain, from, to);
        while let Some(run) = runs.try_next().await? {
            written.count += run.count;
            if run.last.is_some() {
                written.last = run.last;
            }
            sink.push_text(run.text).await?;
        }
        let last_written = written.last.as_ref().map(|(seq, _)| *seq);
        while let Some(cp) = checkpoints.next_if(|c| Some(c.seq) == last_written) {
            push_line(sink, &jcs(&checkpoint_line(cp)?)?);
        }
        let Some(next) = to.checked_add(1) else { break };
        from = next;
    }
    Ok(written)
}

/// The closing seal, signed now, over the header's digest and what was written.
fn signed_seal(
    key: &AuditKey,
    window: &Window,
    header: &Header,
    written: Written,
    header_sha256: String,
) -> Result<Seal> {
    let mut seal = Seal {
        kind: "seal".to_owned(),
        chain: window.chain.clone(),
        entries: written.count,
        first_seq: header.first_seq,
        last_seq: written.last.as_ref().and_then(|(seq, _)| unsigned(*seq)),
        last_hash: written.last.map(|(_, hash)| hash),
        header_sha256,
        time: Timestamp::now().to_string(),
        key_id: key.key_id().to_string(),
        signature: None,
    };
    seal.signature = Some(key.sign_bytes(&seal.message()?));
    Ok(seal)
}

fn push_line(sink: &mut Sink, line: &[u8]) {
    sink.buffer().extend_from_slice(line);
    sink.buffer().push(b'\n');
}

fn checkpoint_line(cp: &CheckpointRecord) -> Result<CheckpointLine> {
    let seq = unsigned(cp.seq).ok_or_else(|| {
        Error::AuditUnavailable(format!("a stored checkpoint has seq {}", cp.seq))
    })?;
    Ok(CheckpointLine {
        kind: "checkpoint".to_owned(),
        chain: cp.chain.clone(),
        seq,
        hash: cp.hash.clone(),
        time: cp.time.clone(),
        key_id: cp.key_id.clone(),
        signature: cp.signature.clone(),
    })
}
