package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file reads a tenant's current rows.

// Row returns the current fields of one row, or ErrNotFound.
func (t *Tenant) Row(ctx context.Context, entity, id string) (map[string]any, error) {
	return scanRow(ctx, t.rdb, entity, id)
}

type rowQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func scanRow(ctx context.Context, q rowQueryer, entity, id string) (map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("row: unknown entity %q", entity)
	}
	var rowID string
	out, err := scanFields(e, q.QueryRowContext(ctx, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE id = ?`, id), &rowID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("row %s/%s: %w", entity, id, err)
	}
	return out, nil
}

// scanFields scans a row of id and the entity's columns, in schema order,
// into id and the fields' Go values.
func scanFields(e *model.Entity, sc interface{ Scan(...any) error }, id *string) (map[string]any, error) {
	vals := make([]any, len(e.Fields))
	ptrs := make([]any, 0, len(e.Fields)+1)
	ptrs = append(ptrs, id)
	for i := range vals {
		ptrs = append(ptrs, &vals[i])
	}
	if err := sc.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(e.Fields))
	for i, f := range e.Fields {
		v, err := fromColumn(f, vals[i])
		if err != nil {
			return nil, err
		}
		out[f.Name] = v
	}
	return out, nil
}

// RowsBy returns the current rows of entity whose field equals value, by
// id; field must be one of the entity's fields.
func (t *Tenant) RowsBy(ctx context.Context, entity, field, value string) (map[string]map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("rows: unknown entity %q", entity)
	}
	if _, ok := e.Field(field); !ok {
		return nil, fmt.Errorf("rows: unknown field %s.%s", entity, field)
	}
	return queryRows(ctx, t.rdb, entity, `WHERE `+quote(field)+` = ?`, value)
}

// queryRows returns the rows of entity matching where (with args), by id.
func queryRows(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, entity, where string, args ...any) (map[string]map[string]any, error) {
	e, _ := model.Lookup(entity)
	rows, err := q.QueryContext(ctx, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", entity, err)
	}
	out, err := collectRows(e, rows)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", entity, err)
	}
	return out, nil
}

// collectRows scans rows of entity e (id, then columnList(e)) into a map
// by id, and closes them.
func collectRows(e *model.Entity, rows *sql.Rows) (map[string]map[string]any, error) {
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var id string
		fields, err := scanFields(e, rows, &id)
		if err != nil {
			return nil, err
		}
		out[id] = fields
	}
	return out, rows.Err()
}
