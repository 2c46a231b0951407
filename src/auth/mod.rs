//! Who is calling: analysts, their roles and customer scope, API tokens, and the TOTP second
//! factor every state-changing action needs.

pub mod analysts;
pub mod gate;
pub mod mfa;
pub mod oidc;
pub mod roles;
pub mod tokens;

pub use analysts::{Analyst, AnalystStatus};
pub use roles::{Permission, Role, Scope};
