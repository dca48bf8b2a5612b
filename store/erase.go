package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/therasync/therasync/model"
)

// This file is a profile's erasure (DESIGN §2, GDPR Art. 17) in a
// practice batch's transaction: model.Erase says which rows go, this file
// deletes them with a logged delete each, rewrites their past changes
// into field-less deletes, keeps their ids as erased (no device brings
// them back: model.RefuseErased), starts a new history and has every
// shard rebuilt; after the commit the writer truncates the WAL (truncateWAL).
// The tenant's database runs with secure_delete, so that freed cells and
// pages are zeroed, not left behind.

// erase erases profile id, change index of batch b (model.Erase): it
// deletes the profile and every row naming it, logging a delete of each,
// rewrites every past change of them into a field-less delete, and logs
// the rows kept (named the profile only in the past) anew, whole. It
// returns the changes it logged.
func (w *writer) erase(ctx context.Context, tx *sql.Tx, index int, id string, b Batch, seq *int64, now time.Time) ([]model.Change, error) {
	rows := w.rows(ctx, tx)
	er, err := model.Erase(id, rows)
	if err != nil {
		return nil, fmt.Errorf("erase profile %s: %w", id, err)
	}
	// The past first: the deletes and the rows kept are logged after it.
	var scrubbed int64
	for _, r := range er.Scrub {
		res, err := w.exec(ctx, tx, "scrub", `UPDATE changes SET op = 'delete', fields = NULL
			WHERE entity = ? AND row_id = ? AND (op != 'delete' OR fields IS NOT NULL)`, r.Entity, r.ID)
		if err != nil {
			return nil, fmt.Errorf("erase profile %s: rewrite the past of %s/%s: %w", id, r.Entity, r.ID, err)
		}
		n, _ := res.RowsAffected()
		scrubbed += n
	}
	if len(er.Delete) == 0 && scrubbed == 0 {
		return nil, nil // nothing names it, now or in the log: a repeat
	}
	keep := map[model.RowRef]bool{}
	for _, r := range er.Keep {
		keep[r] = true
	}
	for _, r := range er.Scrub {
		if keep[r] {
			continue
		}
		if _, err := w.exec(ctx, tx, "tombstone", `INSERT INTO erased(entity, row_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, r.Entity, r.ID); err != nil {
			return nil, fmt.Errorf("erase profile %s: record %s/%s as erased: %w", id, r.Entity, r.ID, err)
		}
	}
	var logged []model.Change
	for _, r := range er.Delete {
		c := model.Change{Entity: r.Entity, Op: model.OpDelete, ID: r.ID}
		enc := encoded{args: []any{r.ID}}
		if _, err := w.writeRow(ctx, tx, r.Entity, c, enc); err != nil {
			return nil, fmt.Errorf("erase profile %s: %w", id, err)
		}
		if err := w.logChange(ctx, tx, &c, enc, b.Origin, seq, now); err != nil {
			return nil, fmt.Errorf("erase profile %s: %w", id, err)
		}
		logged = append(logged, c)
	}
	for _, r := range er.Keep {
		fields, err := rows.Row(r.Entity, r.ID)
		if err != nil {
			return nil, fmt.Errorf("erase profile %s: %w", id, err)
		}
		c := model.Change{Entity: r.Entity, Op: model.OpUpsert, ID: r.ID, Fields: fields}
		enc, err := encodeChange(index, c)
		if err != nil {
			return nil, fmt.Errorf("erase profile %s: %w", id, err)
		}
		if err := w.logChange(ctx, tx, &c, enc, b.Origin, seq, now); err != nil {
			return nil, fmt.Errorf("erase profile %s: %w", id, err)
		}
		logged = append(logged, c)
	}
	w.erased = true
	detail := fmt.Sprintf("profile %s: %d rows deleted, %d past changes rewritten, %d rows logged anew", id, len(er.Delete), scrubbed, len(er.Keep))
	if err := insertAudit(ctx, tx, now, AuditEntry{Actor: b.actor(), Action: "profile_erased", Detail: detail, Addr: b.Addr}); err != nil {
		return nil, err
	}
	return logged, nil
}

// afterErasure finishes a batch that erased: the log gets a new history
// (its past changed under every client's cursor), the tenant's shard
// records are forgotten (their files may hold what was erased: the caller
// removes them, see Result.History) and every app-enabled account's build
// is requested. It returns the new history id.
func (w *writer) afterErasure(ctx context.Context, tx *sql.Tx, now time.Time) (string, error) {
	h, err := newHistory(ctx, tx)
	if err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM shards`); err != nil {
		return "", fmt.Errorf("forget the shards: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `INSERT INTO shard_requests(account_id, requested_at)
		SELECT id, ? FROM accounts WHERE app_enabled = 1 AND role IN (?, ?, ?)
		ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at RETURNING account_id`,
		now.UTC().Format(time.RFC3339Nano), model.RoleAdmin, model.RoleMember, model.RoleSecretary)
	if err != nil {
		return "", fmt.Errorf("request the builds: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return "", fmt.Errorf("request the builds: %w", err)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !slices.Contains(w.builds, id) {
			w.builds = append(w.builds, id)
		}
	}
	w.erasedGroup, w.walDirty = true, true
	return h, nil
}

// Erased reports whether the row was erased (model.ErasedRows).
func (r txRows) Erased(entity, id string) (bool, error) {
	var n int
	if err := r.w.scan(r.ctx, r.tx, "erased", `SELECT count(*) FROM erased WHERE entity = ? AND row_id = ?`, []any{entity, id}, &n); err != nil {
		return false, fmt.Errorf("erased %s/%s: %w", entity, id, err)
	}
	return n > 0, nil
}

// Logged returns the ids of the rows of entity of which a change in the
// log set field to value (model.ErasureRows). It reads the entity's
// changes whose JSON holds value as Go encodes it (the log's fields are
// encoded by encodeChange), then decodes only those.
func (r txRows) Logged(entity, field, value string) ([]string, error) {
	needle, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("logged %s.%s: %w", entity, field, err)
	}
	rows, err := r.tx.QueryContext(r.ctx, `SELECT DISTINCT row_id FROM changes
		WHERE entity = ? AND fields IS NOT NULL AND instr(fields, ?) > 0 AND json_extract(fields, '$.' || ?) = ?
		ORDER BY row_id`, entity, string(needle), field, value)
	if err != nil {
		return nil, fmt.Errorf("logged %s.%s: %w", entity, field, err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("logged %s.%s: %w", entity, field, err)
	}
	return ids, nil
}

// truncateWAL checkpoints the whole WAL into the database file and
// truncates it, on the write connection between transactions, so that no
// frame of it keeps a page as it was before an erasure. Readers still
// reading from the WAL make it busy: it waits for them at most walWait per
// attempt, and reports whether one of attempts succeeded (the writer's
// loop tries again later otherwise).
func (w *writer) truncateWAL(ctx context.Context, attempts int) bool {
	if _, err := w.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, walWait.Milliseconds())); err != nil {
		return false
	}
	defer w.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeout.Milliseconds()))
	for range attempts {
		var busy, frames, done int64
		err := w.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done)
		if err == nil && busy == 0 {
			w.walDirty = false
			return true
		}
	}
	return false
}

// How truncateWAL waits for readers: after an erasure's commit up to
// walAttempts times walWait, then once walRetry later, doubling up to
// walRetryMax, until it succeeds.
const (
	walWait     = 100 * time.Millisecond
	walAttempts = 3
	walRetry    = time.Second
	walRetryMax = 30 * time.Second
	busyTimeout = 10 * time.Second // the write connection's (openWriteDB's DSN)
)
