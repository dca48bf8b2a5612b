package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// This file gives the space a compaction freed back to the file system
// (incremental vacuum, or one VACUUM of a file made before auto_vacuum)
// and checkpoints the WAL.

// autoVacuumIncremental is PRAGMA auto_vacuum's value for INCREMENTAL.
const autoVacuumIncremental = 2

// reclaim gives the database's free pages back to the file system and
// says how (see CompactResult.Vacuum): in steps of vacuumStep pages, each
// one write, when the file's auto_vacuum is INCREMENTAL (every tenant
// created since compaction exists); else, for a file of at most
// Options.FullVacuumMax live bytes, with one VACUUM that also makes it
// INCREMENTAL (writes wait for it: about a second); a bigger older file
// is left to Vacuum ("deferred"). Then it checkpoints the WAL and
// truncates it.
func (t *Tenant) reclaim(ctx context.Context) (string, error) {
	var mode, free, pages, pageSize int64
	if err := t.rdb.QueryRowContext(ctx, `SELECT auto_vacuum, freelist_count, page_count, page_size
		FROM pragma_auto_vacuum(), pragma_freelist_count(), pragma_page_count(), pragma_page_size()`).Scan(&mode, &free, &pages, &pageSize); err != nil {
		return "", fmt.Errorf("reclaim: %w", err)
	}
	switch {
	case free == 0:
		return "", nil
	case mode != autoVacuumIncremental && (pages-free)*pageSize > t.opts.FullVacuumMax:
		return "deferred", nil
	case mode != autoVacuumIncremental:
		if err := t.Vacuum(ctx); err != nil {
			return "", fmt.Errorf("reclaim: %w", err)
		}
		return "full", nil
	}
	for free > 0 {
		begin := time.Now()
		err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, vacuumStep))
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free)
		})
		if err != nil {
			return "", fmt.Errorf("reclaim: incremental vacuum: %w", err)
		}
		if err := yield(ctx, time.Since(begin)); err != nil {
			return "", err
		}
	}
	if err := t.checkpoint(ctx); err != nil {
		return "", fmt.Errorf("reclaim: %w", err)
	}
	return "incremental", nil
}

// Vacuum rebuilds the tenant's database with VACUUM, making its
// auto_vacuum INCREMENTAL (so that later compactions give space back in
// steps), and truncates the WAL. Writes wait for it: seconds for a large
// tenant (the operator's `therasync compact` runs it for a file
// compaction deferred). Its temporary copy goes to a file, not to memory.
func (t *Tenant) Vacuum(ctx context.Context) error {
	err := t.exclusive(ctx, func(ctx context.Context, db *sql.DB) error {
		if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, `PRAGMA temp_store = FILE`); err != nil {
			return err
		}
		_, err := db.ExecContext(ctx, `VACUUM`)
		if _, rerr := db.ExecContext(ctx, `PRAGMA temp_store = MEMORY`); err == nil {
			err = rerr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("vacuum tenant %s: %w", t.id, err)
	}
	if err := t.checkpoint(ctx); err != nil {
		return fmt.Errorf("vacuum tenant %s: %w", t.id, err)
	}
	return nil
}

// checkpoint copies the WAL into the database and truncates it.
func (t *Tenant) checkpoint(ctx context.Context) error {
	err := t.exclusive(ctx, func(ctx context.Context, db *sql.DB) error {
		rows, err := db.QueryContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}
