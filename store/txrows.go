package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/therasync/therasync/model"
)

// txRows reads the current rows within a writing transaction, for the
// domain rules' decisions on a write (model.Rows, model.CheckInRows), with
// the writer's prepared statements.
type txRows struct {
	// Static; used on the writer goroutine only, while tx is open.
	w   *writer
	ctx context.Context
	tx  *sql.Tx
}

// rows returns the rows as tx reads them.
func (w *writer) rows(ctx context.Context, tx *sql.Tx) txRows { return txRows{w, ctx, tx} }

// Row returns a row's fields, nil when there is none.
func (r txRows) Row(entity, id string) (map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("row: unknown entity %q", entity)
	}
	s, err := r.w.prepared(r.ctx, r.tx, "row:"+e.Name, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE id = ?`)
	if err != nil {
		return nil, err
	}
	var rowID string
	out, err := scanFields(e, s.QueryRowContext(r.ctx, id), &rowID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("row %s/%s: %w", entity, id, err)
	}
	return out, nil
}

// Find returns the rows of entity whose fields equal match's values.
func (r txRows) Find(entity string, match map[string]string) (map[string]map[string]any, error) {
	args := make(map[string]any, len(match))
	for f, v := range match {
		args[f] = v
	}
	e, name, where, vals, err := r.where("find", entity, args)
	if err != nil {
		return nil, err
	}
	s, err := r.w.prepared(r.ctx, r.tx, name, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE `+where)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(r.ctx, vals...)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", entity, err)
	}
	out, err := collectRows(e, rows)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", entity, err)
	}
	return out, nil
}

// Count returns how many rows of entity have fields equal to match's
// values.
func (r txRows) Count(entity string, match map[string]any) (int64, error) {
	e, name, where, vals, err := r.where("count", entity, match)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := r.w.scan(r.ctx, r.tx, name, `SELECT count(*) FROM `+quote(e.Name)+` WHERE `+where, vals, &n); err != nil {
		return 0, fmt.Errorf("count %s: %w", entity, err)
	}
	return n, nil
}

// where renders match, a condition on entity's fields, as an SQL WHERE
// clause and its arguments, and names the statement (op, the entity and
// the fields: one prepared statement per shape).
func (r txRows) where(op, entity string, match map[string]any) (e *model.Entity, name, where string, args []any, err error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, "", "", nil, fmt.Errorf("%s: unknown entity %q", op, entity)
	}
	if len(match) == 0 {
		return nil, "", "", nil, fmt.Errorf("%s: %s rows without a condition", op, entity)
	}
	names := make([]string, 0, len(match))
	for f := range match {
		names = append(names, f)
	}
	sort.Strings(names)
	conds := make([]string, len(names))
	args = make([]any, len(names))
	for i, n := range names {
		f, ok := e.Field(n)
		if !ok {
			return nil, "", "", nil, fmt.Errorf("%s: unknown field %s.%s", op, entity, n)
		}
		if v, ok := match[n].(string); ok {
			args[i] = v // as the column holds it, whatever the field's kind
		} else if args[i], err = toColumn(f, match[n]); err != nil {
			return nil, "", "", nil, fmt.Errorf("%s: %s.%s: %w", op, entity, n, err)
		}
		conds[i] = quote(n) + ` = ?`
	}
	return e, op + ":" + e.Name + ":" + strings.Join(names, ","), strings.Join(conds, ` AND `), args, nil
}
