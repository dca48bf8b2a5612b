package device

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"modernc.org/sqlite"

	"github.com/therasync/therasync/model"
)

// This file reads and writes the local database (data.db): its cursor,
// queries, and a row turned between its local columns and its JSON
// fields.

// Cursor returns the seq up to which the local database holds the stream.
func (c *Client) Cursor() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursorLocked()
}

// cursorLocked is Cursor with c.mu held: the cursor stored after a frame,
// else the seq of the shard.
func (c *Client) cursorLocked() (int64, error) {
	if c.data == nil {
		return 0, ErrNotLoggedIn
	}
	var v string
	err := c.data.QueryRow(`SELECT value FROM sync_meta WHERE key = 'cursor'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		err = c.data.QueryRow(`SELECT value FROM sync_meta WHERE key = 'seq'`).Scan(&v)
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// History returns the tenant's history id (DESIGN §2) that the local
// database's data and cursor belong to: the shard's sync_meta.history,
// then the one of the last caught_up that carried one; "" when unknown.
func (c *Client) History() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.historyLocked()
}

// historyLocked is History with c.mu held.
func (c *Client) historyLocked() (string, error) {
	if c.data == nil {
		return "", ErrNotLoggedIn
	}
	var h string
	err := c.data.QueryRow(`SELECT value FROM sync_meta WHERE key = 'history'`).Scan(&h)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read the history: %w", err)
	}
	return h, nil
}

// Query runs a query on the local database over a read-only connection: a
// statement that would write fails and changes nothing. It works in every
// state but wiped and logged out.
func (c *Client) Query(ctx context.Context, query string, args ...any) ([]map[string]any, error) {
	db, err := c.readOnly()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return scanMaps(rows)
}

// readOnly returns Query's read-only handle of data.db, opening it on
// first use.
func (c *Client) readOnly() (*sql.DB, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data == nil || c.st.State == StateLoggedOut {
		return nil, ErrNotLoggedIn
	}
	if c.ro == nil {
		db, err := openReadOnly(c.path("data.db"))
		if err != nil {
			return nil, err
		}
		c.ro = db
	}
	return c.ro, nil
}

// readOnlyDriver is the database/sql driver of Query's connections: SQLite
// whose connections refuse to attach another database file (ATTACH,
// VACUUM INTO), the one way a read-only connection could still write a
// file (a copy of the patients' data that a logout would not delete).
const readOnlyDriver = "therasync-device-readonly"

func init() {
	d := &sqlite.Driver{}
	d.RegisterConnectionHook(func(conn sqlite.ExecQuerierContext, _ string) error {
		r, ok := conn.(sqlite.AuthorizerRegisterer)
		if !ok {
			return fmt.Errorf("read-only connection: the sqlite driver has no authorizer")
		}
		return r.RegisterAuthorizer(func(action sqlite.AuthorizerActionCode, _, _, _, _ string) sqlite.AuthorizerReturnCode {
			if action == sqlite.AuthAttach {
				return sqlite.AuthorizerDeny
			}
			return sqlite.AuthorizerOK
		})
	})
	sql.Register(readOnlyDriver, d)
}

// openReadOnly opens the SQLite database at path read-only twice over: the
// file is opened read-only (mode=ro), so even a query that turns
// query_only off cannot write it, and query_only refuses writes before
// they reach the file.
func openReadOnly(path string) (*sql.DB, error) {
	db, err := sql.Open(readOnlyDriver, "file:"+path+"?mode=ro&_pragma=query_only(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("open %s read-only: %w", path, err)
	}
	return db, nil
}

// scanMaps reads every row into a column → value map, text as strings, and
// closes rows.
func scanMaps(rows *sql.Rows) ([]map[string]any, error) {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]any, len(cols))
		for i, col := range cols {
			if b, ok := vals[i].([]byte); ok {
				vals[i] = string(b)
			}
			m[col] = vals[i]
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// readLocal returns a local row's fields, nil when there is none.
func readLocal(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, entity, id string) (map[string]any, error) {
	if _, ok := model.Lookup(entity); !ok {
		return nil, fmt.Errorf("unknown entity %q", entity)
	}
	rows, err := db.QueryContext(ctx, `SELECT * FROM "`+entity+`" WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	found, err := scanMaps(rows)
	if err != nil || len(found) == 0 {
		return nil, err
	}
	out := map[string]any{}
	e, _ := model.Lookup(entity)
	for col, v := range found[0] {
		if col == "id" {
			continue
		}
		f, _ := e.Field(col) // a column the model does not know reads as a string
		if out[col], err = fromLocal(f, v); err != nil {
			return nil, fmt.Errorf("read %s %s: %s: %w", entity, id, col, err)
		}
	}
	return out, nil
}

// fromLocal turns a local column value into its JSON form.
func fromLocal(f model.Field, v any) (any, error) {
	switch v := v.(type) {
	case int64:
		if f.Kind == model.Bool {
			return v != 0, nil
		}
		return v, nil
	case string:
		if f.Kind == model.StringList {
			var l []any
			if err := json.Unmarshal([]byte(v), &l); err != nil {
				return nil, fmt.Errorf("not a JSON list: %w", err)
			}
			return l, nil
		}
	}
	return v, nil
}

// applyLocal upserts or deletes a local row, writing only the columns the
// local table has.
func applyLocal(ctx context.Context, tx *sql.Tx, entity string, op model.Op, id string, fields map[string]any) error {
	e, ok := model.Lookup(entity)
	if !ok {
		return fmt.Errorf("unknown entity %q", entity)
	}
	if op == model.OpDelete {
		_, err := tx.ExecContext(ctx, `DELETE FROM "`+entity+`" WHERE id = ?`, id)
		return err
	}
	cols := []string{`"id"`}
	args := []any{id}
	var sets []string
	have, err := localColumns(ctx, tx, entity)
	if err != nil {
		return err
	}
	for name, v := range fields {
		f, ok := e.Field(name)
		if !ok || !have[name] {
			continue // a field this device does not keep
		}
		lv, err := toLocal(f, v)
		if err != nil {
			return fmt.Errorf("%s %s: %s: %w", entity, id, name, err)
		}
		cols = append(cols, `"`+name+`"`)
		args = append(args, lv)
		sets = append(sets, `"`+name+`"=excluded."`+name+`"`)
	}
	q := `INSERT INTO "` + entity + `" (` + strings.Join(cols, ",") + `) VALUES (?` + strings.Repeat(",?", len(cols)-1) + `) ON CONFLICT(id) DO `
	if len(sets) == 0 {
		q += `NOTHING`
	} else {
		q += `UPDATE SET ` + strings.Join(sets, ",")
	}
	_, err = tx.ExecContext(ctx, q, args...)
	return err
}

// localColumns returns the names of the local table's columns.
func localColumns(ctx context.Context, tx *sql.Tx, entity string) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, entity)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("columns of %s: %w", entity, err)
		}
		out[n] = true
	}
	return out, rows.Err()
}

// toLocal turns a JSON field value into its local column value.
func toLocal(f model.Field, v any) (any, error) {
	switch v := v.(type) {
	case float64:
		return int64(v), nil
	case bool:
		if v {
			return int64(1), nil
		}
		return int64(0), nil
	case []any, []string:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	}
	return v, nil
}
