//! Actions as stored and admitted, defined with the other values every layer shares
//! (`domain::action`).

pub use crate::domain::action::*;
