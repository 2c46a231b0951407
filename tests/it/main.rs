//! The integration tests, as one binary (one link instead of one per file): each module is
//! one area, all of them on SQLite, and on PostgreSQL when `TEST_DATABASE_URL` names a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod api;
mod audit_append_only;
mod audit_concurrency;
mod audit_tamper;
mod backup;
mod cli;
mod console;
mod console_browser;
mod console_lists;
mod contract;
mod export;
mod falcon;
mod faults;
mod http_service;
mod independent_verifier;
mod load;
mod migrations;
mod no_secrets_in_logs;
mod notifications;
mod notifications_crash;
mod ocsf;
mod oidc_sso;
mod onboarding;
mod query_plans;
mod readme;
mod remediation;
mod remediation_resilience;
mod security;
mod storage_faults;
mod two_instances;
mod witness;
