-- Built shard files of the tenant's accounts (the newest two per account).
CREATE TABLE shards (
    account_id     TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    path           TEXT NOT NULL,   -- relative to the data directory
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,   -- hex
    role           TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    built_at       TEXT NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- Shard builds asked for and not yet done: the durable half of the build
-- queue. The periodic reconcile re-enqueues every row here.
CREATE TABLE shard_requests (
    account_id   TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL   -- RFC 3339 with nanoseconds
);

-- Weekly rebuild runs, so that several workers run each week's once.
CREATE TABLE weekly_runs (
    week   TEXT PRIMARY KEY,   -- the Saturday 02:00 that opened the week, tenant time
    ran_at TEXT NOT NULL
);
