-- Running instances of `killswitch serve`. Each registers at start under a stable name (its
-- `instance.id`, or host:port) with a fresh run id, and beats every few seconds. An action
-- remembers the run that executes it, so that when that run is gone (its instance restarted
-- under the same name, or its heartbeat stopped) another run reconciles the action at once
-- instead of after the action's lease.
CREATE TABLE instances (
    id            TEXT NOT NULL PRIMARY KEY,
    run_id        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    stopped_at    TEXT
);
CREATE UNIQUE INDEX instances_run ON instances (run_id);

-- The run executing an action (NULL: written by a release before instances, or by a process
-- that is not a registered service; only the lease decides for those).
ALTER TABLE actions ADD COLUMN owner_run TEXT;
-- The run that received a detection and is deciding it (same meaning).
ALTER TABLE detections ADD COLUMN received_run TEXT;
-- Detections received but never decided (a crash between storing and deciding).
CREATE INDEX detections_undecided ON detections (received_at) WHERE state = 'pending' AND pending_reason IS NULL;
