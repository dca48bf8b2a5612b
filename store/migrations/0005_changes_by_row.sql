-- The changes of one row, for questions such as an account's role as of a
-- seq.
CREATE INDEX changes_row ON changes(entity, row_id, seq);
