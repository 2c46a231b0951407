//! Named fault points, for the crash tests: a debug build started with
//! `KILLSWITCH_FAULT_POINT=<name>` stops the task that reaches that point for good and says so
//! on stderr, so a test can kill the process (SIGKILL) exactly there. Release builds compile
//! every point to nothing.
//!
//! The points: `action.admitted` (the request is committed, Graph not yet called),
//! `action.patch_sent` (Graph answered the PATCH, its answer not yet read),
//! `action.answered` (Graph is done with, the outcome not yet committed),
//! `action.outcome_commit` (inside the outcome's transaction, before it commits),
//! `intake.stored` (a webhook's detection is stored, not yet decided),
//! `approval.admitted` (an analyst's approval is committed with its action, Graph not yet called).

/// The line a stopped point writes on stderr, followed by the point's name.
pub const REACHED: &str = "killswitch: fault point reached: ";

/// Stops here for good when `name` is the armed point (debug builds only).
#[cfg(debug_assertions)]
pub async fn point(name: &'static str) {
    if armed(name) {
        eprintln!("{REACHED}{name}");
        std::future::pending::<()>().await;
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub async fn point(_name: &'static str) {}

#[cfg(debug_assertions)]
fn armed(name: &str) -> bool {
    std::env::var("KILLSWITCH_FAULT_POINT").is_ok_and(|armed| armed == name)
}
