//! A witness: a signed statement of a chain's seq and head hash right after an entry, handed to
//! the customer when something happens on its tenant. Kept on the customer's side, it later
//! shows whether an export still holds the log as it stood then: a log rewritten after the
//! witness was issued carries another hash at that seq, and no key we hold can re-sign the
//! witness the customer already has.
//!
//! A witness signs the very message a checkpoint signs (it is a checkpoint of the head), so a
//! `{"type":"checkpoint",…}` line copied out of an export serves as a witness too.
//! docs/audit-format.md ("Witnesses") specifies the form and the checks.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::audit::append::Appended;
use crate::audit::hash::Hash;
use crate::audit::signing::{AuditKey, Checkpoint, CheckpointRefusal, KeyId, KeyRing};
use crate::error::{Error, Result};
use crate::time::{Timestamp, is_canonical_text};

/// The `type` a witness is written with.
pub const WITNESS_TYPE: &str = "witness";
/// The `type` of an export's checkpoint line, accepted as a witness.
const CHECKPOINT_LINE_TYPE: &str = "checkpoint";

/// 2^53: seqs are counts of the export format, which keeps every number below it.
const LIMIT: u64 = 1 << 53;

/// The members of a witness, in the order they are checked.
const MEMBERS: [&str; 7] = [
    "type",
    "chain",
    "seq",
    "hash",
    "time",
    "key_id",
    "signature",
];

/// "Entry `seq` of `chain` had hash `hash` at `time`", signed with the key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub chain: String,
    pub seq: u64,
    pub hash: Hash,
    pub time: Timestamp,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

/// A witness as written: the RFC 8785 form of this object is its one line.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    chain: &'a str,
    seq: u64,
    hash: String,
    time: String,
    key_id: &'a str,
    signature: String,
}

impl Witness {
    /// Signs the statement that entry `seq` of `chain` has hash `hash`, made at `time`.
    pub fn sign(
        key: &AuditKey,
        chain: &str,
        seq: u64,
        hash: &Hash,
        time: Timestamp,
    ) -> Result<Witness> {
        key.sign_checkpoint(chain, seq, hash, time)
            .map(Witness::from)
    }

    /// The witness of the entry an append just wrote, made at that entry's time.
    pub fn from_appended(key: &AuditKey, appended: &Appended) -> Result<Witness> {
        Witness::sign(
            key,
            &appended.chain,
            appended.seq,
            &appended.hash,
            appended.time,
        )
    }

    /// The witness as one line of RFC 8785 canonical JSON, without a line feed.
    pub fn to_line(&self) -> Result<String> {
        serde_jcs::to_string(&Line {
            kind: WITNESS_TYPE,
            chain: &self.chain,
            seq: self.seq,
            hash: self.hash.to_hex(),
            time: self.time.to_string(),
            key_id: self.key_id.as_str(),
            signature: BASE64.encode(self.signature),
        })
        .map_err(|e| Error::Internal(format!("cannot canonicalise a witness: {e}")))
    }

    /// Reads a witness (or an export's checkpoint line) written as JSON, with or without
    /// surrounding whitespace. Nothing is normalised: a member missing, unknown, repeated or
    /// not in the one spelling the format allows is refused with a sentence naming it.
    pub fn parse(text: &str) -> Result<Witness> {
        read(text).map_err(|why| Error::InvalidInput(why.to_string()))
    }

    /// The checkpoint this witness is: the same signed statement.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            chain: self.chain.clone(),
            seq: self.seq,
            hash: self.hash,
            time: self.time,
            key_id: self.key_id.clone(),
            signature: self.signature,
        }
    }

    /// Checks the signature with `keys`; the refusal says whether the key is unknown or the
    /// signature does not hold.
    pub fn verify_signature(&self, keys: &KeyRing) -> std::result::Result<(), CheckpointRefusal> {
        keys.verify(&self.checkpoint())
    }
}

impl From<Checkpoint> for Witness {
    fn from(cp: Checkpoint) -> Witness {
        Witness {
            chain: cp.chain,
            seq: cp.seq,
            hash: cp.hash,
            time: cp.time,
            key_id: cp.key_id,
            signature: cp.signature,
        }
    }
}

/// Why a text is not a witness. docs/verify_export.py words each the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotAWitness {
    #[error("the witness is not valid JSON")]
    NotJson,
    #[error("the witness is not a JSON object")]
    NotAnObject,
    #[error("the witness has the member `{0}` twice")]
    Repeated(String),
    #[error("the witness has no `{0}`")]
    Missing(&'static str),
    #[error("the witness has a member `{0}` a witness does not have")]
    Unknown(String),
    #[error("the witness's `{0}` is not {1}")]
    WrongType(&'static str, &'static str),
}

fn read(text: &str) -> std::result::Result<Witness, NotAWitness> {
    let value: Value = serde_json::from_str(text).map_err(|_| NotAWitness::NotJson)?;
    let Value::Object(members) = value else {
        return Err(NotAWitness::NotAnObject);
    };
    // `Value` keeps only the last of a repeated member; another reader may keep the first.
    let written: Written = serde_json::from_str(text).map_err(|_| NotAWitness::NotJson)?;
    let mut seen = HashSet::new();
    if let Some(name) = written
        .0
        .into_iter()
        .find(|name| !seen.insert(name.clone()))
    {
        return Err(NotAWitness::Repeated(name));
    }
    if let Some(name) = MEMBERS.iter().find(|name| !members.contains_key(**name)) {
        return Err(NotAWitness::Missing(name));
    }
    let mut unknown: Vec<&String> = members
        .keys()
        .filter(|name| !MEMBERS.contains(&name.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(NotAWitness::Unknown((*name).clone()));
    }
    typed(&members)
}

/// Each member of its type and spelling, in the order of [`MEMBERS`].
fn typed(members: &Map<String, Value>) -> std::result::Result<Witness, NotAWitness> {
    let text = |name: &str| members.get(name).and_then(Value::as_str);
    let wrong = NotAWitness::WrongType;
    text("type")
        .filter(|kind| [WITNESS_TYPE, CHECKPOINT_LINE_TYPE].contains(kind))
        .ok_or(wrong("type", "`witness` or `checkpoint`"))?;
    let chain = text("chain").ok_or(wrong("chain", "a string"))?;
    let seq = members
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|seq| (1..LIMIT).contains(seq))
        .ok_or(wrong("seq", "a whole number from 1 to 2^53 - 1"))?;
    let hash = text("hash")
        .and_then(Hash::from_hex)
        .ok_or(wrong("hash", "64 lowercase hex digits"))?;
    // Only the one spelling: the signed message is built from the time as written.
    let time = text("time")
        .filter(|time| is_canonical_text(time))
        .and_then(|time| time.parse::<Timestamp>().ok())
        .ok_or(wrong(
            "time",
            "a time of the form 2026-11-27T09:40:05.123456Z",
        ))?;
    let key_id = text("key_id")
        .and_then(KeyId::parse)
        .ok_or(wrong("key_id", "16 lowercase hex digits"))?;
    let signature = text("signature")
        .and_then(signature_bytes)
        .ok_or(wrong("signature", "64 bytes in standard base64"))?;
    Ok(Witness {
        chain: chain.to_owned(),
        seq,
        hash,
        time,
        key_id,
        signature,
    })
}

/// The 64 signature bytes, when `text` is exactly their canonical standard base64.
fn signature_bytes(text: &str) -> Option<[u8; 64]> {
    let bytes: [u8; 64] = BASE64.decode(text).ok()?.try_into().ok()?;
    (BASE64.encode(bytes) == text).then_some(bytes)
}

/// The member names of a JSON object as written, repeats kept.
struct Written(Vec<String>);

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Written;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Written, A::Error> {
                let mut names = Vec::new();
                while let Some((name, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    names.push(name);
                }
                Ok(Written(names))
            }
        }
        deserializer.deserialize_map(Names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    fn witness(key: &AuditKey) -> Witness {
        let time: Timestamp = "2026-11-27T09:40:05.123456Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        Witness::sign(key, "contoso", 42, &Hash::genesis("x"), time)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn line(w: &Witness) -> String {
        w.to_line().unwrap_or_else(|e| panic!("{e}"))
    }

    fn refusal(text: &str) -> String {
        match Witness::parse(text) {
            Err(Error::InvalidInput(why)) => why,
            other => panic!("`{text}` was not refused as input: {other:?}"),
        }
    }

    #[test]
    fn a_witness_round_trips_through_its_one_canonical_line() {
        let key = key();
        let w = witness(&key);
        let text = line(&w);
        assert!(text.starts_with(r#"{"chain":"contoso","hash":""#), "{text}");
        assert!(
            text.ends_with(r#""time":"2026-11-27T09:40:05.123456Z","type":"witness"}"#),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let parsed = Witness::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, w);
        assert_eq!(line(&parsed), text);
        // Surrounding whitespace (a file's line feed) and another member order read the same.
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let pretty = serde_json::to_string_pretty(&value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Witness::parse(&format!("{pretty}\n")).ok(), Some(w.clone()));
        assert!(
            w.verify_signature(&KeyRing::new([key.public_key()]))
                .is_ok()
        );
    }

    #[test]
    fn a_witness_with_its_seq_or_hash_changed_does_not_verify() {
        let key = key();
        let ring = KeyRing::new([key.public_key()]);
        let w = witness(&key);
        let moved = Witness::parse(&line(&w).replace(r#""seq":42"#, r#""seq":41"#))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            moved.verify_signature(&ring),
            Err(CheckpointRefusal::DoesNotVerify(_))
        ));
        let mut rehashed = w.clone();
        rehashed.hash = Hash::genesis("y");
        assert!(rehashed.verify_signature(&ring).is_err());
        let mut renamed = w.clone();
        renamed.chain = "fabrikam".into();
        assert!(renamed.verify_signature(&ring).is_err());
        let other = KeyRing::new([self::key().public_key()]);
        assert!(matches!(
            w.verify_signature(&other),
            Err(CheckpointRefusal::UnknownKey(_))
        ));
    }

    #[test]
    fn a_checkpoint_line_of_an_export_is_accepted_as_a_witness() {
        let key = key();
        let time = Timestamp::now();
        let cp = key
            .sign_checkpoint("contoso", 7, &Hash::genesis("z"), time)
            .unwrap_or_else(|e| panic!("{e}"));
        let export_line = format!(
            r#"{{"chain":"contoso","hash":"{}","key_id":"{}","seq":7,"signature":"{}","time":"{time}","type":"checkpoint"}}"#,
            cp.hash.to_hex(),
            cp.key_id,
            cp.signature_base64()
        );
        let w = Witness::parse(&export_line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.checkpoint(), cp);
        assert!(
            w.verify_signature(&KeyRing::new([key.public_key()]))
                .is_ok()
        );
    }

    #[test]
    fn a_text_that_is_not_exactly_a_witness_is_refused_in_one_sentence() {
        let good = line(&witness(&key()));
        let cases = [
            ("not json".to_owned(), "the witness is not valid JSON"),
            ("[1]".to_owned(), "the witness is not a JSON object"),
            (
                good.replacen('{', r#"{"seq":1,"#, 1),
                "the witness has the member `seq` twice",
            ),
            (
                good.replacen(r#""seq":42,"#, "", 1),
                "the witness has no `seq`",
            ),
            (
                good.replacen('{', r#"{"zz":1,"note":"x","#, 1),
                "the witness has a member `note` a witness does not have",
            ),
            (
                good.replace(r#""type":"witness""#, r#""type":"seal""#),
                "the witness's `type` is not `witness` or `checkpoint`",
            ),
            (
                good.replace(r#""seq":42"#, r#""seq":0"#),
                "the witness's `seq` is not a whole number from 1 to 2^53 - 1",
            ),
            (
                good.replace(r#""seq":42"#, r#""seq":42.0"#),
                "the witness's `seq` is not a whole number from 1 to 2^53 - 1",
            ),
            (
                good.replace(r#""hash":""#, r#""hash":"A"#),
                "the witness's `hash` is not 64 lowercase hex digits",
            ),
            (
                good.replace(".123456Z", "Z"),
                "the witness's `time` is not a time of the form 2026-11-27T09:40:05.123456Z",
            ),
            (
                good.replace(r#""key_id":""#, r#""key_id":"0"#),
                "the witness's `key_id` is not 16 lowercase hex digits",
            ),
            (
                good.replace("==\"", "\""),
                "the witness's `signature` is not 64 bytes in standard base64",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(refusal(&text), expected, "{text}");
        }
    }
}
