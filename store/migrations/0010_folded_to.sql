-- The horizon up to which the last compaction finished folding the log
-- (compacted_to is raised before a compaction folds anything, folded_to
-- once it is done): a client that began reading from seq 0 while the two
-- were equal may page on below compacted_to as long as it stays there.
ALTER TABLE log_meta ADD COLUMN folded_to INTEGER NOT NULL DEFAULT 0;
