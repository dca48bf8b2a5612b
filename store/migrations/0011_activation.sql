-- App activation (DESIGN §5): when an account's app access starts, the
-- access-code mail goes out once its shard is built. A row here is an
-- activation whose mail is still to be sent; it goes with the mail, or
-- when the access ends again.
CREATE TABLE activations (
  account_id   TEXT PRIMARY KEY,
  requested_at TEXT NOT NULL
);

-- What became of the newest code's mail: delivered (delivered_at), or
-- failed (failed_at and a reason that never holds the code).
ALTER TABLE access_codes ADD COLUMN delivered_at TEXT;
ALTER TABLE access_codes ADD COLUMN failed_at TEXT;
ALTER TABLE access_codes ADD COLUMN failure TEXT;
