//! The audit events, defined with the other values every layer shares (`domain::event`).

pub use crate::domain::event::*;
