-- Onboarding: single-use admin-consent states, the last connection test of each customer, and
-- the secrets Falcon signs webhooks with (sealed; the previous one stays valid for a grace time).

CREATE TABLE consent_states (
    nonce      TEXT NOT NULL PRIMARY KEY,
    customer   TEXT NOT NULL REFERENCES customers (slug),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);

ALTER TABLE customers ADD COLUMN connection_ready BOOLEAN;
ALTER TABLE customers ADD COLUMN connection_detail TEXT;
ALTER TABLE customers ADD COLUMN connection_checked_at TEXT;
ALTER TABLE customers ADD COLUMN connection_ok_at TEXT;

CREATE TABLE webhook_secrets (
    id         TEXT NOT NULL PRIMARY KEY,
    customer   TEXT NOT NULL REFERENCES customers (slug),
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- NULL while current; set when a newer secret replaces it (end of the grace period).
    expires_at TEXT
);
CREATE INDEX webhook_secrets_customer ON webhook_secrets (customer, created_at);
