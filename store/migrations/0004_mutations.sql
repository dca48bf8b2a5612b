-- Device mutations applied, so that a retried mutation id is acknowledged
-- again and applied once.
CREATE TABLE mutations (
    device_id  TEXT NOT NULL,
    id         TEXT NOT NULL,
    seq        INTEGER NOT NULL,   -- the tenant's seq once it was applied
    created_at TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
);
