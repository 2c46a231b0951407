-- Falcon detections received by webhook: one row per (customer, composite_id), whatever the
-- number of deliveries, and what was decided about it.

CREATE TABLE detections (
    id               TEXT NOT NULL PRIMARY KEY,
    customer         TEXT NOT NULL REFERENCES customers (slug),
    composite_id     TEXT NOT NULL,
    detection_id     TEXT,
    severity         TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    tactic           TEXT,
    technique        TEXT,
    account_upn      TEXT,
    account_sid      TEXT,
    account_domain   TEXT,
    falcon_host_link TEXT,
    cid              TEXT,
    falcon_time      TEXT,
    assurance        TEXT NOT NULL CHECK (assurance IN ('signed', 'bearer')),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'auto_remediated', 'approved', 'dismissed')),
    target_id        TEXT,
    target_upn       TEXT,
    pending_reason   TEXT,
    action_id        TEXT,
    decided_by       TEXT,
    decided_at       TEXT,
    decision_reason  TEXT,
    received_at      TEXT NOT NULL,
    CONSTRAINT detections_composite_id UNIQUE (customer, composite_id)
);
CREATE INDEX detections_customer_state ON detections (customer, state, received_at);
