package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// CheckInDay is what a check-in terminal shows for one date: the rows of
// the courses held that day and their participants, as far as the viewer
// sees them (model's access policy), read in one snapshot.
type CheckInDay struct {
	// Seq is the tenant's seq the rows are read at, History the log's
	// history id then (the page follows the stream from both).
	Seq     int64
	History string
	// Courses are the viewer's courses held on the date's weekday, by id.
	Courses map[string]map[string]any
	// Members are every course membership the viewer sees, by id: the
	// regulars of Courses and the people a Springer search finds.
	Members map[string]map[string]any
	// Attendances are the check-ins of the date to Courses, by id.
	Attendances map[string]map[string]any
	// Names are first_name and last_name of the profiles of Members, by id.
	Names map[string]map[string]any
}

// CheckInDay reads the check-in rows of date (YYYY-MM-DD) that v sees:
// which rows and fields, the access policy decides (model.NewScope,
// Scope.Sees, model.Fields), over the tenant's link fields when it needs
// them for v.
func (t *Tenant) CheckInDay(ctx context.Context, v model.Viewer, date string) (CheckInDay, error) {
	day, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", &model.ValidationError{Field: "date", Reason: "want YYYY-MM-DD"})
	}
	weekday := int64(day.Weekday()+6)%7 + 1 // ISO: Monday 1 … Sunday 7
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", err)
	}
	defer tx.Rollback()
	out := CheckInDay{}
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), (SELECT history FROM log_meta) FROM changes`).Scan(&out.Seq, &out.History); err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", err)
	}
	scope, err := scopeOf(ctx, tx, v, model.Courses, model.CourseMembers, model.Attendances, model.Profiles)
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", err)
	}
	read := func(entity, where string, args ...any) (map[string]map[string]any, error) {
		rows, err := queryRows(ctx, tx, entity, where, args...)
		return visibleRows(scope, entity, rows), err
	}
	if out.Courses, err = read(model.Courses, `WHERE weekday = ?`, weekday); err != nil {
		return CheckInDay{}, err
	}
	members, err := read(model.CourseMembers, ``)
	if err != nil {
		return CheckInDay{}, err
	}
	profiles, err := read(model.Profiles, `WHERE id IN (SELECT profile_id FROM course_members)`)
	if err != nil {
		return CheckInDay{}, err
	}
	// A membership comes with its participant, if the viewer sees them.
	out.Members, out.Names = map[string]map[string]any{}, map[string]map[string]any{}
	for id, row := range members {
		p, _ := row["profile_id"].(string)
		if p == "" || profiles[p] == nil && !scope.Sees(model.Profiles, p, nil) {
			continue
		}
		out.Members[id] = row
		if profiles[p] != nil {
			out.Names[p] = names(profiles[p])
		}
	}
	atts, err := read(model.Attendances, `WHERE date = ?`, date)
	if err != nil {
		return CheckInDay{}, err
	}
	out.Attendances = map[string]map[string]any{}
	for id, row := range atts {
		if c, _ := row["course_id"].(string); out.Courses[c] != nil {
			out.Attendances[id] = row
		}
	}
	return out, nil
}

// scopeOf returns what v sees of the tenant as tx reads it, for rows of
// entities: the access policy's scope, over every row's link fields when
// the policy needs them to decide on those entities for v.
func scopeOf(ctx context.Context, tx *sql.Tx, v model.Viewer, entities ...string) (*model.Scope, error) {
	scope := model.NewScope(v, model.NewLinks())
	for _, e := range entities {
		if !scope.RuleFor(e).All {
			links, _, err := readLinks(ctx, tx)
			if err != nil {
				return nil, err
			}
			return model.NewScope(v, links), nil
		}
	}
	return scope, nil
}

// visibleRows returns the rows of entity that the scope's viewer sees,
// with the fields it sees (model.Fields).
func visibleRows(scope *model.Scope, entity string, rows map[string]map[string]any) map[string]map[string]any {
	fields := model.Fields(scope.Viewer.Role, entity)
	out := make(map[string]map[string]any, len(rows))
	for id, row := range rows {
		if !scope.Sees(entity, id, row) {
			continue
		}
		seen := make(map[string]any, len(fields))
		for _, f := range fields {
			seen[f.Name] = row[f.Name]
		}
		out[id] = seen
	}
	return out
}

// names returns the first and last name of a profile as the check-in page
// shows them ("" for none), of those fields the viewer sees.
func names(profile map[string]any) map[string]any {
	out := make(map[string]any, 2)
	for _, f := range []string{"first_name", "last_name"} {
		if v, ok := profile[f]; ok {
			out[f], _ = v.(string)
		}
	}
	return out
}
