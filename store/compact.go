package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// This file compacts a tenant's change log (DESIGN §2): changes older than
// the retention are folded into the newest change of each row, the
// records of old batch ids and mutation ids are dropped, and the space is
// given back to the file system.
//
// The horizon H is the highest seq whose change is older than the
// retention, never the head's (the head's change stays, so that the next
// seq is never one handed out before). For every row with changes at or
// before H:
//
//   - if its newest change at or before H is a delete, all its changes up
//     to H go: the row did not exist at H;
//   - else that newest change stays at its seq, its fields replaced by the
//     row's whole state at H (the merge of its upserts since its last
//     delete at or before H), and its older changes go.
//
// Why readers stay right: every question the log answers about a seq s ≥ H
// (LinksAt, RoleAt, ExistedBefore(s+1), the log's changes after s) looks
// at each row's changes after s, which are untouched, and at its newest
// change at or before s, which is either untouched (after H) or stands for
// the row's state at H (or, gone, for its absence at H) — exactly what the
// dropped prefix left the row at. A pull from since=0 replays, for every
// row that exists, its state at H and then its changes after H: the
// current rows. A cursor c < H cannot be continued (its deletes may be
// gone): compacted_to is raised to H before the first change is dropped,
// in the first batch's transaction, so every reader that reads the log and
// compacted_to in one snapshot sees either the log before the run, or a
// compacted_to that refuses its cursor. LinksAt and RoleAt refuse a seq
// below compacted_to (ErrCompacted) for the same reason. folded_to = H is
// recorded with the last batch: a client paging from 0 may go on below
// compacted_to only if it began when the log was folded whole and no
// compaction began since (Log.ContinuesFrom) — its first pages and its
// later ones then read the same folded prefix.
//
// It runs while syncd serves: in batches of whole rows (every change of a
// row up to H in one transaction, so that no snapshot shows a row's
// history half folded) of about Options.CompactBatch changes, each one
// write through the tenant's writer, whose other writes go on in between
// (after each write, compaction waits as long as it took). The rows to
// fold are found and their folds decided on the read pool, outside the
// writer; the write checks each row is as read.

// ErrCompacted is returned for a question about a seq below the log's
// compacted_to: changes it needs may have been dropped.
var ErrCompacted = errors.New("changes compacted away")

const (
	// compactScan bounds how many rows one read looks at for rows to fold
	// (Options.CompactBatch bounds the changes to fold: a row with more
	// changes up to the horizon is folded whole).
	compactScan = 16384
	// recordBatch is how many records of old batch or mutation ids one
	// write deletes.
	recordBatch = 4096
	// vacuumStep is how many free pages one write gives back to the file
	// system (4 MiB of 4 KiB pages).
	vacuumStep = 1024
)

// CompactResult is what one compaction did.
type CompactResult struct {
	// Horizon is this run's H: every change up to it older than the
	// retention (0: nothing was old enough). CompactedTo is the log's
	// compacted_to after the run.
	Horizon     int64
	CompactedTo int64
	// Dropped counts the changes deleted, Rewritten those whose fields
	// were replaced by their row's whole state.
	Dropped   int64
	Rewritten int64
	// BatchesDropped and MutationsDropped count the records of batch ids
	// and device mutation ids older than the retention that were deleted.
	BatchesDropped   int64
	MutationsDropped int64
	// BytesBefore and BytesAfter are the database's size (its pages)
	// before the run and after the space was given back.
	BytesBefore int64
	BytesAfter  int64
	// Vacuum is how the space was given back: "incremental" (the file's
	// auto_vacuum is INCREMENTAL), "full" (a VACUUM that also made it
	// INCREMENTAL), "deferred" (an older file too big to VACUUM while the
	// tenant serves: its free pages are reused by later writes; Vacuum
	// gives them back) or "" (nothing to give back).
	Vacuum string
}

// Compact compacts the tenant's change log: every change older than
// retention is folded into its row's newest change up to the horizon (see
// the file's comment), the log's compacted_to is raised to the horizon,
// records of batch and mutation ids older than retention are deleted, and
// the freed space is given back. A retention of 0 folds everything but
// the head's change. It runs in short batches while the tenant serves;
// when it fails or ctx ends halfway, what it did stays valid and a later
// run goes on.
func (t *Tenant) Compact(ctx context.Context, retention time.Duration) (CompactResult, error) {
	var res CompactResult
	if retention < 0 {
		return res, fmt.Errorf("compact tenant %s: negative retention %s", t.id, retention)
	}
	var err error
	if res.BytesBefore, err = t.Size(ctx); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	cutoff := t.opts.Now().Add(-retention).UTC()
	before, err := t.Log(ctx)
	if err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	if res.Horizon, err = t.horizon(ctx, cutoff); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	// Up to compacted_to at least: a run that stopped halfway (folded_to
	// below it) is finished.
	if h := max(res.Horizon, before.CompactedTo); h > before.FoldedTo {
		if err := t.foldLog(ctx, h, before.FoldedTo, before.History, &res); err != nil {
			return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
		}
	}
	old := cutoff.Format(time.RFC3339)
	if res.BatchesDropped, err = t.dropOldRecords(ctx, "batches", old); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	if res.MutationsDropped, err = t.dropOldRecords(ctx, "mutations", old); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	if res.Vacuum, err = t.reclaim(ctx); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	l, err := t.Log(ctx)
	if err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	res.CompactedTo = l.CompactedTo
	if res.BytesAfter, err = t.Size(ctx); err != nil {
		return res, fmt.Errorf("compact tenant %s: %w", t.id, err)
	}
	return res, nil
}

// horizon returns the highest seq below the head whose change was made
// before cutoff (0 for none). created_at is compared by its whole seconds
// (the nanoseconds of RFC 3339 are of varying length): a change of the
// cutoff's second counts as younger.
func (t *Tenant) horizon(ctx context.Context, cutoff time.Time) (int64, error) {
	var h int64
	err := t.rdb.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes
		WHERE seq < (SELECT max(seq) FROM changes) AND substr(created_at, 1, 19) < ?`,
		cutoff.Format("2006-01-02T15:04:05")).Scan(&h)
	if err != nil {
		return 0, fmt.Errorf("horizon: %w", err)
	}
	return h, nil
}

// rowKey names one row of the tenant.
type rowKey struct{ entity, id string }

// foldLog raises compacted_to to h, folds, batch by batch, every row's
// changes up to h, and then records folded_to = h. Rows whose only change
// up to h is at or below done were folded before.
func (t *Tenant) foldLog(ctx context.Context, h, done int64, history string, res *CompactResult) error {
	raised := false
	var after rowKey
	for {
		plan, last, more, err := t.planFold(ctx, after, h, done)
		if err != nil {
			return err
		}
		if len(plan) > 0 || !raised || !more {
			var dropped, rewritten int64
			begin := time.Now()
			err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				dropped, rewritten = 0, 0
				var now string
				if err := tx.QueryRowContext(ctx, `SELECT history FROM log_meta`).Scan(&now); err != nil {
					return fmt.Errorf("read history: %w", err)
				}
				if now != history {
					return errors.New("the log was rewritten meanwhile (an erasure or a restore): run again")
				}
				if !raised {
					// Before any change goes, in the same transaction: no
					// snapshot shows a folded row with a cursor below h
					// still accepted.
					if _, err := tx.ExecContext(ctx, `UPDATE log_meta SET compacted_to = max(compacted_to, ?)`, h); err != nil {
						return fmt.Errorf("raise compacted_to: %w", err)
					}
				}
				var err error
				if dropped, rewritten, err = foldRows(ctx, tx, plan, h); err != nil {
					return err
				}
				if !more {
					// With the last rows: the log is folded whole up to h
					// (unless another run raised compacted_to past it).
					if _, err := tx.ExecContext(ctx, `UPDATE log_meta SET folded_to = ? WHERE compacted_to = ?`, h, h); err != nil {
						return fmt.Errorf("record folded_to: %w", err)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			raised = true
			res.Dropped += dropped
			res.Rewritten += rewritten
			if err := yield(ctx, time.Since(begin)); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
		after = last
	}
}

// dropOldRecords deletes, in batches, the rows of table (batches or
// mutations) created before old (RFC 3339, whole seconds, UTC: the form
// they are written in), and returns how many it deleted.
func (t *Tenant) dropOldRecords(ctx context.Context, table, old string) (int64, error) {
	var total int64
	for {
		var n int64
		err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			r, err := tx.ExecContext(ctx, `DELETE FROM `+quote(table)+` WHERE rowid IN (SELECT rowid FROM `+quote(table)+` WHERE created_at < ? LIMIT ?)`,
				old, recordBatch)
			if err != nil {
				return err
			}
			n, _ = r.RowsAffected()
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("drop old %s: %w", table, err)
		}
		total += n
		if n < recordBatch {
			return total, nil
		}
	}
}

// yield waits as long as compaction's last write took (d): the writer
// spends at least half of its time on the tenant's other writes.
func yield(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// ClaimCompaction claims the tenant's periodic compaction unless one was
// claimed less than every ago, and reports whether this call claimed it;
// of any number of processes, one does.
func (t *Tenant) ClaimCompaction(ctx context.Context, every time.Duration) (bool, error) {
	now := t.opts.Now().UTC()
	res, err := t.execWrite(ctx, `UPDATE log_meta SET compaction_claimed_at = ? WHERE compaction_claimed_at <= ?`,
		now.Format(time.RFC3339), now.Add(-every).Format(time.RFC3339))
	if err != nil {
		return false, fmt.Errorf("claim compaction of tenant %s: %w", t.id, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
