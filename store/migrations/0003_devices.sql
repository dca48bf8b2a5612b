-- Logged-in devices (phones, check-in tablets). A device id is chosen by
-- the device; a new login with the same id replaces its token.
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    name           TEXT NOT NULL,
    platform       TEXT NOT NULL,
    token_hash     BLOB UNIQUE,     -- SHA-256 of the token's secret; NULL after logout
    created_at     TEXT NOT NULL,
    last_login_at  TEXT NOT NULL,
    last_seen_at   TEXT,
    revoked_at     TEXT,            -- set by the practice: refused with device_revoked
    wipe           INTEGER NOT NULL DEFAULT 0,
    logged_out_at  TEXT
);
CREATE INDEX devices_account ON devices(account_id);

-- When the last access code of an account was sent (the code itself lives
-- in Redis, only as an HMAC).
CREATE TABLE access_codes (
    account_id TEXT PRIMARY KEY,
    sent_at    TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- TOTP secrets of admin accounts, sealed with the server's secret.
CREATE TABLE totp (
    account_id  TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    enrolled_at TEXT NOT NULL
);

-- The append-only audit log: who did what, when, from where. Never codes,
-- tokens or patient content.
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,   -- "practice", "device", "system"
    account_id TEXT,
    device_id  TEXT,
    action     TEXT NOT NULL,
    detail     TEXT,
    addr       TEXT
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
