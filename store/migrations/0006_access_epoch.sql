-- A counter bumped, in the same transaction, by every change that ends an
-- access outside the change log: a device revoked or logged out, a token
-- replaced by a newer login, a license withdrawn, the practice key
-- replaced. A reader that finds it moved in the snapshot it reads changes
-- from checks its connections' access before sending those changes.
CREATE TABLE access_epoch (
    n INTEGER NOT NULL
);
INSERT INTO access_epoch(n) VALUES (0);
