-- Notifications. An audit entry someone must hear about (an action's outcome, a detection
-- waiting, consent, a red connection test, a lockout) gets a row here in the transaction that
-- appends it, so a crash can neither lose a notice nor announce what never committed.
CREATE TABLE notification_events (
    chain TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- Set, in one transaction with the messages it made, by the instance that routed it.
    routed_at TEXT,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX notification_events_unrouted ON notification_events (created_at) WHERE routed_at IS NULL;

-- One message to one destination (an e-mail to its recipients, one webhook), rendered when
-- routed; workers lease it, send it, and record every attempt.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    chain TEXT,
    seq BIGINT,
    kind TEXT NOT NULL,
    audience TEXT NOT NULL CHECK (audience IN ('soc', 'customer')),
    customer TEXT,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'slack', 'teams', 'webhook')),
    -- E-mail addresses, or which configured webhook (never its URL: a Slack URL is a secret).
    destination TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until TEXT,
    finished_at TEXT,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
CREATE INDEX notifications_created_id ON notifications (created_at, id);
CREATE INDEX notifications_customer_created_id ON notifications (customer, created_at, id);

CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL REFERENCES notifications (id),
    attempt BIGINT NOT NULL,
    at TEXT NOT NULL,
    ok BOOLEAN NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (notification_id, attempt)
);
