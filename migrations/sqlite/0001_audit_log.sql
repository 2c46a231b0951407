-- The audit log. Entries, checkpoints and signing keys are append-only: triggers reject UPDATE
-- and DELETE. The head table is the one mutable row per chain, and it only moves forward.

CREATE TABLE audit_heads (
    chain TEXT NOT NULL PRIMARY KEY,
    seq   INTEGER NOT NULL CHECK (seq >= 0),
    hash  TEXT NOT NULL
);

CREATE TABLE audit_entries (
    chain TEXT NOT NULL,
    seq   INTEGER NOT NULL CHECK (seq >= 1),
    time  TEXT NOT NULL,
    event TEXT NOT NULL,
    entry TEXT NOT NULL,
    hash  TEXT NOT NULL,
    CONSTRAINT audit_entries_chain_seq UNIQUE (chain, seq)
);
CREATE INDEX audit_entries_chain_time ON audit_entries (chain, time);

CREATE TABLE audit_checkpoints (
    chain     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    time      TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX audit_checkpoints_chain_seq ON audit_checkpoints (chain, seq);

CREATE TABLE audit_signing_keys (
    key_id        TEXT NOT NULL PRIMARY KEY,
    public_key    TEXT NOT NULL,
    registered_at TEXT NOT NULL
);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;

CREATE TRIGGER audit_signing_keys_no_update BEFORE UPDATE ON audit_signing_keys
BEGIN SELECT RAISE(ABORT, 'audit_signing_keys is append-only'); END;
CREATE TRIGGER audit_signing_keys_no_delete BEFORE DELETE ON audit_signing_keys
BEGIN SELECT RAISE(ABORT, 'audit_signing_keys is append-only'); END;

CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads
WHEN NEW.chain IS NOT OLD.chain OR NOT (NEW.seq > OLD.seq)
BEGIN SELECT RAISE(ABORT, 'audit_heads only move forward'); END;
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN SELECT RAISE(ABORT, 'audit_heads rows cannot be deleted'); END;
