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
	// Seq is the tenant's seq the rows are read at.
	Seq int64
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

// CheckInDay reads the check-in rows of date (YYYY-MM-DD) that v sees.
func (t *Tenant) CheckInDay(ctx context.Context, v model.Viewer, date string) (CheckInDay, error) {
	day, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", &model.ValidationError{Field: "date", Reason: "want YYYY-MM-DD"})
	}
	weekday := (int(day.Weekday())+6)%7 + 1 // ISO: Monday 1 … Sunday 7
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", err)
	}
	defer tx.Rollback()
	out := CheckInDay{}
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&out.Seq); err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: %w", err)
	}
	courses, err := queryRows(ctx, tx, model.Courses, ``)
	if err != nil {
		return CheckInDay{}, err
	}
	members, err := queryRows(ctx, tx, model.CourseMembers, ``)
	if err != nil {
		return CheckInDay{}, err
	}
	// The policy decides from link fields; courses and their members are
	// all it needs for these rows.
	links := model.NewLinks()
	for _, entity := range []struct {
		name string
		rows map[string]map[string]any
	}{{model.Courses, courses}, {model.CourseMembers, members}} {
		for id, row := range entity.rows {
			links.Apply(model.Change{Entity: entity.name, Op: model.OpUpsert, ID: id, Fields: row})
		}
	}
	scope := model.NewScope(v, links)
	out.Courses = map[string]map[string]any{}
	for id, row := range courses {
		if n, _ := row["weekday"].(int64); n == int64(weekday) && scope.Sees(model.Courses, id, row) {
			out.Courses[id] = row
		}
	}
	out.Members = map[string]map[string]any{}
	profiles := map[string]bool{}
	for id, row := range members {
		p, _ := row["profile_id"].(string)
		if p != "" && scope.Sees(model.CourseMembers, id, row) && scope.Sees(model.Profiles, p, nil) {
			out.Members[id] = row
			profiles[p] = true
		}
	}
	atts, err := queryRows(ctx, tx, model.Attendances, `WHERE date = ?`, date)
	if err != nil {
		return CheckInDay{}, err
	}
	out.Attendances = map[string]map[string]any{}
	for id, row := range atts {
		c, _ := row["course_id"].(string)
		if out.Courses[c] != nil && scope.Sees(model.Attendances, id, row) {
			out.Attendances[id] = row
		}
	}
	out.Names = map[string]map[string]any{}
	rows, err := tx.QueryContext(ctx, `SELECT id, first_name, last_name FROM profiles WHERE id IN (SELECT profile_id FROM course_members)`)
	if err != nil {
		return CheckInDay{}, fmt.Errorf("check-in day: names: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var first, last sql.NullString
		if err := rows.Scan(&id, &first, &last); err != nil {
			return CheckInDay{}, fmt.Errorf("check-in day: names: %w", err)
		}
		if profiles[id] {
			out.Names[id] = map[string]any{"first_name": first.String, "last_name": last.String}
		}
	}
	return out, rows.Err()
}
