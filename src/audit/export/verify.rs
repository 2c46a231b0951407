//! Checks a JSON Lines export line by line, in constant memory, trusting nothing but the
//! public keys it is given. The algorithm is the one docs/audit-format.md publishes, so a
//! customer's own verifier reaches the same verdict on the same line.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::jsonl::{CheckpointLine, FORMAT, Header, Seal, VERSION};
use crate::audit::entry::{ENTRY_FORMAT_VERSION, Link};
use crate::audit::hash::Hash;
use crate::audit::records::CheckpointRecord;
use crate::audit::signing::KeyRing;

/// The first line that cannot be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What an intact export proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub chain: String,
    pub customer: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub exported_at: String,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub entries: u64,
    pub checkpoints: u64,
    pub last_hash: Option<String>,
    pub key_id: String,
}

// An entry line is exactly `{"entry":` ENTRY `,"hash":"` 64 hex `","type":"entry"}`.
const ENTRY_PREFIX: &[u8] = b"{\"entry\":";
const HASH_INFIX: &[u8] = b",\"hash\":\"";
const ENTRY_SUFFIX: &[u8] = b"\",\"type\":\"entry\"}";

struct State<'k> {
    keys: &'k KeyRing,
    header: Header,
    header_sha256: String,
    /// The hash the next entry must chain from, as the hex text that was hashed.
    prev: Option<Hash>,
    next_seq: Option<u64>,
    /// The last entry read: its seq and hash.
    last: Option<(u64, Hash)>,
    /// Checkpoint seqs the header promises and the file has not yet shown.
    pending_checkpoints: VecDeque<u64>,
    entries: u64,
    checkpoints: u64,
}

type Check<T> = std::result::Result<T, String>;

/// Verifies the export in the file at `path`.
pub fn verify_file(
    path: &Path,
    keys: &KeyRing,
    expected_chain: Option<&str>,
) -> std::io::Result<Result<Verified, BadLine>> {
    verify(
        BufReader::with_capacity(1 << 20, File::open(path)?),
        keys,
        expected_chain,
    )
}

/// Verifies an export read from `reader`. `Ok(Err(bad))` is a verdict; `Err` is an I/O error.
pub fn verify<R: BufRead>(
    mut reader: R,
    keys: &KeyRing,
    expected_chain: Option<&str>,
) -> std::io::Result<Result<Verified, BadLine>> {
    let mut reading = Reading {
        keys,
        expected_chain,
        state: None,
        sealed: false,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number += 1;
        if let Err(reason) = reading.line(&buf) {
            return Ok(Err(BadLine {
                line: number,
                reason,
            }));
        }
    }
    Ok(reading.verdict(number))
}

/// How far the file has been read: before the header, inside the export, or past the seal.
struct Reading<'k, 'c> {
    keys: &'k KeyRing,
    expected_chain: Option<&'c str>,
    state: Option<State<'k>>,
    sealed: bool,
}

impl Reading<'_, '_> {
    /// Checks one line, newline included, and sends it to what its type calls for.
    fn line(&mut self, buf: &[u8]) -> Check<()> {
        if self.sealed {
            return Err(
                "a line follows the seal: it was added after the export was signed".to_owned(),
            );
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err("the line has no newline at its end: the file was cut off".to_owned());
        };
        match self.state.as_mut() {
            None => read_header(line, self.keys, self.expected_chain).map(|s| self.state = Some(s)),
            Some(st) if line.starts_with(ENTRY_PREFIX) => st.entry(line),
            Some(st) => match line_type(line).as_deref() {
                Some("checkpoint") => st.checkpoint(line),
                Some("seal") => st.seal(line).map(|()| self.sealed = true),
                Some("header") => {
                    Err("a second header: lines from another export were inserted".to_owned())
                }
                Some(other) => Err(format!("unknown line type `{other}`")),
                None => {
                    Err("the line is not an export line (JSON object with a `type`)".to_owned())
                }
            },
        }
    }

    /// The verdict once all `lines` were read and none was refused.
    fn verdict(self, lines: u64) -> Result<Verified, BadLine> {
        let Some(st) = self.state else {
            return Err(BadLine {
                line: 1,
                reason: "the file is empty; an export starts with its header".to_owned(),
            });
        };
        if !self.sealed {
            return Err(BadLine {
                line: lines + 1,
                reason: "the export ends before its seal: lines were cut off the end".to_owned(),
            });
        }
        Ok(Verified {
            chain: st.header.chain,
            customer: st.header.customer,
            from: st.header.from,
            to: st.header.to,
            exported_at: st.header.exported_at,
            first_seq: st.header.first_seq,
            last_seq: st.header.last_seq,
            entries: st.entries,
            checkpoints: st.checkpoints,
            last_hash: st.last.map(|(_, h)| h.to_hex()),
            key_id: st.header.key_id,
        })
    }
}

fn line_type(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Typed>(line).ok().map(|t| t.kind)
}

/// Parses a non-entry line and insists it is byte for byte the RFC 8785 form of what it says,
/// so no byte of it can change without being noticed here or by a signature.
fn canonical<T: serde::de::DeserializeOwned + Serialize>(line: &[u8], what: &str) -> Check<T> {
    let value: T =
        serde_json::from_slice(line).map_err(|e| format!("not a valid {what} line: {e}"))?;
    let again = serde_jcs::to_vec(&value).map_err(|e| format!("{what}: {e}"))?;
    if again != line {
        return Err(format!(
            "the {what} line is not in its canonical form (RFC 8785): it was edited"
        ));
    }
    Ok(value)
}

fn read_header<'k>(
    line: &[u8],
    keys: &'k KeyRing,
    expected_chain: Option<&str>,
) -> Check<State<'k>> {
    let header = signed_header(line, keys)?;
    check_header_claims(&header, expected_chain)?;
    let prev = header_prev_hash(&header)?;
    let seqs = &header.checkpoint_seqs;
    let in_range = |s: &u64| matches!((header.first_seq, header.last_seq), (Some(f), Some(l)) if *s >= f && *s <= l);
    if seqs.windows(2).any(|w| w[0] > w[1]) || !seqs.iter().all(in_range) {
        return Err("checkpoint_seqs are not in order inside the exported range".to_owned());
    }
    Ok(State {
        keys,
        header_sha256: const_hex::encode(Sha256::digest(line)),
        pending_checkpoints: seqs.iter().copied().collect(),
        prev,
        next_seq: header.first_seq,
        last: None,
        header,
        entries: 0,
        checkpoints: 0,
    })
}

/// The first line as a header, canonical and signed by one of the keys given.
fn signed_header(line: &[u8], keys: &KeyRing) -> Check<Header> {
    if line.starts_with(ENTRY_PREFIX) || line_type(line).as_deref() != Some("header") {
        return Err(
            "the first line is not the export header: lines were removed from the start".to_owned(),
        );
    }
    let header: Header = canonical(line, "header")?;
    if !keys.contains(&header.key_id) {
        return Err(format!(
            "the export is signed with key {}, which is not among the public keys given",
            header.key_id
        ));
    }
    let signature = header
        .signature
        .as_deref()
        .ok_or("the header has no signature")?;
    let message = header.message().map_err(|e| e.to_string())?;
    keys.verify_bytes(&header.key_id, &message, signature)
        .map_err(|reason| format!("the header's {reason}: it was changed"))?;
    Ok(header)
}

/// A signed header may still be of a format, version or customer this verifier was not
/// asked about.
fn check_header_claims(header: &Header, expected_chain: Option<&str>) -> Check<()> {
    if header.format != FORMAT {
        return Err(format!("the format is `{}`, not `{FORMAT}`", header.format));
    }
    if header.version != VERSION {
        return Err(format!(
            "format version {} is not supported (this verifier reads {VERSION})",
            header.version
        ));
    }
    if let Some(expected) = expected_chain
        && header.chain != expected
    {
        return Err(format!(
            "this is an export of customer `{}`, not of `{expected}`",
            header.chain
        ));
    }
    Ok(())
}

/// The hash the first entry must chain from; none when the export holds no entry.
fn header_prev_hash(header: &Header) -> Check<Option<Hash>> {
    match (&header.prev_hash, header.first_seq, header.last_seq) {
        (Some(text), Some(first), Some(last)) if first >= 1 && first <= last => {
            let prev = Hash::from_hex(text).ok_or("prev_hash is not 64 lowercase hex digits")?;
            if first == 1 && prev != Hash::genesis(&header.chain) {
                return Err(format!(
                    "prev_hash is not the genesis value of chain `{}`",
                    header.chain
                ));
            }
            Ok(Some(prev))
        }
        (None, None, None) => Ok(None),
        _ => Err("first_seq, last_seq and prev_hash disagree".to_owned()),
    }
}

impl State<'_> {
    fn owed_checkpoint(&self) -> Option<u64> {
        match (self.last, self.pending_checkpoints.front()) {
            (Some((seq, _)), Some(&owed)) if owed == seq => Some(seq),
            _ => None,
        }
    }

    fn entry(&mut self, line: &[u8]) -> Check<()> {
        if let Some(seq) = self.owed_checkpoint() {
            return Err(format!(
                "the signed checkpoint for entry {seq} should be here: it was removed"
            ));
        }
        let (raw, stated) = split_entry_line(line)?;
        let text = std::str::from_utf8(raw).map_err(|_| "the entry is not UTF-8".to_owned())?;
        let (link, own_prev) = self_consistent_entry(text, stated)?;
        let expected = self.place(&link, own_prev)?;
        self.prev = Some(stated);
        self.last = Some((expected, stated));
        self.next_seq = Some(expected + 1);
        self.entries += 1;
        Ok(())
    }

    /// Then the entry's place: this export's chain, the next seq, chained from the previous
    /// entry. Returns its seq.
    fn place(&self, link: &Link<'_>, own_prev: Hash) -> Check<u64> {
        if link.chain != self.header.chain {
            return Err(format!(
                "the entry belongs to chain `{}`, not `{}`: it comes from another export",
                link.chain, self.header.chain
            ));
        }
        let Some(expected) = self.next_seq else {
            return Err("the header says this export holds no entries".to_owned());
        };
        if self.header.last_seq.is_some_and(|last| expected > last) {
            return Err(format!(
                "an entry after entry {expected_last}, the last the header declares",
                expected_last = expected - 1
            ));
        }
        if link.seq != expected {
            return Err(if link.seq > expected {
                format!(
                    "entry {expected} is missing (this line holds entry {})",
                    link.seq
                )
            } else {
                format!(
                    "entry {} appears where entry {expected} belongs: lines were moved or repeated",
                    link.seq
                )
            });
        }
        if Some(own_prev) != self.prev {
            return Err(if self.entries == 0 {
                "the first entry does not chain from the header's prev_hash".to_owned()
            } else {
                format!("the entry does not chain from entry {}", expected - 1)
            });
        }
        Ok(expected)
    }

    fn checkpoint(&mut self, line: &[u8]) -> Check<()> {
        let cp: CheckpointLine = canonical(line, "checkpoint")?;
        let Some((seq, hash)) = self.last else {
            return Err("a checkpoint before any entry".to_owned());
        };
        if cp.seq != seq {
            return Err(format!(
                "a checkpoint for entry {} right after entry {seq}: lines were removed or moved",
                cp.seq
            ));
        }
        if self.owed_checkpoint() != Some(seq) {
            return Err(format!(
                "a checkpoint for entry {seq} where the header announces none: it was added or repeated"
            ));
        }
        if cp.chain != self.header.chain {
            return Err(format!("the checkpoint names chain `{}`", cp.chain));
        }
        let record = CheckpointRecord {
            chain: cp.chain,
            seq: i64::try_from(cp.seq).unwrap_or(i64::MAX),
            hash: cp.hash,
            time: cp.time,
            key_id: cp.key_id,
            signature: cp.signature,
        };
        let parsed = record.parse().map_err(|e| e.to_string())?;
        if parsed.hash != hash {
            return Err(format!("the checkpoint's hash differs from entry {seq}'s"));
        }
        self.keys.verify(&parsed).map_err(|e| e.to_string())?;
        self.pending_checkpoints.pop_front();
        self.checkpoints += 1;
        Ok(())
    }

    fn seal(&mut self, line: &[u8]) -> Check<()> {
        if let Some(seq) = self.owed_checkpoint() {
            return Err(format!(
                "the signed checkpoint for entry {seq} should be here: it was removed"
            ));
        }
        let seal: Seal = canonical(line, "seal")?;
        let signature = seal.signature.clone().ok_or("the seal has no signature")?;
        // The signature first: once it holds, every field below is the exporter's statement.
        self.keys
            .verify_bytes(
                &seal.key_id,
                &seal.message().map_err(|e| e.to_string())?,
                &signature,
            )
            .map_err(|reason| format!("the seal's {reason}"))?;
        if seal.kind != "seal"
            || seal.chain != self.header.chain
            || seal.key_id != self.header.key_id
        {
            return Err("the seal is for another export".to_owned());
        }
        if seal.header_sha256 != self.header_sha256 {
            return Err(
                "the seal was made for another header: it comes from another export".to_owned(),
            );
        }
        let last_seq = self.last.map(|(seq, _)| seq);
        if seal.entries != self.entries
            || seal.last_seq != last_seq
            || seal.first_seq != self.header.first_seq
        {
            return Err(format!(
                "the seal signs {} entries ending at {:?}, the file holds {} ending at {:?}: entries were removed",
                seal.entries, seal.last_seq, self.entries, last_seq
            ));
        }
        if last_seq != self.header.last_seq {
            return Err("the entries end before the header's last_seq".to_owned());
        }
        if seal.last_hash != self.last.map(|(_, h)| h.to_hex()) {
            return Err("the seal's last_hash differs from the last entry's hash".to_owned());
        }
        if let Some(seq) = self.pending_checkpoints.front() {
            return Err(format!(
                "the header announces a checkpoint for entry {seq} that is not in the file"
            ));
        }
        Ok(())
    }
}

/// An entry line's entry bytes and the hash it states, once the line has the one layout an
/// entry line may have.
fn split_entry_line(line: &[u8]) -> Check<(&[u8], Hash)> {
    let min = ENTRY_PREFIX.len() + HASH_INFIX.len() + 64 + ENTRY_SUFFIX.len();
    let layout = line.len() > min
        && line.ends_with(ENTRY_SUFFIX)
        && line[line.len() - ENTRY_SUFFIX.len() - 64 - HASH_INFIX.len()..].starts_with(HASH_INFIX);
    if !layout {
        return Err(
            "not an entry line of the form {\"entry\":…,\"hash\":\"…\",\"type\":\"entry\"}"
                .to_owned(),
        );
    }
    let hash_at = line.len() - ENTRY_SUFFIX.len() - 64;
    let raw = &line[ENTRY_PREFIX.len()..hash_at - HASH_INFIX.len()];
    let stated = std::str::from_utf8(&line[hash_at..hash_at + 64])
        .ok()
        .and_then(Hash::from_hex)
        .ok_or("the entry's hash is not 64 lowercase hex digits")?;
    Ok((raw, stated))
}

/// First the line against itself: a valid entry whose stated hash covers exactly these bytes.
/// Returns the entry and the hash it chains from.
fn self_consistent_entry(text: &str, stated: Hash) -> Check<(Link<'_>, Hash)> {
    let link =
        Link::parse(text).map_err(|e| format!("the entry is not a valid audit entry: {e}"))?;
    let own_prev = Hash::from_hex(&link.prev_hash)
        .ok_or("the entry's prev_hash is not 64 lowercase hex digits")?;
    if Hash::link(&own_prev, text.as_bytes()) != stated {
        return Err("the entry's content does not match its hash: it was changed".to_owned());
    }
    if link.v != ENTRY_FORMAT_VERSION {
        return Err(format!(
            "the entry has unsupported format version {}",
            link.v
        ));
    }
    Ok((link, own_prev))
}
