//! Customers: one Entra tenant each, and the policy that bounds what may be done in it. The
//! values are defined with the others every layer shares (`domain::customer`).

pub mod consent;
pub mod discovery;
pub mod onboarding;

pub use crate::domain::customer::*;
