package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits on what one change may carry.
const (
	MaxIDLen     = 128     // bytes of an id
	MaxStringLen = 1 << 20 // bytes of one string field (a signature PNG in base64 fits)
	MaxListLen   = 1000    // elements of a list field
)

// RawChange is a change as it arrives on the wire, before validation.
type RawChange struct {
	Entity string                     `json:"entity"`
	Op     Op                         `json:"op"`
	ID     string                     `json:"id"`
	Fields map[string]json.RawMessage `json:"fields"`
}

// Validate checks rc against the schema and returns it as a Change with
// typed field values: string, int64, bool, []string, or nil for a JSON null.
// index is the change's position in its batch, used in the error.
func (rc RawChange) Validate(index int) (Change, error) {
	bad := func(entity, field, format string, args ...any) (Change, error) {
		return Change{}, &ValidationError{Index: index, Entity: entity, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if rc.Entity == "" {
		return bad("", "", "entity is missing")
	}
	e, ok := Lookup(rc.Entity)
	if !ok {
		return bad("", "", "unknown entity %q", rc.Entity)
	}
	if err := ValidID(rc.ID); err != nil {
		return bad(e.Name, "id", "%v", err)
	}
	if e.Name == Accounts && rc.ID == ShareAll {
		return bad(e.Name, "id", "%q is reserved for shares to all members", ShareAll)
	}
	c := Change{Entity: e.Name, Op: rc.Op, ID: rc.ID}
	switch rc.Op {
	case OpDelete:
		if len(rc.Fields) > 0 {
			return bad(e.Name, "", "a delete carries no fields")
		}
		return c, nil
	case OpErase:
		if e.Name != Profiles {
			return bad(e.Name, "", "erase is only for profiles (delete other rows)")
		}
		if len(rc.Fields) > 0 {
			return bad(e.Name, "", "an erase carries no fields")
		}
		return c, nil
	case OpUpsert:
	case "":
		return bad(e.Name, "", "op is missing (want upsert or delete)")
	default:
		return bad(e.Name, "", "unknown op %q (want upsert or delete)", rc.Op)
	}
	c.Fields = make(map[string]any, len(rc.Fields))
	for name, raw := range rc.Fields {
		if name == "id" {
			return bad(e.Name, "id", "the id goes in the change, not in its fields")
		}
		f, ok := e.Field(name)
		if !ok {
			return bad(e.Name, name, "unknown field")
		}
		v, err := f.decode(raw)
		if err != nil {
			return bad(e.Name, name, "%v", err)
		}
		c.Fields[name] = v
	}
	return c, nil
}

// ValidID reports whether id can be a row id: 1 to MaxIDLen bytes of UTF-8
// without control characters.
func ValidID(id string) error {
	if id == "" {
		return fmt.Errorf("id is missing")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("id is longer than %d bytes", MaxIDLen)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("id is not valid UTF-8")
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("id contains a control character")
		}
	}
	return nil
}

// IsUUID reports whether id is a UUID in its canonical text form
// (8-4-4-4-12 hex digits, either case): the ids devices give the rows they
// create (DESIGN §3).
func IsUUID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

var jsonNull = []byte("null")

// decode turns a raw JSON value into the field's Go value, or says why not.
func (f Field) decode(raw json.RawMessage) (any, error) {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, jsonNull) {
		return nil, nil
	}
	switch f.Kind {
	case Int:
		return f.decodeInt(raw)
	case Bool:
		return f.decodeBool(raw)
	case StringList:
		return f.decodeList(raw)
	}
	// Every other kind is a JSON string.
	return f.decodeString(raw)
}

// want is the error of a value that is not of the field's kind.
func (f Field) want() error { return fmt.Errorf("must be %s", f.Kind) }

// decodeInt decodes an Int, within the field's bounds if it has any.
func (f Field) decodeInt(raw json.RawMessage) (any, error) {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return nil, f.want()
	}
	if (f.Min != 0 || f.Max != 0) && (n < f.Min || n > f.Max) {
		return nil, fmt.Errorf("must be between %d and %d", f.Min, f.Max)
	}
	return n, nil
}

// decodeBool decodes a Bool.
func (f Field) decodeBool(raw json.RawMessage) (any, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return nil, f.want()
}

// decodeList decodes a StringList: at most MaxListLen ids, never nil.
func (f Field) decodeList(raw json.RawMessage) (any, error) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, f.want()
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, f.want()
	}
	if len(l) > MaxListLen {
		return nil, fmt.Errorf("has more than %d elements", MaxListLen)
	}
	for _, s := range l {
		if err := ValidID(s); err != nil {
			return nil, fmt.Errorf("element: %v", err)
		}
	}
	if l == nil {
		l = []string{}
	}
	return l, nil
}

// decodeString decodes the kinds that are JSON strings: at most
// MaxStringLen bytes, and of the form of a Timestamp, Date, Clock or Enum.
func (f Field) decodeString(raw json.RawMessage) (any, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return nil, f.want()
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, f.want()
	}
	if len(s) > MaxStringLen {
		return nil, fmt.Errorf("is longer than %d bytes", MaxStringLen)
	}
	switch f.Kind {
	case Timestamp:
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return nil, f.want()
		}
	case Date:
		if _, err := time.Parse(time.DateOnly, s); err != nil {
			return nil, f.want()
		}
	case Clock:
		if _, err := time.Parse("15:04", s); err != nil || len(s) != 5 {
			return nil, f.want()
		}
	case Enum:
		for _, v := range f.Enum {
			if s == v {
				return s, nil
			}
		}
		return nil, fmt.Errorf("must be one of %q", f.Enum)
	}
	return s, nil
}

// DecodeFields decodes a JSON object of an entity's fields, as kept in the
// change log, into typed values like Validate does.
func DecodeFields(entity string, data []byte) (map[string]any, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decode %s fields: %w", entity, err)
	}
	c, err := RawChange{Entity: entity, Op: OpUpsert, ID: "x", Fields: raw}.Validate(0)
	if err != nil {
		return nil, fmt.Errorf("decode %s fields: %w", entity, err)
	}
	return c.Fields, nil
}
