package device

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/therasync/therasync/model"
)

// This file rebases the pending writes: it applies them again on top of a
// row's server state, after a streamed change, a rejection or a fresh
// shard.

// replayPendingLocked applies the row's pending (not rejected) writes on
// top of its local state.
func (c *Client) replayPendingLocked(ctx context.Context, tx *sql.Tx, entity, id string) error {
	ps, err := c.outboxLocked(ctx, fmt.Sprintf("rejected = 0 AND entity = %s AND row_id = %s", sqlQuote(entity), sqlQuote(id)))
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := applyLocal(ctx, tx, p.Entity, p.Op, p.RowID, p.Fields); err != nil {
			return err
		}
	}
	return nil
}

// sqlQuote quotes s as an SQL string literal.
func sqlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// restoreRowLocked puts a row back to its server state plus the pending
// writes that remain, after a rejection.
func (c *Client) restoreRowLocked(ctx context.Context, entity, id string) error {
	var fields sql.NullString
	err := c.outbox.QueryRowContext(ctx, `SELECT fields FROM base WHERE entity = ? AND row_id = ?`, entity, id).Scan(&fields)
	if err != nil {
		return err
	}
	tx, err := c.data.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM "`+entity+`" WHERE id = ?`, id); err != nil {
		return err
	}
	if fields.Valid {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(fields.String), &m); err != nil {
			return fmt.Errorf("base of %s %s: %w", entity, id, err)
		}
		if err := applyLocal(ctx, tx, entity, model.OpUpsert, id, m); err != nil {
			return err
		}
	}
	if err := c.replayPendingLocked(ctx, tx, entity, id); err != nil {
		return err
	}
	return tx.Commit()
}

// rebaseLocked applies the pending writes on top of a freshly downloaded
// shard, taking its rows as their server state.
func (c *Client) rebaseLocked() error {
	ctx := context.Background()
	if _, err := c.outbox.ExecContext(ctx, `DELETE FROM base`); err != nil {
		return err
	}
	ps, err := c.outboxLocked(ctx, "rejected = 0")
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := c.snapshotBaseLocked(ctx, p.Entity, p.RowID); err != nil {
			return err
		}
		tx, err := c.data.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		err = applyLocal(ctx, tx, p.Entity, p.Op, p.RowID, p.Fields)
		if err == nil {
			err = tx.Commit()
		}
		tx.Rollback()
		if err != nil {
			return err
		}
	}
	return nil
}
