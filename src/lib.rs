//! killswitch: MFA-gated remediation of compromised Entra ID accounts, with a tamper-evident audit log.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so tests and benchmarks drive the
//! same code the service runs.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod customers;
pub mod domain;
pub mod error;
pub mod falcon;
pub mod fault;
pub mod files;
pub mod graph;
pub mod html;
pub mod http;
pub mod notify;
pub mod remediation;
pub mod reports;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod time;

pub use error::{Error, Result};
