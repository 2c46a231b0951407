-- Analysts: who may act, in which role, for which customers; their API token (hashed) and
-- their TOTP secret (encrypted), with the state that makes each code usable once.

CREATE TABLE analysts (
    id             TEXT NOT NULL PRIMARY KEY,
    email          TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('analyst', 'lead', 'auditor', 'admin')),
    customers      TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    token_hash     TEXT NOT NULL,
    totp_secret    TEXT NOT NULL,
    totp_last_step BIGINT,
    failed_otp     BIGINT NOT NULL DEFAULT 0,
    locked_until   TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    CONSTRAINT analysts_email UNIQUE (email),
    CONSTRAINT analysts_token_hash UNIQUE (token_hash)
);

-- Console sessions after single sign-on; only a hash of the cookie value is kept.
CREATE TABLE sessions (
    id_hash    TEXT NOT NULL PRIMARY KEY,
    analyst_id TEXT NOT NULL REFERENCES analysts (id),
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_analyst ON sessions (analyst_id);
