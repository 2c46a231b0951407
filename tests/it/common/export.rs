//! Helpers for the audit export tests (tests/it/export.rs and tests/it/independent_verifier.rs).
#![allow(dead_code)]

use std::sync::Arc;

use futures::TryStreamExt;
use killswitch::audit::event::AuthMethod;
use killswitch::audit::{Actor, AuditKey};
use killswitch::reports::export::{self, ExportRequest, Format};
use killswitch::store::Store;
use killswitch::time::Timestamp;
use uuid::Uuid;

/// A small deterministic generator, so a failing case can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An analyst of `slug`'s provider, signed in with an API token.
pub fn analyst(slug: &str) -> Actor {
    Actor::Analyst {
        id: Uuid::new_v4(),
        email: format!("analyst-of-{slug}@provider.example"),
        auth: AuthMethod::ApiToken,
        client_ip: None,
    }
}

/// `slug`'s export in `format` over `from`..`to`, requested by the operator, as one byte string.
pub async fn export_bytes(
    store: &Arc<dyn Store>,
    key: &Arc<AuditKey>,
    slug: &str,
    format: Format,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<u8> {
    export_bytes_by(store, key, slug, format, from, to, Actor::operator()).await
}

/// [`export_bytes`], requested by `actor`.
pub async fn export_bytes_by(
    store: &Arc<dyn Store>,
    key: &Arc<AuditKey>,
    slug: &str,
    format: Format,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    actor: Actor,
) -> Vec<u8> {
    let started = export::start(
        store.clone(),
        key.clone(),
        ExportRequest {
            customer: slug.parse().unwrap(),
            from,
            to,
            format,
            actor,
        },
    )
    .await
    .unwrap();
    let chunks: Vec<bytes::Bytes> = started.body.try_collect().await.unwrap();
    chunks.concat()
}

/// The lines of `bytes`, each with its newline.
pub fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// The 1-based line holding byte `offset`.
pub fn line_of(bytes: &[u8], offset: usize) -> u64 {
    bytes[..offset].iter().filter(|b| **b == b'\n').count() as u64 + 1
}
