-- Rows erased (DESIGN §2, GDPR Art. 17): their ids, never their values, so
-- that a device's write queued before the erasure does not bring them
-- back (model.RefuseErased). The practice may create them again.
CREATE TABLE erased (
    entity TEXT NOT NULL,
    row_id TEXT NOT NULL,
    PRIMARY KEY (entity, row_id)
) WITHOUT ROWID;
