-- Customers (one Entra tenant each, with their guard-rail policy) and remediation actions.
-- Actions are operational state that moves from requested to one outcome; the audit log is the
-- immutable record of both steps.

CREATE TABLE customers (
    slug       TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    domain     TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    policy     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE actions (
    id              TEXT NOT NULL PRIMARY KEY,
    customer        TEXT NOT NULL REFERENCES customers (slug),
    operation       TEXT NOT NULL CHECK (operation IN ('disable', 'enable')),
    account         TEXT NOT NULL,
    target_id       TEXT,
    state           TEXT NOT NULL CHECK (state IN ('requested', 'succeeded', 'noop', 'failed', 'denied')),
    reason          TEXT NOT NULL,
    ticket          TEXT,
    revoke_sessions BOOLEAN NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    actor           TEXT NOT NULL,
    detail          TEXT,
    warnings        TEXT,
    graph           TEXT,
    before_state    TEXT,
    after_state     TEXT,
    requested_seq   BIGINT NOT NULL,
    outcome_seq     BIGINT,
    created_at      TEXT NOT NULL,
    lease_until     TEXT NOT NULL,
    finished_at     TEXT,
    duration_ms     BIGINT,
    CONSTRAINT actions_idempotency_key UNIQUE (customer, idempotency_key)
);
CREATE INDEX actions_customer_created ON actions (customer, created_at);
CREATE INDEX actions_unfinished ON actions (lease_until) WHERE finished_at IS NULL;
