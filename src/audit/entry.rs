//! One audit entry: its JSON form (RFC 8785 canonical, exactly the bytes that are hashed) and
//! the sealing function that turns an event into the next link of a chain.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::audit::event::{Actor, AuditEvent};
use crate::audit::hash::Hash;
use crate::domain::ChainId;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Version of the entry layout; bumped only for changes a verifier must know about.
pub const ENTRY_FORMAT_VERSION: u32 = 1;

/// An entry as stored and exported. Field order here is irrelevant: the canonical form sorts keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub v: u32,
    pub chain: String,
    pub seq: u64,
    pub time: Timestamp,
    pub prev_hash: String,
    pub actor: Actor,
    pub event: AuditEvent,
}

/// A sealed entry ready to be stored: its canonical JSON and the hash that links it.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub chain: String,
    pub seq: u64,
    pub time: Timestamp,
    pub kind: &'static str,
    pub json: String,
    pub hash: Hash,
}

/// Builds entry `seq` of `chain` on top of `prev` and computes its hash.
pub fn seal(
    chain: &ChainId,
    seq: u64,
    prev: &Hash,
    time: Timestamp,
    actor: &Actor,
    event: &AuditEvent,
) -> Result<Sealed> {
    let entry = Entry {
        v: ENTRY_FORMAT_VERSION,
        chain: chain.as_str().to_owned(),
        seq,
        time,
        prev_hash: prev.to_hex(),
        actor: actor.clone(),
        event: event.clone(),
    };
    let json = serde_jcs::to_string(&entry)
        .map_err(|e| Error::Internal(format!("cannot canonicalise audit entry: {e}")))?;
    let hash = Hash::link(prev, json.as_bytes());
    Ok(Sealed {
        chain: entry.chain,
        seq,
        time,
        kind: event.kind(),
        json,
        hash,
    })
}

/// The fields a verifier needs from an entry, borrowed from the stored text without building
/// the whole typed event (verification must stay fast on millions of entries).
#[derive(Debug, Deserialize)]
pub struct Link<'a> {
    pub v: u32,
    #[serde(borrow)]
    pub chain: Cow<'a, str>,
    pub seq: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    pub event: EventTag<'a>,
}

#[derive(Debug, Deserialize)]
pub struct EventTag<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

impl<'a> Link<'a> {
    pub fn parse(json: &'a str) -> std::result::Result<Link<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::tests::one_of_each;

    #[test]
    fn sealed_json_is_canonical_and_hash_covers_prev_and_bytes() {
        let chain: ChainId = "contoso".parse().unwrap_or_else(|e| panic!("{e}"));
        let prev = Hash::genesis("contoso");
        for event in one_of_each() {
            let sealed = seal(&chain, 1, &prev, Timestamp::now(), &Actor::Service, &event)
                .unwrap_or_else(|e| panic!("{e}"));
            let reparsed: serde_json::Value =
                serde_json::from_str(&sealed.json).unwrap_or_else(|e| panic!("{e}"));
            let recanonical = serde_jcs::to_string(&reparsed).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                recanonical, sealed.json,
                "stored text must already be canonical"
            );
            assert_eq!(sealed.hash, Hash::link(&prev, sealed.json.as_bytes()));
            let typed: Entry = serde_json::from_str(&sealed.json).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(typed.event, event);
            let link = Link::parse(&sealed.json).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((link.seq, link.event.kind.as_ref()), (1, event.kind()));
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_has_no_whitespace() {
        let chain = ChainId::System;
        let sealed = seal(
            &chain,
            7,
            &Hash::genesis("system"),
            "2026-11-27T14:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            &Actor::Service,
            &AuditEvent::ConsentGranted {
                tenant_id: "t".into(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(sealed.json.starts_with(r#"{"actor":{"type":"service"},"chain":"system","event":{"tenant_id":"t","type":"consent_granted"},"prev_hash":""#), "{}", sealed.json);
        assert!(
            sealed
                .json
                .ends_with(r#"","seq":7,"time":"2026-11-27T14:00:00.000000Z","v":1}"#),
            "{}",
            sealed.json
        );
    }
}
