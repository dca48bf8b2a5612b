package device

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file holds the outbox of pending mutations (outbox.db): a local
// write kept until the server acknowledges it, the server state of the
// rows it touches (base), and dropping what the server acknowledged.

// Pending is a local write the server has not acknowledged, or rejected.
type Pending struct {
	ID       string         `json:"id"`
	Entity   string         `json:"entity"`
	Op       model.Op       `json:"op"`
	RowID    string         `json:"row_id"`
	Fields   map[string]any `json:"fields,omitempty"`
	Rejected bool           `json:"rejected,omitempty"`
	Error    string         `json:"error,omitempty"`
	Message  string         `json:"message,omitempty"`
}

// Outbox returns the pending and rejected writes, oldest first.
func (c *Client) Outbox(ctx context.Context) ([]Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outbox == nil {
		return nil, nil
	}
	return c.outboxLocked(ctx, "1")
}

// outboxLocked returns the outbox rows the SQL condition where selects,
// oldest first.
func (c *Client) outboxLocked(ctx context.Context, where string) ([]Pending, error) {
	rows, err := c.outbox.QueryContext(ctx, `SELECT id, entity, op, row_id, coalesce(fields, ''), rejected, coalesce(error, ''), coalesce(message, '') FROM outbox WHERE `+where+` ORDER BY n`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var (
			p      Pending
			fields string
		)
		if err := rows.Scan(&p.ID, &p.Entity, &p.Op, &p.RowID, &fields, &p.Rejected, &p.Error, &p.Message); err != nil {
			return nil, err
		}
		if fields != "" {
			if err := json.Unmarshal([]byte(fields), &p.Fields); err != nil {
				return nil, fmt.Errorf("outbox %s: fields: %w", p.ID, err)
			}
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// encodeFields returns fields as a JSON object, and as the raw field
// values a mutation carries (nil for nil fields).
func encodeFields(fields map[string]any) ([]byte, map[string]json.RawMessage, error) {
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, nil, fmt.Errorf("encode fields: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("encode fields: %w", err)
	}
	return b, raw, nil
}

// Write applies a local change at once and keeps it in the outbox until the
// server acknowledges it; it returns the mutation id. A revoked device's
// data is read-only.
func (c *Client) Write(ctx context.Context, ch model.Change) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.st.State {
	case StateRevoked:
		return "", ErrReadOnly
	case StateWiped:
		return "", ErrWiped
	}
	if c.data == nil || c.st.State != StateActive {
		return "", ErrNotLoggedIn
	}
	b, raw, err := encodeFields(ch.Fields)
	if err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	if _, err := (model.RawChange{Entity: ch.Entity, Op: ch.Op, ID: ch.ID, Fields: raw}).Validate(0); err != nil {
		return "", err
	}
	id := newID()
	if err := c.snapshotBaseLocked(ctx, ch.Entity, ch.ID); err != nil {
		return "", err
	}
	var fields any
	if ch.Op == model.OpUpsert {
		fields = string(b)
	}
	if _, err := c.outbox.ExecContext(ctx, `INSERT INTO outbox(id, entity, op, row_id, fields) VALUES (?,?,?,?,?)`, id, ch.Entity, string(ch.Op), ch.ID, fields); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	tx, err := c.data.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if err := applyLocal(ctx, tx, ch.Entity, ch.Op, ch.ID, ch.Fields); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	return id, tx.Commit()
}

// snapshotBaseLocked keeps the server state of a row before its first
// pending write, to put it back if the server rejects the write.
func (c *Client) snapshotBaseLocked(ctx context.Context, entity, id string) error {
	var n int
	if err := c.outbox.QueryRowContext(ctx, `SELECT count(*) FROM base WHERE entity = ? AND row_id = ?`, entity, id).Scan(&n); err != nil {
		return fmt.Errorf("read base of %s %s: %w", entity, id, err)
	}
	if n > 0 {
		return nil
	}
	row, err := readLocal(ctx, c.data, entity, id)
	if err != nil {
		return err
	}
	var fields any
	if row != nil {
		b, err := json.Marshal(row)
		if err != nil {
			return fmt.Errorf("base of %s %s: %w", entity, id, err)
		}
		fields = string(b)
	}
	_, err = c.outbox.ExecContext(ctx, `INSERT INTO base(entity, row_id, fields) VALUES (?,?,?)`, entity, id, fields)
	return err
}

// forgetLocked drops acknowledged writes, and the server state of rows
// without pending writes left.
func (c *Client) forgetLocked(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if _, err := c.outbox.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, id); err != nil {
			return err
		}
	}
	_, err := c.outbox.ExecContext(ctx, `DELETE FROM base WHERE NOT EXISTS
		(SELECT 1 FROM outbox o WHERE o.entity = base.entity AND o.row_id = base.row_id AND o.rejected = 0)`)
	return err
}
