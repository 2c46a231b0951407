//! Running instances of the service, and how one tells that another is gone.
//!
//! Each `killswitch serve` registers under a stable name (the configured `instance.id`, else
//! its host and port, which no other live process on that host can hold) with a fresh run id,
//! and beats every few seconds. Work in progress (an action being executed, a detection being
//! decided) records the run doing it. A run is gone when its instance registered a newer run
//! under the same name (it restarted), when it stopped, or when its heartbeat is older than the
//! limit: only then may another run take its work over, and then at once rather than after
//! the work's lease.

use std::time::Duration;

use uuid::Uuid;

use crate::time::Timestamp;

/// One start of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRun {
    /// The stable name: unique among instances running at once on one database.
    pub instance: String,
    /// This start of it.
    pub run: Uuid,
    pub started_at: Timestamp,
}

/// How often a run beats, and how long a silent one counts as alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
        }
    }
}

impl Liveness {
    /// Runs whose last heartbeat is older than this (at `now`) are gone.
    pub fn alive_since(&self, now: Timestamp) -> Timestamp {
        let dead_after = chrono::Duration::from_std(self.dead_after).unwrap_or_default();
        Timestamp::from_datetime(now.as_datetime() - dead_after)
    }
}

/// Who may take over interrupted work at `now`: work whose run is gone, but never the work of
/// `mine` (the asking run, alive by asking).
#[derive(Debug, Clone, Copy)]
pub struct Takeover {
    /// Work whose lease ended before this is taken over whoever holds it.
    pub lease_ended_before: Timestamp,
    /// Work of a run whose heartbeat is older than this is taken over.
    pub alive_since: Timestamp,
    pub mine: Option<Uuid>,
}
