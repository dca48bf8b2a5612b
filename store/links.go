package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file reads the link fields the access policy decides from, now
// (Links) or as of a past seq (LinksAt).

// Links returns the link fields of every row of the tenant (what the access
// policy decides from) and the seq they are at, read in one snapshot.
func (t *Tenant) Links(ctx context.Context) (*model.Links, int64, error) {
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("read links: %w", err)
	}
	defer tx.Rollback()
	return readLinks(ctx, tx)
}

// LinksAt returns the link fields of every row as of seq: the current ones,
// with the rows changed after seq rebuilt from their own changes up to seq.
// It costs a read of the link columns plus the history of the rows changed
// since seq, not a replay of the whole log. A seq below the log's
// compacted_to gives ErrCompacted.
func (t *Tenant) LinksAt(ctx context.Context, seq int64) (*model.Links, error) {
	if seq <= 0 {
		return model.NewLinks(), nil // before the first change, no row existed
	}
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	defer tx.Rollback()
	if err := notCompacted(ctx, tx, seq); err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	l, head, err := readLinks(ctx, tx)
	if err != nil || head <= seq {
		return l, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT entity, row_id FROM changes WHERE seq > ?`, seq)
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	type rowKey struct{ entity, id string }
	var changed []rowKey
	for rows.Next() {
		var k rowKey
		if err := rows.Scan(&k.entity, &k.id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read links at %d: %w", seq, err)
		}
		if model.HasLinks(k.entity) {
			changed = append(changed, k)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	history, err := tx.PrepareContext(ctx, `SELECT op, fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	defer history.Close()
	for _, k := range changed {
		if err := replayLinks(ctx, history, l, k.entity, k.id, seq); err != nil {
			return nil, fmt.Errorf("read links at %d: %w", seq, err)
		}
	}
	return l, nil
}

// replayLinks rebuilds the link fields of one row in l from its own
// changes up to seq, read with history (op and fields by entity, row id
// and seq).
func replayLinks(ctx context.Context, history *sql.Stmt, l *model.Links, entity, id string, seq int64) error {
	l.Apply(model.Change{Entity: entity, Op: model.OpDelete, ID: id})
	rows, err := history.QueryContext(ctx, entity, id, seq)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		c := model.Change{Entity: entity, ID: id}
		var fields []byte
		if err := rows.Scan(&c.Op, &fields); err != nil {
			return err
		}
		if fields != nil {
			if c.Fields, err = model.DecodeFields(c.Entity, fields); err != nil {
				return err
			}
		}
		l.Apply(c)
	}
	return rows.Err()
}

// readLinks reads every row's link fields and the seq, within tx.
func readLinks(ctx context.Context, tx *sql.Tx) (*model.Links, int64, error) {
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return nil, 0, fmt.Errorf("read links: %w", err)
	}
	l := model.NewLinks()
	for _, entity := range model.LinkedEntities() {
		a, b := model.LinkFields(entity)
		colB := `''`
		if b != "" {
			colB = `coalesce(` + quote(b) + `, '')`
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, coalesce(`+quote(a)+`, ''), `+colB+` FROM `+quote(entity))
		if err != nil {
			return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
		}
		for rows.Next() {
			var id string
			var r model.LinkRow
			if err := rows.Scan(&id, &r.A, &r.B); err != nil {
				rows.Close()
				return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
			}
			l.Set(entity, id, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
		}
	}
	return l, seq, nil
}
