package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// This file is a tenant's append-only audit log (DESIGN §5).

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"` // practice, device or system
	AccountID string    `json:"account_id,omitempty"`
	DeviceID  string    `json:"device_id,omitempty"`
	Action    string    `json:"action"`
	Detail    string    `json:"detail,omitempty"`
	Addr      string    `json:"addr,omitempty"`
}

// Audit appends an entry to the audit log.
func (t *Tenant) Audit(ctx context.Context, e AuditEntry) error {
	return t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return insertAudit(ctx, tx, t.opts.Now(), e)
	})
}

// insertAudit appends an entry to the audit log within tx.
func insertAudit(ctx context.Context, tx *sql.Tx, now time.Time, e AuditEntry) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit(at, actor, account_id, device_id, action, detail, addr) VALUES (?,?,?,?,?,?,?)`,
		now.UTC().Format(time.RFC3339Nano), e.Actor, nullString(e.AccountID), nullString(e.DeviceID), e.Action, nullString(e.Detail), nullString(e.Addr))
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditBatch appends entries to the audit log in one write (one
// transaction, one fsync), in their order. An entry's At is kept when set;
// zero means now.
func (t *Tenant) AuditBatch(ctx context.Context, es []AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO audit(at, actor, account_id, device_id, action, detail, addr) VALUES (?,?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		now := t.nowString()
		for _, e := range es {
			at := now
			if !e.At.IsZero() {
				at = e.At.UTC().Format(time.RFC3339Nano)
			}
			if _, err := stmt.ExecContext(ctx, at, e.Actor, nullString(e.AccountID), nullString(e.DeviceID), e.Action, nullString(e.Detail), nullString(e.Addr)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit %d entries: %w", len(es), err)
	}
	return nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AuditLog returns at most limit entries after id since, oldest first.
func (t *Tenant) AuditLog(ctx context.Context, since int64, limit int) ([]AuditEntry, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT id, at, actor, coalesce(account_id, ''), coalesce(device_id, ''), action,
		coalesce(detail, ''), coalesce(addr, '') FROM audit WHERE id > ? ORDER BY id LIMIT ?`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var (
			e  AuditEntry
			at string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.AccountID, &e.DeviceID, &e.Action, &e.Detail, &e.Addr); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		e.At, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, e)
	}
	return out, rows.Err()
}
