//! What is made of the audit log for people: a customer's verifiable export (and the offline
//! verifier for it), and the operator's check of every chain. They read through the store; the
//! log itself (`audit`) does not.

pub mod check;
pub mod export;
