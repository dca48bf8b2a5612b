package store

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/therasync/therasync/model"
)

// quote returns name as an SQL identifier. Names come from the model's fixed
// schema, never from a client.
func quote(name string) string { return `"` + name + `"` }

// columnList returns the entity's field columns, quoted, comma-separated.
func columnList(e *model.Entity) string {
	var b strings.Builder
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quote(f.Name))
	}
	return b.String()
}

// toColumn converts a validated field value to its SQLite value.
func toColumn(f model.Field, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch f.Kind {
	case model.Bool:
		if v.(bool) {
			return int64(1), nil
		}
		return int64(0), nil
	case model.StringList:
		b, err := json.Marshal(v)
		return string(b), err
	}
	return v, nil
}

// fromColumn converts a SQLite value back to the field's Go value.
func fromColumn(f model.Field, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch f.Kind {
	case model.Int:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("column %s: got %T, want integer", f.Name, v)
		}
		return n, nil
	case model.Bool:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("column %s: got %T, want integer", f.Name, v)
		}
		return n != 0, nil
	case model.StringList:
		s, err := asString(v)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		var l []string
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		return l, nil
	}
	s, err := asString(v)
	if err != nil {
		return nil, fmt.Errorf("column %s: %w", f.Name, err)
	}
	return s, nil
}

func asString(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	}
	return "", fmt.Errorf("got %T, want text", v)
}
