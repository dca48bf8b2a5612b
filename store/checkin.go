package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/therasync/therasync/model"
)

// This file holds the check-in rules of DESIGN §8, applied to attendances
// that devices (phones and check-in terminals) write:
//
//   - a check-in names its course, participant and date; the server records
//     the device that made it, and the time unless the device gave one;
//   - a participant is checked in to a course at most once per date;
//   - a regular (springer false) must be a member of the course; a Springer
//     must be a member of another course and not of this one;
//   - the course's capacity counts its regular members (their seats are
//     kept for them) plus that day's Springer; a Springer check-in past it
//     is refused; a course without capacity has no limit;
//   - a new check-in adds one to units_used of the participant's own
//     membership (for a Springer: the membership of another course, the one
//     with units left, in the course's practice, lowest id first), in the
//     same transaction and logged as a change of its own.
//
// Practice PCs are the master of their data: attendances they push are
// recorded as given.

// stampCheckIn returns the check-in change c with the fields the server
// decides: the device that made it and, unless given, when.
func stampCheckIn(index int, c model.Change, before map[string]any, deviceID string, now time.Time) (model.Change, encoded, error) {
	fields := maps.Clone(c.Fields)
	if fields == nil {
		fields = map[string]any{}
	}
	if given, ok := fields["device_id"]; ok {
		if before == nil && given != deviceID || before != nil && given != before["device_id"] {
			return c, encoded{}, &model.ValidationError{Index: index, Entity: model.Attendances, Field: "device_id", Reason: "is set by the server"}
		}
	}
	if before == nil {
		fields["device_id"] = deviceID
		if fields["checked_in_at"] == nil {
			fields["checked_in_at"] = now.UTC().Format(time.RFC3339)
		}
	}
	c.Fields = fields
	enc, err := encodeChange(index, c)
	return c, enc, err
}

// checkIn enforces the check-in rules on attendance id as the device's
// change left it (before is the row before it) and counts a new check-in
// on the participant's membership. It returns the changes it logged.
func (w *writer) checkIn(ctx context.Context, tx *sql.Tx, index int, id string, before map[string]any, origin string, seq *int64, now time.Time) ([]model.Change, error) {
	after, err := w.rows(ctx, tx).Row(model.Attendances, id)
	if err != nil {
		return nil, err
	}
	invalid := func(field, reason string) error {
		return &model.ValidationError{Index: index, Entity: model.Attendances, Field: field, Reason: reason}
	}
	conflict := func(err error, format string, args ...any) error {
		return &model.ConflictError{Index: index, Entity: model.Attendances, Err: err, Reason: fmt.Sprintf(format, args...)}
	}
	course, _ := after["course_id"].(string)
	profile, _ := after["profile_id"].(string)
	date, _ := after["date"].(string)
	for field, v := range map[string]string{"course_id": course, "profile_id": profile, "date": date} {
		if v == "" {
			return nil, invalid(field, "is required for a check-in")
		}
	}
	springer, _ := after["springer"].(bool)
	moved := before == nil || before["course_id"] != course || before["profile_id"] != profile || before["date"] != date ||
		before["springer"] != after["springer"]
	if !moved {
		return nil, nil
	}
	var (
		practice sql.NullString
		capacity sql.NullInt64
	)
	err = w.scan(ctx, tx, "checkin:course", `SELECT practice_id, capacity FROM courses WHERE id = ?`, []any{course}, &practice, &capacity)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, invalid("course_id", fmt.Sprintf("no course %q", course))
	}
	if err != nil {
		return nil, fmt.Errorf("check in: look up course: %w", err)
	}
	var n int64
	if err := w.scan(ctx, tx, "checkin:twice", `SELECT count(*) FROM attendances WHERE course_id = ? AND date = ? AND profile_id = ?`,
		[]any{course, date, profile}, &n); err != nil {
		return nil, fmt.Errorf("check in: count check-ins: %w", err)
	}
	if n > 1 {
		return nil, conflict(model.ErrAlreadyCheckedIn, "participant %s is already checked in to course %s on %s", profile, course, date)
	}
	var (
		membership string
		used       sql.NullInt64
	)
	err = w.scan(ctx, tx, "checkin:member", `SELECT id, units_used FROM course_members WHERE course_id = ? AND profile_id = ? ORDER BY id LIMIT 1`,
		[]any{course, profile}, &membership, &used)
	regular := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("check in: look up membership: %w", err)
	}
	switch {
	case springer && regular:
		return nil, invalid("springer", "the participant is a regular of this course")
	case !springer && !regular:
		return nil, invalid("profile_id", "the participant is not a regular of this course: check in as Springer")
	case springer:
		err = w.scan(ctx, tx, "checkin:own", `SELECT m.id, m.units_used FROM course_members m LEFT JOIN courses c ON c.id = m.course_id
			WHERE m.profile_id = ? AND m.course_id <> ?
			ORDER BY coalesce(m.units_used, 0) < coalesce(m.units_total, 0) DESC, c.practice_id IS ? DESC, m.id LIMIT 1`,
			[]any{profile, course, practice}, &membership, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, invalid("profile_id", "a Springer must be a regular of another course")
		}
		if err != nil {
			return nil, fmt.Errorf("check in: look up own membership: %w", err)
		}
		if capacity.Valid {
			var seats int64
			if err := w.scan(ctx, tx, "checkin:seats", `SELECT (SELECT count(*) FROM course_members WHERE course_id = ?)
				+ (SELECT count(*) FROM attendances WHERE course_id = ? AND date = ? AND springer = 1)`,
				[]any{course, course, date}, &seats); err != nil {
				return nil, fmt.Errorf("check in: count seats: %w", err)
			}
			if seats > capacity.Int64 {
				return nil, conflict(model.ErrCourseFull, "course %s is full on %s (capacity %d)", course, date, capacity.Int64)
			}
		}
	}
	if before != nil {
		return nil, nil // a corrected check-in was counted when it was made
	}
	units := model.Change{Entity: model.CourseMembers, Op: model.OpUpsert, ID: membership,
		Fields: map[string]any{"units_used": used.Int64 + 1}}
	enc, err := encodeChange(index, units)
	if err != nil {
		return nil, err
	}
	lc, err := w.applyAndLog(ctx, tx, index, units, enc, origin, seq, now)
	if err != nil || lc == nil {
		return nil, err
	}
	return []model.Change{*lc}, nil
}

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

// queryRows returns the rows of entity matching where (with args), by id.
func queryRows(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, entity, where string, args ...any) (map[string]map[string]any, error) {
	e, _ := model.Lookup(entity)
	rows, err := q.QueryContext(ctx, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", entity, err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var id string
		fields, err := scanFields(e, rows, &id)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", entity, err)
		}
		out[id] = fields
	}
	return out, rows.Err()
}
