-- Exports find the first and last entry of a period with MIN(seq)/MAX(seq) over (chain, time);
-- with seq in the index that is an index-only scan instead of a table lookup per entry.
CREATE INDEX audit_entries_chain_time_seq ON audit_entries (chain, time, seq);
DROP INDEX audit_entries_chain_time;
