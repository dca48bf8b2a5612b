package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file reads a tenant's change log: changes after a cursor, the seq,
// the access epoch read with them, a row's or an account's past.

// Seq returns the tenant's newest committed seq (0 for an empty log).
func (t *Tenant) Seq(ctx context.Context) (int64, error) {
	var seq int64
	if err := t.rdb.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("tenant %s seq: %w", t.id, err)
	}
	return seq, nil
}

// Changes returns at most limit changes after seq since, in seq order, and
// the newest committed seq, read in one consistent snapshot.
func (t *Tenant) Changes(ctx context.Context, since int64, limit int) ([]model.Change, int64, error) {
	r, err := t.Read(ctx, since, limit)
	return r.Changes, r.Latest, err
}

// Read is what Tenant.Read returns: changes and, from the same snapshot,
// the newest seq and the access epoch.
type Read struct {
	Changes []model.Change
	Latest  int64
	// AccessEpoch moves with every change that ends an access outside the
	// change log (a device revoked or logged out, a token replaced, a
	// license withdrawn, the practice key replaced): a reader that sees it
	// moved checks its connections' access before sending Changes.
	AccessEpoch int64
}

// Read returns at most limit changes after seq since, in seq order, with
// the newest seq and the access epoch of the same snapshot.
func (t *Tenant) Read(ctx context.Context, since int64, limit int) (Read, error) {
	var r Read
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), (SELECT n FROM access_epoch) FROM changes`).Scan(&r.Latest, &r.AccessEpoch); err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, entity, op, row_id, fields FROM changes WHERE seq > ? ORDER BY seq LIMIT ?`, since, limit)
	if err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	defer rows.Close()
	r.Changes = make([]model.Change, 0, min(limit, 1024))
	for rows.Next() {
		var (
			c      model.Change
			fields []byte
		)
		if err := rows.Scan(&c.Seq, &c.Entity, &c.Op, &c.ID, &fields); err != nil {
			return r, fmt.Errorf("read changes: %w", err)
		}
		if fields != nil {
			if c.Fields, err = model.DecodeFields(c.Entity, fields); err != nil {
				return r, fmt.Errorf("read change %d: %w", c.Seq, err)
			}
		}
		r.Changes = append(r.Changes, c)
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	return r, nil
}

// AccessEpoch returns the tenant's access epoch (see Read).
func (t *Tenant) AccessEpoch(ctx context.Context) (int64, error) {
	var n int64
	if err := t.rdb.QueryRowContext(ctx, `SELECT n FROM access_epoch`).Scan(&n); err != nil {
		return 0, fmt.Errorf("access epoch: %w", err)
	}
	return n, nil
}

// bumpAccessEpoch moves the access epoch, within a writing transaction.
func bumpAccessEpoch(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE access_epoch SET n = n + 1`); err != nil {
		return fmt.Errorf("bump access epoch: %w", err)
	}
	return nil
}

// ExistedBefore reports whether the row existed just before seq: its
// newest change before seq is an upsert. A row none of whose earlier
// changes is in the log counts as not existing.
func (t *Tenant) ExistedBefore(ctx context.Context, entity, id string, seq int64) (bool, error) {
	var op string
	err := t.rdb.QueryRowContext(ctx, `SELECT op FROM changes WHERE entity = ? AND row_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1`,
		entity, id, seq).Scan(&op)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("row %s/%s before %d: %w", entity, id, seq, err)
	}
	return op == string(model.OpUpsert), nil
}

// RoleAt returns the account's role as of seq: the role its newest change
// at or before seq set, "" when none did.
func (t *Tenant) RoleAt(ctx context.Context, accountID string, seq int64) (string, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? AND fields IS NOT NULL
		ORDER BY seq DESC`, model.Accounts, accountID, seq)
	if err != nil {
		return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return "", err
		}
		var f struct {
			Role *string `json:"role"`
		}
		if json.Unmarshal(b, &f) == nil && f.Role != nil {
			return *f.Role, nil
		}
	}
	return "", rows.Err()
}
