// Package model holds Therasync's domain model: the entities of a practice
// group, their fields, and the validation of changes made to them.
package model

import (
	"errors"
	"fmt"
	"sort"
)

// Kind is the type of an entity field on the wire and in the store.
type Kind int

// The field kinds. Each maps to one SQLite column type.
const (
	String     Kind = iota // any JSON string; TEXT
	Int                    // a JSON integer; INTEGER
	Bool                   // true or false; INTEGER 0/1
	StringList             // a JSON array of strings; TEXT holding JSON
	Timestamp              // an RFC 3339 timestamp; TEXT
	Date                   // a calendar date YYYY-MM-DD; TEXT
	Clock                  // a wall-clock time HH:MM; TEXT
	Enum                   // one of Field.Enum; TEXT
)

// String returns the kind's name as used in error messages.
func (k Kind) String() string {
	switch k {
	case String, Enum:
		return "a string"
	case Int:
		return "an integer"
	case Bool:
		return "a boolean"
	case StringList:
		return "a list of strings"
	case Timestamp:
		return "an RFC 3339 timestamp"
	case Date:
		return "a date (YYYY-MM-DD)"
	case Clock:
		return "a time of day (HH:MM)"
	}
	return "unknown"
}

// Field describes one field of an entity.
type Field struct {
	Name string
	Kind Kind
	// Enum lists the allowed values of an Enum field.
	Enum []string
	// Min and Max bound an Int field; both zero means unbounded.
	Min, Max int64
}

// Entity describes one entity (one table).
type Entity struct {
	// Name is the entity's wire name and its table name.
	Name string
	// Fields are the entity's fields other than id, in column order.
	Fields []Field

	index map[string]int
}

// Field returns the field called name, or false.
func (e *Entity) Field(name string) (Field, bool) {
	i, ok := e.index[name]
	if !ok {
		return Field{}, false
	}
	return e.Fields[i], true
}

// The entity names of DESIGN §3.
const (
	Accounts      = "accounts"
	Practices     = "practices"
	Profiles      = "profiles"
	ProfileShares = "profile_shares"
	Sessions      = "sessions"
	Courses       = "courses"
	CourseMembers = "course_members"
	Attendances   = "attendances"
	Transactions  = "transactions"
)

// The account roles.
const (
	RoleAdmin     = "admin"
	RoleMember    = "member"
	RoleSecretary = "secretary"
)

// ShareAll is the account_id of a profile share that reaches every member,
// present and future.
const ShareAll = "*"

// schema is the fixed entity table of DESIGN §3. It is never modified after
// package initialisation; use Lookup and Entities to read it.
var schema = buildSchema([]*Entity{
	{Name: Accounts, Fields: []Field{
		{Name: "name", Kind: String},
		{Name: "email", Kind: String},
		{Name: "role", Kind: Enum, Enum: []string{RoleAdmin, RoleMember, RoleSecretary}},
		{Name: "app_enabled", Kind: Bool},
		{Name: "practice_ids", Kind: StringList},
	}},
	{Name: Practices, Fields: []Field{
		{Name: "name", Kind: String},
	}},
	{Name: Profiles, Fields: []Field{
		{Name: "owner_id", Kind: String},
		{Name: "first_name", Kind: String},
		{Name: "last_name", Kind: String},
		{Name: "birth_date", Kind: Date},
		{Name: "phone", Kind: String},
		{Name: "email", Kind: String},
		{Name: "address", Kind: String},
		{Name: "insurance", Kind: String},
	}},
	{Name: ProfileShares, Fields: []Field{
		{Name: "profile_id", Kind: String},
		{Name: "account_id", Kind: String},
		{Name: "shared_by", Kind: String},
		{Name: "shared_at", Kind: Timestamp},
	}},
	{Name: Sessions, Fields: []Field{
		{Name: "profile_id", Kind: String},
		{Name: "therapist_id", Kind: String},
		{Name: "practice_id", Kind: String},
		{Name: "starts_at", Kind: Timestamp},
		{Name: "duration_min", Kind: Int, Min: 0, Max: 24 * 60},
		{Name: "price_cents", Kind: Int, Min: 0, Max: 1 << 40},
		{Name: "status", Kind: Enum, Enum: []string{"planned", "done", "cancelled"}},
		{Name: "protocol", Kind: String},
	}},
	{Name: Courses, Fields: []Field{
		{Name: "practice_id", Kind: String},
		{Name: "therapist_id", Kind: String},
		{Name: "title", Kind: String},
		{Name: "weekday", Kind: Int, Min: 1, Max: 7},
		{Name: "start_time", Kind: Clock},
		{Name: "duration_min", Kind: Int, Min: 0, Max: 24 * 60},
		{Name: "capacity", Kind: Int, Min: 0, Max: 10000},
	}},
	{Name: CourseMembers, Fields: []Field{
		{Name: "course_id", Kind: String},
		{Name: "profile_id", Kind: String},
		{Name: "units_total", Kind: Int, Min: 0, Max: 100000},
		{Name: "units_used", Kind: Int, Min: 0, Max: 100000},
	}},
	{Name: Attendances, Fields: []Field{
		{Name: "course_id", Kind: String},
		{Name: "profile_id", Kind: String},
		{Name: "date", Kind: Date},
		{Name: "checked_in_at", Kind: Timestamp},
		{Name: "signature", Kind: String},
		{Name: "springer", Kind: Bool},
		{Name: "device_id", Kind: String},
	}},
	{Name: Transactions, Fields: []Field{
		{Name: "reference", Kind: String},
		{Name: "account_id", Kind: String},
		{Name: "profile_id", Kind: String},
		{Name: "session_id", Kind: String},
		{Name: "kind", Kind: Enum, Enum: []string{"invoice", "payment", "expense"}},
		{Name: "amount_cents", Kind: Int, Min: -(1 << 40), Max: 1 << 40},
		{Name: "status", Kind: Enum, Enum: []string{"unbilled", "billed", "paid"}},
		{Name: "date", Kind: Date},
	}},
})

// buildSchema indexes the entities by name, and each one's fields by name.
func buildSchema(es []*Entity) map[string]*Entity {
	m := make(map[string]*Entity, len(es))
	for _, e := range es {
		e.index = make(map[string]int, len(e.Fields))
		for i, f := range e.Fields {
			e.index[f.Name] = i
		}
		m[e.Name] = e
	}
	return m
}

// Lookup returns the entity called name, or false.
func Lookup(name string) (*Entity, bool) {
	e, ok := schema[name]
	return e, ok
}

// Entities returns every entity, sorted by name.
func Entities() []*Entity {
	out := make([]*Entity, 0, len(schema))
	for _, e := range schema {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Op is the operation of a change.
type Op string

// The change operations. OpErase is a practice's only: it erases a
// profile and every row naming it (DESIGN §2, see Erase); the log records
// it as deletes.
const (
	OpUpsert Op = "upsert"
	OpDelete Op = "delete"
	OpErase  Op = "erase"
)

// Change is one change to one row, as pushed by a practice PC and as read back
// from a tenant's change log (then with Seq set).
type Change struct {
	Seq    int64          `json:"seq,omitempty"`
	Entity string         `json:"entity"`
	Op     Op             `json:"op"`
	ID     string         `json:"id"`
	Fields map[string]any `json:"fields,omitempty"`
}

// ErrInvalid is matched (errors.Is) by every validation error.
var ErrInvalid = errors.New("invalid change")

// ErrForbidden is returned for a change that no writer may make, such as
// changing or deleting a profile share.
var ErrForbidden = errors.New("forbidden")

// ValidationError says which change of a batch is invalid and why.
type ValidationError struct {
	Index  int    // the change's index in its batch
	Entity string // the change's entity, if known
	Field  string // the offending field, if any
	Reason string
}

// Error describes the offending change, entity and field.
func (e *ValidationError) Error() string {
	where := fmt.Sprintf("changes[%d]", e.Index)
	switch {
	case e.Entity != "" && e.Field != "":
		where += " " + e.Entity + "." + e.Field
	case e.Entity != "":
		where += " " + e.Entity
	}
	return where + ": " + e.Reason
}

// Unwrap makes a ValidationError match ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// ErrErased is matched by the refusal of a device's change that would
// bring an erased row back (RefuseErased).
var ErrErased = errors.New("erased")

// ForbiddenError says which change of a batch is forbidden and why.
type ForbiddenError struct {
	Index  int
	Entity string
	Reason string
	// Err, if set, says more of why: ErrErased.
	Err error
}

// Error describes the forbidden change.
func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("changes[%d] %s: %s", e.Index, e.Entity, e.Reason)
}

// Unwrap makes a ForbiddenError match ErrForbidden, and its Err if set.
func (e *ForbiddenError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrForbidden, e.Err}
	}
	return []error{ErrForbidden}
}

// ErrAlreadyCheckedIn is matched by a check-in of a participant who is
// already checked in to that course on that date.
var ErrAlreadyCheckedIn = errors.New("already checked in")

// ErrCourseFull is matched by a Springer check-in to a course whose seats
// are taken.
var ErrCourseFull = errors.New("course is full")

// ErrNoUnitsLeft is matched by a check-in of a participant whose own
// course membership has no units left (units_used = units_total): the
// front desk needs a new prescription.
var ErrNoUnitsLeft = errors.New("no units left")

// ConflictError says which change of a batch conflicts with the rows it
// meets and why; it matches its Err (ErrAlreadyCheckedIn, ErrCourseFull,
// ErrNoUnitsLeft).
type ConflictError struct {
	Index  int
	Entity string
	Err    error
	Reason string
}

// Error describes the conflicting change.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("changes[%d] %s: %s", e.Index, e.Entity, e.Reason)
}

// Unwrap makes a ConflictError match its Err.
func (e *ConflictError) Unwrap() error { return e.Err }
