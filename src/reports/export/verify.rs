//! Checks a JSON Lines export line by line, in constant memory, trusting nothing but the
//! public keys it is given. The algorithm is the one docs/audit-format.md publishes, so a
//! customer's own verifier reaches the same verdict on the same line. Given the witnesses a
//! customer kept, it also refuses an export whose log was rewritten after one was issued.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

mod batch;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::form::{self, Broken, Link};
use super::jsonl::{CheckpointLine, FORMAT, Header, Seal, VERSION};
use crate::audit::entry::ENTRY_FORMAT_VERSION;
use crate::audit::hash::Hash;
use crate::audit::records::{BadCheckpoint, CheckpointRecord};
use crate::audit::signing::{CheckpointRefusal, KeyId, KeyRing, SignatureRefusal};
use crate::audit::witness::Witness;
use crate::error::Error;
use crate::time::Timestamp;

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
    /// The witnesses the export was found to agree with.
    pub witnesses: u64,
}

/// What an export is held to besides the keys: none of it by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// The chain (the customer's slug) the export must be of.
    pub chain: Option<&'a str>,
    /// Witnesses the customer kept: each must be signed by a key given, be of the export's
    /// chain, and name an entry the export holds with exactly the witnessed hash.
    pub witnesses: &'a [Witness],
}

// An entry line is exactly `{"entry":` ENTRY `,"hash":"` 64 hex `","type":"entry"}`.
const ENTRY_PREFIX: &[u8] = b"{\"entry\":";
const HASH_INFIX: &[u8] = b",\"hash\":\"";
const ENTRY_SUFFIX: &[u8] = b"\",\"type\":\"entry\"}";

struct State<'k, 'c> {
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
    /// Witnesses of entries inside the header's range, by seq, not yet met.
    awaited: VecDeque<&'c Witness>,
    /// Witnesses of entries outside it, by seq: the export cannot be checked against them.
    beyond: Vec<&'c Witness>,
}

/// Why an export is not intact at the line being read; the message is a [`BadLine`]'s
/// `reason`, and docs/verify_export.py words each the same.
#[derive(Debug, thiserror::Error)]
enum NotIntact {
    #[error("the file is empty; an export starts with its header")]
    Empty,
    #[error("the line has no newline at its end: the file was cut off")]
    CutOff,
    #[error("a line follows the seal: it was added after the export was signed")]
    AfterSeal,
    #[error(
        "the line nests arrays and objects deeper than {} levels",
        form::MAX_DEPTH
    )]
    TooDeep,
    #[error("the export ends before its seal: lines were cut off the end")]
    SealMissing,
    #[error("a second header: lines from another export were inserted")]
    SecondHeader,
    #[error("unknown line type `{0}`")]
    UnknownLineType(String),
    #[error("the line is not an export line (JSON object with a `type`)")]
    NotAnExportLine,
    #[error("not a valid {what} line: {error}")]
    Malformed {
        what: &'static str,
        error: serde_json::Error,
    },
    /// A promise of docs/audit-format.md broken: a member missing, unknown or of the wrong
    /// type, a number that is not a whole number below 2^53, a time in another spelling.
    #[error("{}", broken.describe(what))]
    Form { what: &'static str, broken: Broken },
    #[error("the {0} line is not in its canonical form (RFC 8785): it was edited")]
    NotCanonical(&'static str),

    // The header.
    #[error("the first line is not the export header: lines were removed from the start")]
    HeaderMissing,
    #[error(
        "the file starts with a byte-order mark: an export is UTF-8 without one (an editor saved it again)"
    )]
    ByteOrderMark,
    #[error("the export is signed with key {0}, which is not among the public keys given")]
    KeyNotGiven(String),
    #[error("the header has no signature")]
    HeaderUnsigned,
    /// The header or the seal cannot be put into the form its signature covers.
    #[error("{0}")]
    Unsignable(Error),
    #[error("the header's {0}")]
    HeaderSignature(SignatureRefusal),
    #[error("the format is `{0}`, not `{FORMAT}`")]
    OtherFormat(String),
    #[error("format version {0} is not supported (this verifier reads {VERSION})")]
    UnsupportedFormatVersion(u32),
    #[error("this is an export of customer `{found}`, not of `{expected}`")]
    OtherCustomer { found: String, expected: String },
    #[error("prev_hash is not 64 lowercase hex digits")]
    HeaderPrevHashNotHex,
    #[error("prev_hash is not the genesis value of chain `{0}`")]
    NotFromGenesis(String),
    #[error("first_seq, last_seq and prev_hash disagree")]
    RangeDisagrees,
    #[error("checkpoint_seqs are not in order inside the exported range")]
    CheckpointSeqsOutOfRange,

    // An entry line.
    #[error("not an entry line of the form {{\"entry\":…,\"hash\":\"…\",\"type\":\"entry\"}}")]
    NotAnEntryLine,
    #[error("the entry's hash is not 64 lowercase hex digits")]
    EntryHashNotHex,
    #[error("the entry is not UTF-8")]
    EntryNotUtf8,
    /// Not JSON as section 1 of docs/audit-format.md allows it; the parser's own words are
    /// left out, as no two parsers word a fault alike.
    #[error("the entry is not valid JSON")]
    EntryNotJson,
    #[error(
        "the entry is not a valid audit entry: an object with v, chain, seq, time, prev_hash and an event with a type"
    )]
    NotAnEntry,
    #[error("the entry's prev_hash is not 64 lowercase hex digits")]
    EntryPrevHashNotHex,
    #[error("the entry's content does not match its hash: it was changed")]
    EntryChanged,
    #[error("the entry has unsupported format version {0}")]
    UnsupportedEntryVersion(u32),
    #[error("the entry belongs to chain `{found}`, not `{expected}`: it comes from another export")]
    EntryOfAnotherChain { found: String, expected: String },
    #[error("the header says this export holds no entries")]
    NoEntriesDeclared,
    #[error("an entry after entry {0}, the last the header declares")]
    BeyondDeclaredLast(u64),
    #[error("entry {expected} is missing (this line holds entry {found})")]
    EntryMissing { expected: u64, found: u64 },
    #[error("entry {found} appears where entry {expected} belongs: lines were moved or repeated")]
    EntryOutOfPlace { expected: u64, found: u64 },
    #[error("the first entry does not chain from the header's prev_hash")]
    FirstNotFromHeader,
    #[error("the entry does not chain from entry {0}")]
    NotFromPrevious(u64),

    // A checkpoint line.
    #[error("the signed checkpoint for entry {0} should be here: it was removed")]
    CheckpointRemoved(u64),
    #[error("a checkpoint before any entry")]
    CheckpointBeforeEntries,
    #[error(
        "a checkpoint for entry {checkpoint} right after entry {after}: lines were removed or moved"
    )]
    CheckpointOutOfPlace { checkpoint: u64, after: u64 },
    #[error("a checkpoint for entry {0} where the header announces none: it was added or repeated")]
    CheckpointUnannounced(u64),
    #[error("the checkpoint names chain `{0}`")]
    CheckpointOfAnotherChain(String),
    #[error("{0}")]
    BadCheckpoint(BadCheckpoint),
    #[error("the checkpoint's hash differs from entry {0}'s")]
    CheckpointHashDiffers(u64),
    #[error("{0}")]
    CheckpointRefused(CheckpointRefusal),

    // The seal.
    #[error("the seal has no signature")]
    SealUnsigned,
    #[error("the seal's {0}")]
    SealSignature(SignatureRefusal),
    #[error("the seal is for another export")]
    SealOfAnotherExport,
    #[error("the seal was made for another header: it comes from another export")]
    SealOfAnotherHeader,
    /// The file (and its header) starts elsewhere than the seal says: the seal was made for
    /// another run of entries.
    #[error("{}", start_differs(*sealed, *held))]
    StartDiffers {
        sealed: Option<u64>,
        held: Option<u64>,
    },
    #[error(
        "the seal signs {sealed} entries ending at {}, the file holds {held} ending at {}: {}",
        ending(*sealed_last),
        ending(*held_last),
        count_differs(*sealed, *held)
    )]
    EntriesDiffer {
        sealed: u64,
        sealed_last: Option<u64>,
        held: u64,
        held_last: Option<u64>,
    },
    #[error("the entries end before the header's last_seq")]
    EndsBeforeLastSeq,
    #[error("the seal's last_hash differs from the last entry's hash")]
    SealHashDiffers,
    #[error("the header announces a checkpoint for entry {0} that is not in the file")]
    AnnouncedCheckpointMissing(u64),

    // The witnesses given, checked after the header, and at their entry or the seal.
    #[error(
        "the witness of entry {seq} issued {time} is signed with key {key}, which is not among the public keys given"
    )]
    WitnessKeyNotGiven {
        seq: u64,
        time: Timestamp,
        key: KeyId,
    },
    #[error(
        "the witness of entry {seq} issued {time} does not verify with key {key}: it is forged or was changed"
    )]
    WitnessForged {
        seq: u64,
        time: Timestamp,
        key: KeyId,
    },
    #[error(
        "the witness of entry {seq} issued {time} is of chain `{found}`, but this is an export of `{expected}`"
    )]
    WitnessOfAnotherChain {
        seq: u64,
        time: Timestamp,
        found: String,
        expected: String,
    },
    #[error(
        "entry {seq} has hash {found} but the witness issued {time} says {witnessed}: the log was rewritten after the witness"
    )]
    RewrittenSinceWitness {
        seq: u64,
        found: Hash,
        time: Timestamp,
        witnessed: Hash,
    },
    #[error(
        "the witness issued {time} is of entry {seq}, which this export does not hold ({}): export a period that includes entry {seq}",
        holding(*first, *last)
    )]
    WitnessedEntryNotHeld {
        seq: u64,
        time: Timestamp,
        first: Option<u64>,
        last: Option<u64>,
    },
}

type Check<T> = std::result::Result<T, NotIntact>;

impl BadLine {
    fn at(line: u64, why: NotIntact) -> BadLine {
        BadLine {
            line,
            reason: why.to_string(),
        }
    }
}

/// Verifies the export in the file at `path`, of `expected_chain` when one is given.
pub fn verify_file(
    path: &Path,
    keys: &KeyRing,
    expected_chain: Option<&str>,
) -> std::io::Result<Result<Verified, BadLine>> {
    let expected = Expected {
        chain: expected_chain,
        ..Expected::default()
    };
    verify_file_with(path, keys, expected)
}

/// Verifies an export read from `reader`, of `expected_chain` when one is given.
/// `Ok(Err(bad))` is a verdict; `Err` is an I/O error.
pub fn verify<R: BufRead>(
    reader: R,
    keys: &KeyRing,
    expected_chain: Option<&str>,
) -> std::io::Result<Result<Verified, BadLine>> {
    let expected = Expected {
        chain: expected_chain,
        ..Expected::default()
    };
    verify_with(reader, keys, expected)
}

/// [`verify_file`], holding the export to everything `expected` says.
pub fn verify_file_with(
    path: &Path,
    keys: &KeyRing,
    expected: Expected<'_>,
) -> std::io::Result<Result<Verified, BadLine>> {
    verify_with(
        // Blocks are read straight into their own buffers, past a small one.
        BufReader::with_capacity(64 << 10, File::open(path)?),
        keys,
        expected,
    )
}

/// [`verify`], holding the export to everything `expected` says.
pub fn verify_with<R: BufRead>(
    reader: R,
    keys: &KeyRing,
    expected: Expected<'_>,
) -> std::io::Result<Result<Verified, BadLine>> {
    let mut reading = Reading {
        keys,
        expected,
        state: None,
        sealed: false,
        lines: 0,
    };
    let cores = batch::cores();
    let mut lines = batch::Lines::new(reader);
    let (mut block, mut spare) = (batch::Block::default(), batch::Block::default());
    let mut read = lines.fill(&mut block);
    // The block checked last, read in order while the next is checked and the one after read.
    let mut previous: Option<(batch::Block, Vec<Ahead>)> = None;
    loop {
        let more = read.is_ok() && !block.is_empty();
        let (checked, (passed, next_read)) =
            batch::check_while(&block, cores, self_checked_line, || {
                let passed = previous.as_mut().map_or(Ok(()), |(done, ahead)| {
                    reading.block(done, std::mem::take(ahead))
                });
                let next_read = (more && passed.is_ok()).then(|| lines.fill(&mut spare));
                (passed, next_read)
            });
        if let Err(bad) = passed {
            return Ok(Err(bad));
        }
        let freed = previous.take().map(|(done, _)| done).unwrap_or_default();
        match next_read {
            Some(next_read) => {
                previous = Some((block, checked));
                block = std::mem::replace(&mut spare, freed);
                read = next_read;
            }
            None => {
                if let Err(bad) = reading.block(&block, checked) {
                    return Ok(Err(bad));
                }
                // An I/O error counts only once every line read before it was checked.
                read?;
                return Ok(reading.verdict());
            }
        }
    }
}

/// An entry line's check against itself, made ahead; `None` for other lines.
type Ahead = Option<Check<SelfChecked>>;

/// How far the file has been read: before the header, inside the export, or past the seal.
struct Reading<'k, 'c> {
    keys: &'k KeyRing,
    expected: Expected<'c>,
    state: Option<State<'k, 'c>>,
    sealed: bool,
    /// Lines read so far.
    lines: u64,
}

impl Reading<'_, '_> {
    /// Reads a block's lines in order, each with its check made ahead.
    fn block(&mut self, block: &batch::Block, ahead: Vec<Ahead>) -> Result<(), BadLine> {
        for (line, checked) in block.lines().zip(ahead) {
            self.lines += 1;
            self.line(line, checked)
                .map_err(|why| BadLine::at(self.lines, why))?;
        }
        Ok(())
    }

    /// Checks one line, newline included, and sends it to what its type calls for. `checked`
    /// is the line's check against itself when it was made ahead (entry lines, in parallel).
    fn line(&mut self, buf: &[u8], checked: Ahead) -> Check<()> {
        if self.sealed {
            return Err(NotIntact::AfterSeal);
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(NotIntact::CutOff);
        };
        // A line checked ahead was found to nest within the limit then.
        if checked.is_none() && !form::nests_within_limit(line) {
            return Err(NotIntact::TooDeep);
        }
        match self.state.as_mut() {
            None => read_header(line, self.keys, self.expected).map(|s| self.state = Some(s)),
            Some(st) if line.starts_with(ENTRY_PREFIX) => st.entry(line, checked),
            Some(st) => match line_type(line).as_deref() {
                Some("checkpoint") => st.checkpoint(line),
                Some("seal") => st.seal(line).map(|()| self.sealed = true),
                Some("header") => Err(NotIntact::SecondHeader),
                Some(other) => Err(NotIntact::UnknownLineType(other.to_owned())),
                None => Err(NotIntact::NotAnExportLine),
            },
        }
    }

    /// The verdict once all `lines` were read and none was refused.
    fn verdict(self) -> Result<Verified, BadLine> {
        let lines = self.lines;
        let Some(st) = self.state else {
            return Err(BadLine::at(1, NotIntact::Empty));
        };
        if !self.sealed {
            return Err(BadLine::at(lines + 1, NotIntact::SealMissing));
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
            witnesses: u64::try_from(self.expected.witnesses.len()).unwrap_or(u64::MAX),
        })
    }
}

/// The `type` of a line that is JSON (all of it, as strict as section 1 asks) and an object
/// with a string `type`.
fn line_type(line: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(line).ok()?.get("type")? {
        Value::String(kind) => Some(kind.clone()),
        _ => None,
    }
}

/// Parses a non-entry line, checks the members `table` lists and their types, and insists the
/// line is byte for byte the RFC 8785 form of what it says, so no byte of it can change without
/// being noticed here or by a signature.
fn canonical<T: serde::de::DeserializeOwned>(
    line: &[u8],
    what: &'static str,
    table: &'static [form::Member],
) -> Check<T> {
    let value: Value =
        serde_json::from_slice(line).map_err(|error| NotIntact::Malformed { what, error })?;
    form::members(&value, table).map_err(|broken| NotIntact::Form { what, broken })?;
    form::canonical(&value, line).map_err(|_| NotIntact::NotCanonical(what))?;
    serde_json::from_value(value).map_err(|error| NotIntact::Malformed { what, error })
}

/// What the format promises of an entry whose hash holds: exactly its members, each of its
/// type, whole numbers below 2^53, and no other spelling than its canonical bytes.
fn entry_form(value: &Value, text: &str) -> Check<()> {
    let broken = |broken| NotIntact::Form {
        what: "entry",
        broken,
    };
    form::members(value, form::ENTRY).map_err(broken)?;
    form::integers(value, "").map_err(broken)?;
    form::canonical(value, text.as_bytes()).map_err(broken)
}

/// The seal's first entry against the file's (the header's `first_seq`, which the entries
/// were held to), in words.
fn start_differs(sealed: Option<u64>, held: Option<u64>) -> String {
    match (sealed, held) {
        (Some(s), Some(h)) if s < h => format!(
            "the first entry the seal announces, entry {s}, is missing: the file starts at entry {h}"
        ),
        (Some(s), None) => {
            format!(
                "the first entry the seal announces, entry {s}, is missing: the file holds none"
            )
        }
        (Some(s), Some(h)) => {
            format!(
                "the seal announces entry {s} as the first, but the file starts at entry {h}: entries were added before it"
            )
        }
        (None, _) => format!(
            "the seal announces no entries, but the file starts at {}: entries were added",
            ending(held)
        ),
    }
}

/// What a difference in the number of entries means.
fn count_differs(sealed: u64, held: u64) -> &'static str {
    match held.cmp(&sealed) {
        std::cmp::Ordering::Less => "entries were removed",
        std::cmp::Ordering::Greater => "entries were added",
        std::cmp::Ordering::Equal => "entries were replaced",
    }
}

/// Where a run of entries ends, in words.
fn ending(last_seq: Option<u64>) -> String {
    match last_seq {
        Some(seq) => format!("entry {seq}"),
        None => "no entry".to_owned(),
    }
}

/// What an export holds, in words, after "this export does not hold".
fn holding(first: Option<u64>, last: Option<u64>) -> String {
    match (first, last) {
        (Some(first), Some(last)) => format!("it holds entries {first} to {last}"),
        _ => "it holds no entries".to_owned(),
    }
}

fn read_header<'k, 'c>(
    line: &[u8],
    keys: &'k KeyRing,
    expected: Expected<'c>,
) -> Check<State<'k, 'c>> {
    let header = signed_header(line, keys)?;
    check_header_claims(&header, expected.chain)?;
    let prev = header_prev_hash(&header)?;
    let seqs = &header.checkpoint_seqs;
    let in_range = |s: &u64| matches!((header.first_seq, header.last_seq), (Some(f), Some(l)) if *s >= f && *s <= l);
    if seqs.windows(2).any(|w| w[0] > w[1]) || !seqs.iter().all(in_range) {
        return Err(NotIntact::CheckpointSeqsOutOfRange);
    }
    check_witnesses(&header, keys, expected.witnesses)?;
    let mut witnesses: Vec<&Witness> = expected.witnesses.iter().collect();
    witnesses.sort_by_key(|w| w.seq);
    let (awaited, beyond): (Vec<_>, Vec<_>) = witnesses.into_iter().partition(|w| in_range(&w.seq));
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
        awaited: awaited.into(),
        beyond,
    })
}

/// Each witness, in the order given, signed by a key given and of the export's chain; a
/// witness the keys do not vouch for proves nothing either way, so it is refused outright.
fn check_witnesses(header: &Header, keys: &KeyRing, witnesses: &[Witness]) -> Check<()> {
    for w in witnesses {
        w.verify_signature(keys).map_err(|refusal| match refusal {
            CheckpointRefusal::UnknownKey(key) => NotIntact::WitnessKeyNotGiven {
                seq: w.seq,
                time: w.time,
                key,
            },
            CheckpointRefusal::DoesNotVerify(key) => NotIntact::WitnessForged {
                seq: w.seq,
                time: w.time,
                key,
            },
            CheckpointRefusal::Unsignable(error) => NotIntact::Unsignable(error),
        })?;
        if w.chain != header.chain {
            return Err(NotIntact::WitnessOfAnotherChain {
                seq: w.seq,
                time: w.time,
                found: w.chain.clone(),
                expected: header.chain.clone(),
            });
        }
    }
    Ok(())
}

/// The first line as a header, canonical and signed by one of the keys given.
fn signed_header(line: &[u8], keys: &KeyRing) -> Check<Header> {
    if line.starts_with("\u{feff}".as_bytes()) {
        return Err(NotIntact::ByteOrderMark);
    }
    if line.starts_with(ENTRY_PREFIX) || line_type(line).as_deref() != Some("header") {
        return Err(NotIntact::HeaderMissing);
    }
    let header: Header = canonical(line, "header", form::HEADER)?;
    if !keys.contains(&header.key_id) {
        return Err(NotIntact::KeyNotGiven(header.key_id));
    }
    let signature = header
        .signature
        .as_deref()
        .ok_or(NotIntact::HeaderUnsigned)?;
    let message = header.message().map_err(NotIntact::Unsignable)?;
    keys.verify_bytes(&header.key_id, &message, signature)
        .map_err(NotIntact::HeaderSignature)?;
    Ok(header)
}

/// A signed header may still be of a format, version or customer this verifier was not
/// asked about.
fn check_header_claims(header: &Header, expected_chain: Option<&str>) -> Check<()> {
    if header.format != FORMAT {
        return Err(NotIntact::OtherFormat(header.format.clone()));
    }
    if header.version != VERSION {
        return Err(NotIntact::UnsupportedFormatVersion(header.version));
    }
    if let Some(expected) = expected_chain
        && header.chain != expected
    {
        return Err(NotIntact::OtherCustomer {
            found: header.chain.clone(),
            expected: expected.to_owned(),
        });
    }
    Ok(())
}

/// The hash the first entry must chain from; none when the export holds no entry.
fn header_prev_hash(header: &Header) -> Check<Option<Hash>> {
    match (&header.prev_hash, header.first_seq, header.last_seq) {
        (Some(text), Some(first), Some(last)) if first >= 1 && first <= last => {
            let prev = Hash::from_hex(text).ok_or(NotIntact::HeaderPrevHashNotHex)?;
            if first == 1 && prev != Hash::genesis(&header.chain) {
                return Err(NotIntact::NotFromGenesis(header.chain.clone()));
            }
            Ok(Some(prev))
        }
        (None, None, None) => Ok(None),
        _ => Err(NotIntact::RangeDisagrees),
    }
}

impl State<'_, '_> {
    fn owed_checkpoint(&self) -> Option<u64> {
        match (self.last, self.pending_checkpoints.front()) {
            (Some((seq, _)), Some(&owed)) if owed == seq => Some(seq),
            _ => None,
        }
    }

    fn entry(&mut self, line: &[u8], checked: Ahead) -> Check<()> {
        if let Some(seq) = self.owed_checkpoint() {
            return Err(NotIntact::CheckpointRemoved(seq));
        }
        let entry = checked.unwrap_or_else(|| self_checked(line))?;
        let expected = self.place(&entry)?;
        self.witnessed(expected, entry.stated)?;
        self.prev = Some(entry.stated);
        self.last = Some((expected, entry.stated));
        self.next_seq = Some(expected + 1);
        self.entries += 1;
        Ok(())
    }

    /// Then the entry's place: this export's chain, the next seq, chained from the previous
    /// entry. Returns its seq.
    fn place(&self, entry: &SelfChecked) -> Check<u64> {
        if entry.chain != self.header.chain {
            return Err(NotIntact::EntryOfAnotherChain {
                found: entry.chain.clone(),
                expected: self.header.chain.clone(),
            });
        }
        let Some(expected) = self.next_seq else {
            return Err(NotIntact::NoEntriesDeclared);
        };
        if self.header.last_seq.is_some_and(|last| expected > last) {
            return Err(NotIntact::BeyondDeclaredLast(expected - 1));
        }
        let found = entry.seq;
        if found != expected {
            return Err(if found > expected {
                NotIntact::EntryMissing { expected, found }
            } else {
                NotIntact::EntryOutOfPlace { expected, found }
            });
        }
        if Some(entry.own_prev) != self.prev {
            return Err(if self.entries == 0 {
                NotIntact::FirstNotFromHeader
            } else {
                NotIntact::NotFromPrevious(expected - 1)
            });
        }
        Ok(expected)
    }

    /// The entry at `seq`, intact and in its place, against the witnesses of that seq.
    fn witnessed(&mut self, seq: u64, hash: Hash) -> Check<()> {
        while let Some(&w) = self.awaited.front().filter(|w| w.seq == seq) {
            if w.hash != hash {
                return Err(NotIntact::RewrittenSinceWitness {
                    seq,
                    found: hash,
                    time: w.time,
                    witnessed: w.hash,
                });
            }
            self.awaited.pop_front();
        }
        Ok(())
    }

    fn checkpoint(&mut self, line: &[u8]) -> Check<()> {
        let cp: CheckpointLine = canonical(line, "checkpoint", form::CHECKPOINT)?;
        let Some((seq, hash)) = self.last else {
            return Err(NotIntact::CheckpointBeforeEntries);
        };
        if cp.seq != seq {
            return Err(NotIntact::CheckpointOutOfPlace {
                checkpoint: cp.seq,
                after: seq,
            });
        }
        if self.owed_checkpoint() != Some(seq) {
            return Err(NotIntact::CheckpointUnannounced(seq));
        }
        if cp.chain != self.header.chain {
            return Err(NotIntact::CheckpointOfAnotherChain(cp.chain));
        }
        let record = CheckpointRecord {
            chain: cp.chain,
            seq: i64::try_from(cp.seq).unwrap_or(i64::MAX),
            hash: cp.hash,
            time: cp.time,
            key_id: cp.key_id,
            signature: cp.signature,
        };
        let parsed = record.parse().map_err(NotIntact::BadCheckpoint)?;
        if parsed.hash != hash {
            return Err(NotIntact::CheckpointHashDiffers(seq));
        }
        self.keys
            .verify(&parsed)
            .map_err(NotIntact::CheckpointRefused)?;
        self.pending_checkpoints.pop_front();
        self.checkpoints += 1;
        Ok(())
    }

    fn seal(&mut self, line: &[u8]) -> Check<()> {
        if let Some(seq) = self.owed_checkpoint() {
            return Err(NotIntact::CheckpointRemoved(seq));
        }
        let seal: Seal = canonical(line, "seal", form::SEAL)?;
        let signature = seal.signature.clone().ok_or(NotIntact::SealUnsigned)?;
        // The signature first: once it holds, every field below is the exporter's statement.
        self.keys
            .verify_bytes(
                &seal.key_id,
                &seal.message().map_err(NotIntact::Unsignable)?,
                &signature,
            )
            .map_err(NotIntact::SealSignature)?;
        if seal.kind != "seal"
            || seal.chain != self.header.chain
            || seal.key_id != self.header.key_id
        {
            return Err(NotIntact::SealOfAnotherExport);
        }
        if seal.header_sha256 != self.header_sha256 {
            return Err(NotIntact::SealOfAnotherHeader);
        }
        if seal.first_seq != self.header.first_seq {
            return Err(NotIntact::StartDiffers {
                sealed: seal.first_seq,
                held: self.header.first_seq,
            });
        }
        let last_seq = self.last.map(|(seq, _)| seq);
        if seal.entries != self.entries || seal.last_seq != last_seq {
            return Err(NotIntact::EntriesDiffer {
                sealed: seal.entries,
                sealed_last: seal.last_seq,
                held: self.entries,
                held_last: last_seq,
            });
        }
        if last_seq != self.header.last_seq {
            return Err(NotIntact::EndsBeforeLastSeq);
        }
        if seal.last_hash != self.last.map(|(_, h)| h.to_hex()) {
            return Err(NotIntact::SealHashDiffers);
        }
        if let Some(&seq) = self.pending_checkpoints.front() {
            return Err(NotIntact::AnnouncedCheckpointMissing(seq));
        }
        // Only an export found intact is worth telling to cover the witnessed entry.
        if let Some(w) = self.beyond.first().or(self.awaited.front()) {
            return Err(NotIntact::WitnessedEntryNotHeld {
                seq: w.seq,
                time: w.time,
                first: self.header.first_seq,
                last: self.header.last_seq,
            });
        }
        Ok(())
    }
}

/// What an entry line says of itself once it holds together: where it claims to belong and
/// the hashes it chains from and to.
struct SelfChecked {
    chain: String,
    seq: u64,
    own_prev: Hash,
    stated: Hash,
}

/// An entry line (newline stripped) checked against itself; nothing here depends on the lines
/// before it, so lines are checked ahead, several at once.
fn self_checked(line: &[u8]) -> Check<SelfChecked> {
    if let Some(checked) = scanned(line) {
        return checked;
    }
    let (raw, stated) = split_entry_line(line)?;
    let text = std::str::from_utf8(raw).map_err(|_| NotIntact::EntryNotUtf8)?;
    parsed_self_checked(text, stated)
}

/// How deep an entry may nest: it sits inside its line's object.
const ENTRY_DEPTH: usize = form::MAX_DEPTH - 1;

/// [`self_checked`] for an entry the scan vouches for at once (UTF-8, JSON, members, canonical
/// form and nesting), which is every entry the service wrote; `None` for any other, which the
/// parsed checks then decide and whose fault they name.
fn scanned(line: &[u8]) -> Option<Check<SelfChecked>> {
    let (raw, stated) = split_entry_line(line).ok()?;
    let link = form::canonical_entry(raw, ENTRY_DEPTH)?;
    Some(chained(&link, raw, stated).and_then(|own_prev| {
        supported(&link)?;
        Ok(SelfChecked::of(&link, own_prev, stated))
    }))
}

/// [`self_checked`] on the parsed entry, every check in the order section 5 gives.
fn parsed_self_checked(text: &str, stated: Hash) -> Check<SelfChecked> {
    let value: Value = serde_json::from_str(text).map_err(|_| NotIntact::EntryNotJson)?;
    let link = Link::of(&value).ok_or(NotIntact::NotAnEntry)?;
    let own_prev = chained(&link, text.as_bytes(), stated)?;
    entry_form(&value, text)?;
    supported(&link)?;
    Ok(SelfChecked::of(&link, own_prev, stated))
}

impl SelfChecked {
    fn of(link: &Link<'_>, own_prev: Hash, stated: Hash) -> SelfChecked {
        SelfChecked {
            chain: link.chain.to_owned(),
            seq: link.seq,
            own_prev,
            stated,
        }
    }
}

/// [`self_checked`] for a line as read, when it is an entry line that `Reading::line` will hand
/// to `State::entry`; `None` for any other line (checked in order, with its context).
fn self_checked_line(buf: &[u8]) -> Ahead {
    let line = buf.strip_suffix(b"\n")?;
    if !line.starts_with(ENTRY_PREFIX) {
        return None;
    }
    // A line whose entry the scan vouches for nests within the limit.
    scanned(line).or_else(|| form::nests_within_limit(line).then(|| self_checked(line)))
}

/// An entry line's entry bytes and the hash it states, once the line has the one layout an
/// entry line may have.
fn split_entry_line(line: &[u8]) -> Check<(&[u8], Hash)> {
    let min = ENTRY_PREFIX.len() + HASH_INFIX.len() + 64 + ENTRY_SUFFIX.len();
    let layout = line.len() > min
        && line.ends_with(ENTRY_SUFFIX)
        && line[line.len() - ENTRY_SUFFIX.len() - 64 - HASH_INFIX.len()..].starts_with(HASH_INFIX);
    if !layout {
        return Err(NotIntact::NotAnEntryLine);
    }
    let hash_at = line.len() - ENTRY_SUFFIX.len() - 64;
    let raw = &line[ENTRY_PREFIX.len()..hash_at - HASH_INFIX.len()];
    let stated = std::str::from_utf8(&line[hash_at..hash_at + 64])
        .ok()
        .and_then(Hash::from_hex)
        .ok_or(NotIntact::EntryHashNotHex)?;
    Ok((raw, stated))
}

/// The hash the entry chains from, once the stated hash covers exactly these bytes.
fn chained(link: &Link<'_>, entry: &[u8], stated: Hash) -> Check<Hash> {
    let own_prev = Hash::from_hex(link.prev_hash).ok_or(NotIntact::EntryPrevHashNotHex)?;
    if Hash::link(&own_prev, entry) != stated {
        return Err(NotIntact::EntryChanged);
    }
    Ok(own_prev)
}

fn supported(link: &Link<'_>) -> Check<()> {
    if link.v != ENTRY_FORMAT_VERSION {
        return Err(NotIntact::UnsupportedEntryVersion(link.v));
    }
    Ok(())
}
