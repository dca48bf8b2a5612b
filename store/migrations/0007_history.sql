-- The change log's history (DESIGN §2): a random id made when the log
-- starts, replaced whenever the log stops being a continuation of what
-- clients saw (a restore, an erasure), and the highest seq whose change
-- compaction may have dropped. Exactly one row.
CREATE TABLE log_meta (
    history      TEXT NOT NULL,
    compacted_to INTEGER NOT NULL DEFAULT 0
);
INSERT INTO log_meta(history, compacted_to) VALUES (lower(hex(randomblob(16))), 0);

-- The history of the log a shard was built from: a shard of another
-- history is never served (a restore or an erasure replaced it).
ALTER TABLE shards ADD COLUMN history TEXT NOT NULL DEFAULT '';
