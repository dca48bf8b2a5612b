package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file folds one batch of the change log during a compaction (see
// compact.go): which rows to fold, read on the read pool, and the write
// that replaces their old changes by their state as of the horizon.

// plannedFold is what becomes of one row's changes up to the horizon, as
// read on the read pool: the writing transaction checks that the row's
// changes up to the horizon are still n, the newest at newest, before it
// applies f.
type plannedFold struct {
	key       rowKey
	n, newest int64
	f         folded
}

// planFold looks at the rows after key after (in (entity, id) order)
// with changes up to h, and plans the fold of those that have something
// to fold — more than one change up to h, or a delete as their only one
// (above done) — about Options.CompactBatch changes' worth; last is the
// last row looked at and more whether rows are left to look at. It reads
// on the read pool, in one snapshot: the writer is not held for it.
func (t *Tenant) planFold(ctx context.Context, after rowKey, h, done int64) (plan []plannedFold, last rowKey, more bool, err error) {
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, last, false, fmt.Errorf("plan fold: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT entity, row_id, count(*), max(seq) FROM changes INDEXED BY changes_row
		WHERE (entity, row_id) > (?, ?) AND seq <= ? GROUP BY entity, row_id ORDER BY entity, row_id`, after.entity, after.id, h)
	if err != nil {
		return nil, last, false, fmt.Errorf("plan fold: %w", err)
	}
	var (
		found []plannedFold
		work  int // changes of the rows found
		seen  int
	)
	for rows.Next() {
		p := plannedFold{}
		if err := rows.Scan(&p.key.entity, &p.key.id, &p.n, &p.newest); err != nil {
			rows.Close()
			return nil, last, false, fmt.Errorf("plan fold: %w", err)
		}
		last, seen = p.key, seen+1
		// One change at or below done is what an earlier run left: an
		// upsert with the row's whole state.
		if p.n > 1 || p.newest > done {
			found = append(found, p)
			work += int(p.n)
		}
		if work >= t.opts.CompactBatch || seen >= compactScan {
			more = true
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, last, false, fmt.Errorf("plan fold: %w", err)
	}
	read, err := tx.PrepareContext(ctx, `SELECT seq, op, fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? ORDER BY seq`)
	if err != nil {
		return nil, last, false, fmt.Errorf("plan fold: %w", err)
	}
	defer read.Close()
	for _, p := range found {
		log, err := readRowLog(ctx, read, p.key, h)
		if err != nil {
			return nil, last, false, err
		}
		if p.f, err = fold(log); err != nil {
			return nil, last, false, fmt.Errorf("fold %s/%s: %w", p.key.entity, p.key.id, err)
		}
		if len(log) > 1 || p.f.keep == 0 { // a single upsert is whole already
			plan = append(plan, p)
		}
	}
	return plan, last, more, nil
}

// foldRows applies the planned folds of up to h within tx (see the file's
// comment); it returns how many changes it dropped and rewrote. A row
// whose changes up to h are not what the plan read (another run folded it
// meanwhile) is read and decided again here.
func foldRows(ctx context.Context, tx *sql.Tx, plan []plannedFold, h int64) (dropped, rewritten int64, err error) {
	if len(plan) == 0 {
		return 0, 0, nil
	}
	check, err := tx.PrepareContext(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM changes WHERE entity = ? AND row_id = ? AND seq <= ?`)
	if err != nil {
		return 0, 0, fmt.Errorf("fold: %w", err)
	}
	defer check.Close()
	read, err := tx.PrepareContext(ctx, `SELECT seq, op, fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? ORDER BY seq`)
	if err != nil {
		return 0, 0, fmt.Errorf("fold: %w", err)
	}
	defer read.Close()
	drop, err := tx.PrepareContext(ctx, `DELETE FROM changes WHERE entity = ? AND row_id = ? AND seq <= ?`)
	if err != nil {
		return 0, 0, fmt.Errorf("fold: %w", err)
	}
	defer drop.Close()
	rewrite, err := tx.PrepareContext(ctx, `UPDATE changes SET fields = ? WHERE seq = ?`)
	if err != nil {
		return 0, 0, fmt.Errorf("fold: %w", err)
	}
	defer rewrite.Close()
	for _, p := range plan {
		k, f := p.key, p.f
		var n, newest int64
		if err := check.QueryRowContext(ctx, k.entity, k.id, h).Scan(&n, &newest); err != nil {
			return 0, 0, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
		}
		if n == 0 {
			continue // none of its changes is left
		}
		if n != p.n || newest != p.newest {
			log, err := readRowLog(ctx, read, k, h)
			if err != nil {
				return 0, 0, err
			}
			if f, err = fold(log); err != nil {
				return 0, 0, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
			}
		}
		below := h // drop everything up to below
		if f.keep > 0 {
			below = f.keep - 1
		}
		r, err := drop.ExecContext(ctx, k.entity, k.id, below)
		if err != nil {
			return 0, 0, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
		}
		d, _ := r.RowsAffected()
		dropped += d
		if f.fields != nil {
			if _, err := rewrite.ExecContext(ctx, f.fields, f.keep); err != nil {
				return 0, 0, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
			}
			rewritten++
		}
	}
	return dropped, rewritten, nil
}

// loggedChange is one change of a row's log: its seq, op and fields as
// logged (nil for none).
type loggedChange struct {
	seq    int64
	op     string
	fields []byte
}

// readRowLog reads the changes of row k up to h in seq order, with read
// (seq, op and fields by entity, row id and seq).
func readRowLog(ctx context.Context, read *sql.Stmt, k rowKey, h int64) ([]loggedChange, error) {
	rows, err := read.QueryContext(ctx, k.entity, k.id, h)
	if err != nil {
		return nil, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
	}
	defer rows.Close()
	var log []loggedChange
	for rows.Next() {
		var c loggedChange
		if err := rows.Scan(&c.seq, &c.op, &c.fields); err != nil {
			return nil, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
		}
		log = append(log, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fold %s/%s: %w", k.entity, k.id, err)
	}
	return log, nil
}

// folded is what becomes of a row's changes up to the horizon: the seq of
// the change that stays (0: none stays) and, when its fields change, the
// row's whole state to put in them.
type folded struct {
	keep   int64
	fields []byte
}

// fold decides what becomes of a row's changes up to the horizon, log in
// seq order: nothing stays when the newest is not an upsert (a delete);
// else the newest stays, with the merge of the upserts since the last
// delete when there are several.
func fold(log []loggedChange) (folded, error) {
	if len(log) == 0 {
		return folded{}, nil
	}
	newest := log[len(log)-1]
	if newest.op != string(model.OpUpsert) {
		return folded{}, nil
	}
	first := len(log) - 1
	for first > 0 && log[first-1].op == string(model.OpUpsert) {
		first--
	}
	f := folded{keep: newest.seq}
	if first == len(log)-1 {
		return f, nil // one upsert since the row was (re)made: it is whole
	}
	state := map[string]json.RawMessage{}
	for _, c := range log[first:] {
		if c.fields == nil {
			continue
		}
		var given map[string]json.RawMessage
		if err := json.Unmarshal(c.fields, &given); err != nil {
			return folded{}, fmt.Errorf("change %d: %w", c.seq, err)
		}
		for name, v := range given {
			state[name] = v
		}
	}
	b, err := json.Marshal(state)
	if err != nil {
		return folded{}, err
	}
	f.fields = b
	return f, nil
}
