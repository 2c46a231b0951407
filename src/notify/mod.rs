//! Notifications: the SOC hears at once of what killswitch did or is waiting for, and each
//! customer of every action on its tenant, with a signed witness of its audit log.
//!
//! The path: an audit entry that calls for a notice owes one in its own transaction (the
//! outbox); a worker routes it into messages (one per destination, rendered then), leases each
//! message, sends it, and settles the attempt: sent, again later with backoff, or given up
//! after `notify.give_up_after_secs`.

pub mod email;
pub mod render;
pub mod route;
pub mod schedule;
pub mod settings;
pub mod webhook;
pub mod worker;

pub use crate::domain::event::NoticeKind;
pub use crate::domain::notification::*;
pub use settings::{NotifySettings, WebhookKind};
