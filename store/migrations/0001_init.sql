-- The tenant's settings: exactly one row.
CREATE TABLE tenant (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    licenses    TEXT NOT NULL,  -- JSON list, e.g. ["sync","app"]
    tz          TEXT NOT NULL,  -- IANA time zone, e.g. Europe/Berlin
    key_hash    BLOB NOT NULL,  -- SHA-256 of the practice key's secret part
    created_at  TEXT NOT NULL
);

-- The entities of DESIGN §3. Lists are JSON text, booleans 0/1.
CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    email        TEXT,
    role         TEXT,
    app_enabled  INTEGER,
    practice_ids TEXT
);
CREATE TABLE practices (
    id   TEXT PRIMARY KEY,
    name TEXT
);
CREATE TABLE profiles (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT,
    first_name TEXT,
    last_name  TEXT,
    birth_date TEXT,
    phone      TEXT,
    email      TEXT,
    address    TEXT,
    insurance  TEXT
);
CREATE INDEX profiles_owner ON profiles(owner_id);
CREATE TABLE profile_shares (
    id         TEXT PRIMARY KEY,
    profile_id TEXT,
    account_id TEXT,
    shared_by  TEXT,
    shared_at  TEXT
);
CREATE INDEX profile_shares_profile ON profile_shares(profile_id);
CREATE INDEX profile_shares_account ON profile_shares(account_id);
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    profile_id   TEXT,
    therapist_id TEXT,
    practice_id  TEXT,
    starts_at    TEXT,
    duration_min INTEGER,
    price_cents  INTEGER,
    status       TEXT,
    protocol     TEXT
);
CREATE INDEX sessions_profile ON sessions(profile_id);
CREATE INDEX sessions_therapist ON sessions(therapist_id);
CREATE TABLE courses (
    id           TEXT PRIMARY KEY,
    practice_id  TEXT,
    therapist_id TEXT,
    title        TEXT,
    weekday      INTEGER,
    start_time   TEXT,
    duration_min INTEGER,
    capacity     INTEGER
);
CREATE INDEX courses_therapist ON courses(therapist_id);
CREATE TABLE course_members (
    id          TEXT PRIMARY KEY,
    course_id   TEXT,
    profile_id  TEXT,
    units_total INTEGER,
    units_used  INTEGER
);
CREATE INDEX course_members_course ON course_members(course_id);
CREATE INDEX course_members_profile ON course_members(profile_id);
CREATE TABLE attendances (
    id            TEXT PRIMARY KEY,
    course_id     TEXT,
    profile_id    TEXT,
    date          TEXT,
    checked_in_at TEXT,
    signature     TEXT,
    springer      INTEGER,
    device_id     TEXT
);
CREATE INDEX attendances_course ON attendances(course_id, date);
CREATE TABLE transactions (
    id           TEXT PRIMARY KEY,
    reference    TEXT,
    account_id   TEXT,
    profile_id   TEXT,
    session_id   TEXT,
    kind         TEXT,
    amount_cents INTEGER,
    status       TEXT,
    date         TEXT
);
CREATE UNIQUE INDEX transactions_reference ON transactions(reference);
CREATE INDEX transactions_account ON transactions(account_id);
CREATE INDEX transactions_profile ON transactions(profile_id);

-- The change log: every committed change, seq 1, 2, 3 … without gaps.
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL,
    op         TEXT NOT NULL,
    row_id     TEXT NOT NULL,
    fields     TEXT,            -- JSON object of the merged fields; NULL for a delete
    origin     TEXT NOT NULL,   -- "practice" or "device:<device id>"
    created_at TEXT NOT NULL
);

-- Applied practice batches, so that a repeated batch_id applies nothing again.
CREATE TABLE batches (
    batch_id   TEXT PRIMARY KEY,
    digest     BLOB NOT NULL,   -- SHA-256 of the batch's validated changes
    seq        INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

-- Per account and year counters behind transaction references.
CREATE TABLE ref_counters (
    account_id TEXT NOT NULL,
    year       INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, year)
);
