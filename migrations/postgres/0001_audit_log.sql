-- The audit log. Entries, checkpoints and signing keys are append-only: triggers reject UPDATE,
-- DELETE and TRUNCATE, and are ENABLE ALWAYS so `session_replication_role = replica` does not
-- switch them off. The head table is the one mutable row per chain (locked FOR UPDATE by
-- writers), and it only moves forward. The application role needs only SELECT and INSERT
-- on the append-only tables (see docs/postgres.md).

CREATE TABLE audit_heads (
    chain TEXT NOT NULL PRIMARY KEY,
    seq   BIGINT NOT NULL CHECK (seq >= 0),
    hash  TEXT NOT NULL
);

CREATE TABLE audit_entries (
    chain TEXT NOT NULL,
    seq   BIGINT NOT NULL CHECK (seq >= 1),
    time  TEXT NOT NULL,
    event TEXT NOT NULL,
    entry TEXT NOT NULL,
    hash  TEXT NOT NULL,
    CONSTRAINT audit_entries_chain_seq UNIQUE (chain, seq)
);
CREATE INDEX audit_entries_chain_time ON audit_entries (chain, time);

CREATE TABLE audit_checkpoints (
    chain     TEXT NOT NULL,
    seq       BIGINT NOT NULL,
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

CREATE FUNCTION killswitch_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION killswitch_head_advance_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain IS DISTINCT FROM OLD.chain OR NOT (NEW.seq > OLD.seq) THEN
        RAISE EXCEPTION 'audit_heads only move forward'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION killswitch_reject_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION killswitch_reject_change();
ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_append_only;
ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_no_truncate;

CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION killswitch_reject_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION killswitch_reject_change();
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_append_only;
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_truncate;

CREATE TRIGGER audit_signing_keys_append_only BEFORE UPDATE OR DELETE ON audit_signing_keys
    FOR EACH ROW EXECUTE FUNCTION killswitch_reject_change();
CREATE TRIGGER audit_signing_keys_no_truncate BEFORE TRUNCATE ON audit_signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION killswitch_reject_change();
ALTER TABLE audit_signing_keys ENABLE ALWAYS TRIGGER audit_signing_keys_append_only;
ALTER TABLE audit_signing_keys ENABLE ALWAYS TRIGGER audit_signing_keys_no_truncate;

CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION killswitch_head_advance_only();
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION killswitch_reject_change();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION killswitch_reject_change();
ALTER TABLE audit_heads ENABLE ALWAYS TRIGGER audit_heads_advance_only;
ALTER TABLE audit_heads ENABLE ALWAYS TRIGGER audit_heads_no_delete;
ALTER TABLE audit_heads ENABLE ALWAYS TRIGGER audit_heads_no_truncate;
