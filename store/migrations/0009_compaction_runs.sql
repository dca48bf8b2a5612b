-- When a periodic compaction of the tenant was last claimed, so that of
-- several workers one compacts, at most once per interval (RFC 3339, UTC,
-- whole seconds; '' before the first).
ALTER TABLE log_meta ADD COLUMN compaction_claimed_at TEXT NOT NULL DEFAULT '';
