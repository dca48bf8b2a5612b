package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// This file is the store's side of model's domain rules on a batch's
// changes: it reads what a rule decides from and writes what it answers
// (an app access started or ended, a shard build requested, a reference
// counted, a check-in counted). The rules themselves are model's.

// fieldRules applies to change c the domain rules that decide what it
// writes: a new account's default role (model.DefaultRole), a profile
// share's immutability (model.ShareWrite), a shared
// profile's (model.SharedProfileDelete) and a transaction's reference
// (model.AssignReference). It returns c as it is
// to be written, with its encoding, or skip when nothing is to be written.
func (w *writer) fieldRules(ctx context.Context, tx *sql.Tx, index int, c model.Change, enc encoded, now time.Time) (model.Change, encoded, bool, error) {
	var (
		skip bool
		err  error
	)
	switch {
	case c.Entity == model.ProfileShares && (c.Op == model.OpDelete || c.Op == model.OpUpsert):
		c, skip, err = model.ShareWrite(index, c, w.rows(ctx, tx), now)
	case c.Entity == model.Accounts && c.Op == model.OpUpsert:
		before, err := w.rows(ctx, tx).Row(model.Accounts, c.ID)
		if err != nil || before != nil || c.Fields["role"] != nil {
			return c, enc, false, err
		}
		c = model.DefaultRole(c, before)
	case c.Entity == model.Profiles && c.Op == model.OpDelete:
		return c, enc, false, model.SharedProfileDelete(index, c, w.rows(ctx, tx))
	case c.Entity == model.Transactions && c.Op == model.OpUpsert:
		c, err = model.AssignReference(index, c, w.rows(ctx, tx), now.In(w.loc), w.nextRef(ctx, tx))
	default:
		return c, enc, false, nil
	}
	if err != nil || skip {
		return c, enc, skip, err
	}
	enc, err = encodeChange(index, c) // the rule's fields
	return c, enc, false, err
}

// appAccess reads what decides the app access of account id, within tx.
func (w *writer) appAccess(ctx context.Context, tx *sql.Tx, id string) (model.AppAccess, error) {
	var (
		enabled sql.NullInt64
		role    sql.NullString
	)
	err := w.scan(ctx, tx, "access", `SELECT app_enabled, role FROM accounts WHERE id = ?`, []any{id}, &enabled, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return model.AppAccess{}, nil
	}
	if err != nil {
		return model.AppAccess{}, fmt.Errorf("look up account %s: %w", id, err)
	}
	return model.AppAccess{Exists: true, Enabled: enabled.Int64 != 0, Role: role.String}, nil
}

// accessChanged records, in the batch's transaction, what applied change c
// of an account did to its app access (before: the access before it, see
// model.AppAccessChange): an access that started or ended, and a shard
// build request.
func (w *writer) accessChanged(ctx context.Context, tx *sql.Tx, c model.Change, before model.AppAccess, now time.Time) error {
	after, err := w.appAccess(ctx, tx, c.ID)
	if err != nil {
		return err
	}
	ac := model.AppAccessChange(c, before, after)
	if ac.Changed {
		w.access = append(w.access, AccessChange{AccountID: c.ID, Enabled: ac.Enabled, Reason: ac.Reason})
		// An access that starts is an activation: its code mail goes out
		// once the shard is built (worker); one that ends takes it back.
		// (Prepared statements are cached by name: one name, one query.)
		name, q, args := "deactivate", `DELETE FROM activations WHERE account_id = ?`, []any{c.ID}
		if ac.Enabled {
			name, q, args = "activate", `INSERT INTO activations(account_id, requested_at) VALUES (?, ?)
			ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at`, []any{c.ID, now.UTC().Format(time.RFC3339Nano)}
		}
		if _, err := w.exec(ctx, tx, name, q, args...); err != nil {
			return fmt.Errorf("record activation of %s: %w", c.ID, err)
		}
	}
	if !ac.Build {
		return nil
	}
	if _, err := w.exec(ctx, tx, "request", `INSERT INTO shard_requests(account_id, requested_at) VALUES (?, ?)
		ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at`, c.ID, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("request build of %s: %w", c.ID, err)
	}
	w.builds = append(w.builds, c.ID)
	return nil
}

// nextRef counts transaction references in ref_counters, within tx.
func (w *writer) nextRef(ctx context.Context, tx *sql.Tx) model.NextRef {
	return func(account string, year int) (int64, error) {
		var n int64
		err := w.scan(ctx, tx, "refctr", `INSERT INTO ref_counters(account_id, year, n) VALUES (?, ?, 1)
		ON CONFLICT(account_id, year) DO UPDATE SET n = n + 1 RETURNING n`, []any{account, year}, &n)
		if err != nil {
			return 0, fmt.Errorf("count reference: %w", err)
		}
		return n, nil
	}
}

// checkIn applies the check-in rules of DESIGN §8 (model.CheckIn) to the
// attendance id that a device's change just wrote (before is its row
// before) and logs what they count: one more of units_used on the
// participant's membership. It returns the changes it logged.
func (w *writer) checkIn(ctx context.Context, tx *sql.Tx, index int, id string, before map[string]any, origin string, seq *int64, now time.Time) ([]model.Change, error) {
	units, err := model.CheckIn(index, id, before, now.In(w.loc), w.rows(ctx, tx))
	if err != nil || units == nil {
		return nil, err
	}
	enc, err := encodeChange(index, *units)
	if err != nil {
		return nil, err
	}
	lc, err := w.applyAndLog(ctx, tx, index, *units, enc, origin, seq, now)
	if err != nil || lc == nil {
		return nil, err
	}
	return []model.Change{*lc}, nil
}
