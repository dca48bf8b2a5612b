package device

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// This file applies the frames the server sends: a batch of changes and
// the cursor after it, an acknowledgement, a rejection, a wipe.

// decodeFrame decodes a server frame into the wire type its type names:
// *wire.Changes, *wire.CaughtUp, *wire.Ack, *wire.Reject, *wire.Resync or
// *wire.Wipe. A type this library does not know (a newer server's) is
// nil, and ignored.
func decodeFrame(b []byte) (any, error) {
	var h wire.Header
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	var f any
	switch h.Type {
	case wire.TypeChanges:
		f = new(wire.Changes)
	case wire.TypeCaughtUp:
		f = new(wire.CaughtUp)
	case wire.TypeAck:
		f = new(wire.Ack)
	case wire.TypeReject:
		f = new(wire.Reject)
	case wire.TypeResync:
		f = new(wire.Resync)
	case wire.TypeWipe:
		f = new(wire.Wipe)
	default:
		return nil, nil
	}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("decode %s frame: %w", h.Type, err)
	}
	return f, nil
}

// handleFrame applies one server frame (see decodeFrame) to the local
// state.
func (c *Client) handleFrame(ctx context.Context, f any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, wipe := f.(*wire.Wipe); !wipe && (c.data == nil || c.outbox == nil) {
		return ErrNotLoggedIn // logged out or wiped meanwhile
	}
	switch f := f.(type) {
	case *wire.Changes:
		if len(f.Changes) == 0 {
			return nil
		}
		return c.applyFrameLocked(ctx, f.Changes, f.Changes[len(f.Changes)-1].Seq, "")
	case *wire.CaughtUp:
		return c.applyFrameLocked(ctx, nil, f.Seq, f.History)
	case *wire.Ack:
		return c.forgetLocked(ctx, f.MutationIDs)
	case *wire.Reject:
		if f.MutationID == "" {
			return fmt.Errorf("server refused a frame: %s: %s", f.Error, f.Message)
		}
		var (
			entity, row string
			orphaned    bool
		)
		err := c.outbox.QueryRowContext(ctx, `SELECT entity, row_id, orphaned FROM outbox WHERE id = ?`, f.MutationID).Scan(&entity, &row, &orphaned)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if f.Error == wire.CodeErased || orphaned && f.Error == wire.CodeForbidden {
			return c.dropRejectedLocked(ctx, f.MutationID, entity, row)
		}
		if _, err := c.outbox.ExecContext(ctx, `UPDATE outbox SET rejected = 1, error = ?, message = ? WHERE id = ?`, f.Error, f.Message, f.MutationID); err != nil {
			return err
		}
		return c.restoreRowLocked(ctx, entity, row)
	case *wire.Wipe:
		return c.wipeLocked()
	}
	return nil
}

// applyFrameLocked applies a batch of streamed changes: the server state of
// rows with pending writes is updated first (outbox.db), then, in one local
// transaction, the changes, the pending writes on top again, the cursor and
// the history it belongs to (unless "": the one kept stays).
func (c *Client) applyFrameLocked(ctx context.Context, cs []model.Change, cursor int64, history string) error {
	touched := map[[2]string]bool{}
	for _, ch := range cs {
		var fields sql.NullString
		err := c.outbox.QueryRowContext(ctx, `SELECT fields FROM base WHERE entity = ? AND row_id = ?`, ch.Entity, ch.ID).Scan(&fields)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return err
		}
		touched[[2]string{ch.Entity, ch.ID}] = true
		var merged any
		if ch.Op == model.OpUpsert {
			m := map[string]any{}
			if fields.Valid {
				if err := json.Unmarshal([]byte(fields.String), &m); err != nil {
					return fmt.Errorf("base of %s %s: %w", ch.Entity, ch.ID, err)
				}
			}
			for k, v := range ch.Fields {
				m[k] = v
			}
			b, err := json.Marshal(m)
			if err != nil {
				return fmt.Errorf("base of %s %s: %w", ch.Entity, ch.ID, err)
			}
			merged = string(b)
		}
		if _, err := c.outbox.ExecContext(ctx, `UPDATE base SET fields = ? WHERE entity = ? AND row_id = ?`, merged, ch.Entity, ch.ID); err != nil {
			return err
		}
	}
	tx, err := c.data.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, ch := range cs {
		if err := applyLocal(ctx, tx, ch.Entity, ch.Op, ch.ID, ch.Fields); err != nil {
			return fmt.Errorf("apply seq %d: %w", ch.Seq, err)
		}
	}
	for key := range touched {
		if err := c.replayPendingLocked(ctx, tx, key[0], key[1]); err != nil {
			return err
		}
	}
	var was string
	if history != "" {
		if err := tx.QueryRowContext(ctx, `SELECT value FROM sync_meta WHERE key = 'history'`).Scan(&was); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read the history: %w", err)
		}
	}
	meta := [][2]string{{"cursor", strconv.FormatInt(cursor, 10)}}
	if history != "" {
		meta = append(meta, [2]string{"history", history})
	}
	for _, kv := range meta {
		if _, err := tx.ExecContext(ctx, `INSERT INTO sync_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, kv[0], kv[1]); err != nil {
			return fmt.Errorf("store the %s: %w", kv[0], err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if history != "" && history != was {
		// An erasure (or a restore) rewrote the log: the rows it deleted
		// were zeroed in the file (secure_delete), and leave the WAL now,
		// with the rejected writes of rows that are gone.
		if err := c.dropGoneLocked(ctx, true); err != nil {
			return err
		}
		return truncateWAL(ctx, c.data, c.outbox)
	}
	return nil
}

// dropRejectedLocked drops a write the server rejected as bringing back an
// erased row (wire.CodeErased), or an orphaned one rejected forbidden
// (dropGoneLocked), rather than keep it as rejected with its values: the write, the row's other
// rejected writes (conflict copies),
// and, once no pending write of the row is left, its server state (base).
// The row is put back to its server state plus what is pending, and the
// WALs are truncated, so that no byte of the write stays in the files.
func (c *Client) dropRejectedLocked(ctx context.Context, id, entity, row string) error {
	if _, err := c.outbox.ExecContext(ctx, `DELETE FROM outbox WHERE id = ? OR (entity = ? AND row_id = ? AND rejected = 1)`, id, entity, row); err != nil {
		return err
	}
	if err := c.restoreRowLocked(ctx, entity, row); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if _, err := c.outbox.ExecContext(ctx, `DELETE FROM base WHERE entity = ? AND row_id = ? AND NOT EXISTS
		(SELECT 1 FROM outbox o WHERE o.entity = base.entity AND o.row_id = base.row_id AND o.rejected = 0)`, entity, row); err != nil {
		return err
	}
	return truncateWAL(ctx, c.data, c.outbox)
}

// dropGoneLocked, on a new history (an erasure or a restore), drops the
// rejected writes of rows the server no longer holds, and marks the
// pending ones orphaned: a reject `forbidden` of them drops them too
// (dropRejectedLocked). Kept as rejected, they would keep the values of an
// erased row for good; a member's write of a row it does not see is
// refused `forbidden`, with the same words whether it was erased or not,
// so the history change is what tells. (After a restore, such a write of
// a row the restore took away goes too; one refused for another reason,
// `not_found`, `bad_request`, stays rejected.) The server's rows are data.db's
// (a fresh shard, before the pending writes are put on top) or, with
// useBase, the base snapshot of a row where there is one.
func (c *Client) dropGoneLocked(ctx context.Context, useBase bool) error {
	ps, err := c.outboxLocked(ctx, "1")
	if err != nil {
		return err
	}
	for _, p := range ps {
		gone, err := c.serverRowGoneLocked(ctx, p.Entity, p.RowID, useBase)
		if err != nil {
			return err
		}
		if !gone {
			continue
		}
		q := `UPDATE outbox SET orphaned = 1 WHERE id = ?`
		if p.Rejected {
			q = `DELETE FROM outbox WHERE id = ?`
		}
		if _, err := c.outbox.ExecContext(ctx, q, p.ID); err != nil {
			return err
		}
	}
	_, err = c.outbox.ExecContext(ctx, `DELETE FROM base WHERE NOT EXISTS
		(SELECT 1 FROM outbox o WHERE o.entity = base.entity AND o.row_id = base.row_id AND o.rejected = 0)`)
	return err
}

// serverRowGoneLocked reports whether the server holds no row entity id:
// data.db holds none or, with useBase, its base snapshot says so.
func (c *Client) serverRowGoneLocked(ctx context.Context, entity, id string, useBase bool) (bool, error) {
	if useBase {
		var fields sql.NullString
		err := c.outbox.QueryRowContext(ctx, `SELECT fields FROM base WHERE entity = ? AND row_id = ?`, entity, id).Scan(&fields)
		if err == nil {
			return !fields.Valid, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, err
		}
	}
	row, err := readLocal(ctx, c.data, entity, id)
	return row == nil, err
}

// walTries is how often truncateWAL tries a checkpoint that a reader keeps
// busy, walRetry the pause between tries.
const (
	walTries = 5
	walRetry = 20 * time.Millisecond
)

// truncateWAL checkpoints the databases' WALs and truncates them. A
// checkpoint a reader keeps from finishing (busy) is tried again a few
// times, then it is an error: the WAL may still hold what was deleted.
func truncateWAL(ctx context.Context, dbs ...*sql.DB) error {
	for _, db := range dbs {
		for try := 1; ; try++ {
			var busy, log, done int
			if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done); err != nil {
				return fmt.Errorf("truncate the WAL: %w", err)
			}
			if busy == 0 {
				break
			}
			if try == walTries {
				return fmt.Errorf("truncate the WAL: still busy after %d tries (%d of %d frames checkpointed)", try, done, log)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("truncate the WAL: %w", ctx.Err())
			case <-time.After(walRetry):
			}
		}
	}
	return nil
}
