//! The audit log: typed events, hash-chained entries, signed checkpoints, and verification.
//!
//! `hash = SHA-256(prev_hash ‖ JCS(entry))` where the entry carries its own `prev_hash`; the
//! format and the verification algorithm are written down in `docs/audit-chain.md`.

pub mod append;
pub mod entry;
pub mod event;
pub mod hash;
pub mod records;
pub mod signing;
pub mod verify;
pub mod witness;

pub use entry::{Entry, Sealed};
pub use event::{Actor, AuditEvent};
pub use hash::Hash;
pub use signing::{AuditKey, KeyId, KeyRing};
pub use witness::Witness;
