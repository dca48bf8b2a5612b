package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/therasync/therasync/model"
)

// This file turns a validated change into what the writer executes (column
// values, an upsert statement) and logs (its fields as JSON).

// encoded is a change turned into what the writer executes and logs.
type encoded struct {
	names  []string // the given fields, sorted
	args   []any    // the row id, then the column value of each name
	fields []byte   // the fields as logged (JSON); nil for a delete
}

// encodeChange converts a validated change into column values and its log
// form.
func encodeChange(index int, c model.Change) (encoded, error) {
	e, ok := model.Lookup(c.Entity)
	if !ok {
		return encoded{}, &model.ValidationError{Index: index, Reason: fmt.Sprintf("unknown entity %q", c.Entity)}
	}
	if c.Op != model.OpUpsert {
		return encoded{args: []any{c.ID}}, nil
	}
	enc := encoded{names: make([]string, 0, len(c.Fields)), args: make([]any, 1, len(c.Fields)+1)}
	enc.args[0] = c.ID
	for k := range c.Fields {
		enc.names = append(enc.names, k)
	}
	sort.Strings(enc.names)
	for _, n := range enc.names {
		f, ok := e.Field(n)
		if !ok {
			return encoded{}, &model.ValidationError{Index: index, Entity: e.Name, Field: n, Reason: "unknown field"}
		}
		v, err := toColumn(f, c.Fields[n])
		if err != nil {
			return encoded{}, fmt.Errorf("encode %s.%s: %w", e.Name, n, err)
		}
		enc.args = append(enc.args, v)
	}
	var err error
	if enc.fields, err = json.Marshal(c.Fields); err != nil {
		return encoded{}, fmt.Errorf("encode %s/%s: %w", e.Name, c.ID, err)
	}
	return enc, nil
}

func upsertQuery(entity string, names []string) (name, query string) {
	key := "up:" + entity + ":" + strings.Join(names, ",")
	var q strings.Builder
	q.WriteString(`INSERT INTO ` + quote(entity) + ` ("id"`)
	for _, n := range names {
		q.WriteString("," + quote(n))
	}
	q.WriteString(`) VALUES (?` + strings.Repeat(",?", len(names)) + `) ON CONFLICT("id") DO `)
	if len(names) == 0 {
		q.WriteString(`NOTHING`)
	} else {
		q.WriteString(`UPDATE SET `)
		for i, n := range names {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(quote(n) + `=excluded.` + quote(n))
		}
	}
	return key, q.String()
}
