package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// This file is a device's push: each mutation applied once per mutation
// id, under a savepoint of its own, if its writer may make it; a refused
// one changes nothing and blocks none of the others.

// refusal reports whether err refuses one change of a device's push (and
// leaves the others to apply) rather than failing the whole group.
func refusal(err error) bool {
	var (
		ve *model.ValidationError
		fe *model.ForbiddenError
		ce *model.ConflictError
	)
	return errors.As(err, &ve) || errors.As(err, &fe) || errors.As(err, &ce)
}

// applyMutation applies change i of a device's push under a savepoint of
// its own, once per mutation id, if the writer may make it. It returns the
// logged changes: the mutation's and any the server derived from it.
func (w *writer) applyMutation(ctx context.Context, tx *sql.Tx, r *writeReq, i int, seq *int64, now time.Time) (lcs []model.Change, err error) {
	b := r.batch
	var first int64
	err = w.scan(ctx, tx, "mutation", `SELECT seq FROM mutations WHERE device_id = ? AND id = ?`, []any{b.DeviceID, b.MutationIDs[i]}, &first)
	if err == nil {
		return nil, nil // applied before: acknowledged again
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("look up mutation: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT mutation`); err != nil {
		return nil, err
	}
	start, builds, access := *seq, len(w.builds), len(w.access)
	defer func() {
		if err != nil {
			*seq = start
			w.builds, w.access = w.builds[:builds], w.access[:access]
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO mutation`); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		if _, rerr := tx.ExecContext(ctx, `RELEASE mutation`); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if lcs, err = w.mutate(ctx, tx, r, i, seq, now); err != nil {
		return nil, err
	}
	if _, err := w.exec(ctx, tx, "mutated", `INSERT INTO mutations(device_id, id, seq, created_at) VALUES (?,?,?,?)`,
		b.DeviceID, b.MutationIDs[i], *seq, now.UTC().Format(time.RFC3339)); err != nil {
		return nil, fmt.Errorf("record mutation: %w", err)
	}
	return lcs, nil
}

// mutate makes change i of a device's push if its writer may
// (model.CanWrite), a check-in by the check-in rules, and logs it. It
// returns the logged changes.
func (w *writer) mutate(ctx context.Context, tx *sql.Tx, r *writeReq, i int, seq *int64, now time.Time) ([]model.Change, error) {
	b := r.batch
	c, enc := b.Changes[i], r.enc[i]
	rows := w.rows(ctx, tx)
	before, err := rows.Row(c.Entity, c.ID)
	if err != nil {
		return nil, err
	}
	if err := model.CanWrite(*b.Writer, i, c, before, rows); err != nil {
		return nil, err
	}
	if err := model.RefuseErased(i, c, before, rows); err != nil {
		return nil, err
	}
	if shared := model.StampShare(c, before, b.Writer.ID); shared.Fields["shared_by"] != c.Fields["shared_by"] {
		c = shared
		if enc, err = encodeChange(i, c); err != nil {
			return nil, err
		}
	}
	checkIn := model.IsCheckIn(c)
	if checkIn {
		if c, err = model.StampCheckIn(i, c, before, b.DeviceID, now); err != nil {
			return nil, err
		}
		if enc, err = encodeChange(i, c); err != nil {
			return nil, err
		}
	}
	lc, err := w.applyAndLog(ctx, tx, i, c, enc, b.Origin, seq, now)
	if err != nil || lc == nil {
		return nil, err
	}
	lcs := []model.Change{*lc}
	if checkIn {
		counted, err := w.checkIn(ctx, tx, i, c.ID, before, b.Origin, seq, now)
		if err != nil {
			return nil, err
		}
		lcs = append(lcs, counted...)
	}
	return lcs, nil
}
