package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
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
	// History is the log's history id, CompactedTo the highest seq whose
	// change compaction may have dropped and FoldedTo the horizon up to
	// which compaction finished (see Log).
	History     string
	CompactedTo int64
	FoldedTo    int64
}

// Log returns where the log stood in the read's snapshot.
func (r Read) Log() Log {
	return Log{Seq: r.Latest, History: r.History, CompactedTo: r.CompactedTo, FoldedTo: r.FoldedTo}
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
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM changes), (SELECT n FROM access_epoch), history, compacted_to, folded_to
		FROM log_meta`).
		Scan(&r.Latest, &r.AccessEpoch, &r.History, &r.CompactedTo, &r.FoldedTo); err != nil {
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

// Log is where the tenant's change log stands: its head seq, its history
// id (DESIGN §2: a cursor of another history is never continued), the
// highest seq whose change compaction may have dropped (a cursor below it
// cannot be continued either) and the horizon up to which compaction
// finished folding (equal to CompactedTo unless a compaction is under way
// or stopped halfway).
type Log struct {
	Seq         int64
	History     string
	CompactedTo int64
	FoldedTo    int64
}

// Log reads the tenant's head seq, history id and compaction horizon in
// one snapshot.
func (t *Tenant) Log(ctx context.Context) (Log, error) {
	return readLog(ctx, t.rdb)
}

// readLog reads the log's head, history and horizon with q.
func readLog(ctx context.Context, q rowQueryer) (Log, error) {
	var l Log
	err := q.QueryRowContext(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM changes), history, compacted_to, folded_to FROM log_meta`).
		Scan(&l.Seq, &l.History, &l.CompactedTo, &l.FoldedTo)
	if err != nil {
		return Log{}, fmt.Errorf("read the log's history: %w", err)
	}
	return l, nil
}

// ContinuesFrom reports whether a client at cursor of history history may
// go on from the log: the same history (an empty history is a client that
// does not know one), and no change after the cursor dropped — a cursor of
// 0 is a client without data, which the kept log describes whole (every
// row that exists keeps its state as of compacted_to). A cursor ahead of
// the head is not decided here.
//
// A client that began reading from seq 0 and is paging through the log
// passes compactedTo: below compacted_to it may go on while
// compactedTo — the FoldedTo of the snapshot it began with (Resume) — is
// still the log's compacted_to: the log up to there was folded whole
// before it began, and no compaction has changed it since. 0 is no
// such client.
func (l Log) ContinuesFrom(cursor int64, history string, compactedTo int64) bool {
	return (history == "" || history == l.History) &&
		(cursor == 0 || cursor >= l.CompactedTo || (compactedTo > 0 && compactedTo == l.CompactedTo))
}

// Resume is what a client that begins reading from seq 0 in this snapshot
// passes to ContinuesFrom on its later pages: the horizon up to which the
// log it reads is folded whole.
func (l Log) Resume() int64 { return l.FoldedTo }

// notCompacted returns ErrCompacted when seq is below the log's
// compacted_to as q reads it (a question about the log as of seq must ask
// it in the same snapshot).
func notCompacted(ctx context.Context, q rowQueryer, seq int64) error {
	var to int64
	if err := q.QueryRowContext(ctx, `SELECT compacted_to FROM log_meta`).Scan(&to); err != nil {
		return fmt.Errorf("read compacted_to: %w", err)
	}
	if seq < to {
		return fmt.Errorf("seq %d is below compacted_to %d: %w", seq, to, ErrCompacted)
	}
	return nil
}

// execer is a writing transaction or connection.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// newHistory sets a new history id within a writing transaction: the log
// stopped being a continuation of what clients saw.
func newHistory(ctx context.Context, tx execer) (string, error) {
	h, err := randomHistory()
	if err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE log_meta SET history = ?`, h); err != nil {
		return "", fmt.Errorf("new history: %w", err)
	}
	return h, nil
}

// randomHistory is a new history id: 128 random bits, hex.
func randomHistory() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new history: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
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
// at or before seq set, "" when none did since the account was last
// deleted (or ever). A seq below the log's compacted_to gives
// ErrCompacted.
func (t *Tenant) RoleAt(ctx context.Context, accountID string, seq int64) (string, error) {
	if seq <= 0 {
		return "", nil
	}
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
	}
	defer tx.Rollback()
	if err := notCompacted(ctx, tx, seq); err != nil {
		return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT op, fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ?
		ORDER BY seq DESC`, model.Accounts, accountID, seq)
	if err != nil {
		return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			op string
			b  []byte
		)
		if err := rows.Scan(&op, &b); err != nil {
			return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
		}
		if op != string(model.OpUpsert) {
			return "", nil // deleted: a role from before is not its role
		}
		var f struct {
			Role *string `json:"role"`
		}
		if b != nil && json.Unmarshal(b, &f) == nil && f.Role != nil {
			return *f.Role, nil
		}
	}
	return "", rows.Err()
}
