//! The one path every disable and enable takes: validate → guard rails → audit `requested` →
//! read the account → PATCH unless already in the asked state → read again → audit the outcome;
//! and reconciliation of actions a crash left without an outcome.

pub mod action;
pub mod engine;

pub use engine::{
    ActionRequest, Decision, Executed, Pending, RemediationSettings, Remediator, Trigger,
};
