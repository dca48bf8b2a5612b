package model

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"fmt"
	"image/png"
	"maps"
	"slices"
	"time"
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
//   - a check-in carries a signature: a base64 (standard, padded) PNG of
//     at most MaxSignatureBytes decoded, checked when it is made and
//     whenever a device changes it;
//   - its date is a weekday of the course (courses.weekday, ISO 1 Monday …
//     7 Sunday), not after today and at most CheckInMaxLate days before it,
//     both in the tenant's time zone (a tablet's offline queue delivers up
//     to a week late); checked when it is made and when a device moves it;
//   - a new check-in needs a membership with units left (units_used <
//     units_total), else it is refused with ErrNoUnitsLeft: the front desk
//     needs a new prescription;
//   - a new check-in adds one to units_used of the participant's own
//     membership (for a Springer: the membership of another course, the one
//     with units left, in the course's practice, lowest id first), in the
//     same transaction and logged as a change of its own.
//
// Practice PCs are the master of their data: attendances they push are
// recorded as given. The store applies a device's check-in, asks CheckIn
// over its rows and writes what CheckIn returns.

// IsCheckIn reports whether a device's change c is a check-in, to which
// the rules of this file apply: an upsert of an attendance.
func IsCheckIn(c Change) bool { return c.Entity == Attendances && c.Op == OpUpsert }

// StampCheckIn returns check-in c, index being its position in its batch
// and before the attendance's row (nil for a new check-in), with the fields
// the server decides: the device that made it and, unless given, when. A
// device_id given by the device must be its own (for an existing check-in:
// the one recorded), else the check-in is refused (*ValidationError).
func StampCheckIn(index int, c Change, before map[string]any, deviceID string, now time.Time) (Change, error) {
	fields := maps.Clone(c.Fields)
	if fields == nil {
		fields = map[string]any{}
	}
	if given, ok := fields["device_id"]; ok {
		if before == nil && given != deviceID || before != nil && given != before["device_id"] {
			return c, &ValidationError{Index: index, Entity: Attendances, Field: "device_id", Reason: "is set by the server"}
		}
	}
	if before == nil {
		fields["device_id"] = deviceID
		if fields["checked_in_at"] == nil {
			fields["checked_in_at"] = now.UTC().Format(time.RFC3339)
		}
	}
	c.Fields = fields
	return c, nil
}

// CheckInRows reads what the check-in rules decide from. The store answers
// it inside the writing transaction, with the check-in written.
type CheckInRows interface {
	Rows
	// Count returns how many rows of entity have fields equal to every
	// value of match (values typed as a Change's fields).
	Count(entity string, match map[string]any) (int64, error)
}

// MaxSignatureBytes is the largest signature PNG a check-in carries,
// decoded.
const MaxSignatureBytes = 256 << 10

// CheckInMaxLate is how many days before today (tenant time zone) a
// device's check-in may be dated: a tablet's offline queue delivers up to
// a week late.
const CheckInMaxLate = 7

// pngMagic is the signature every PNG file starts with.
var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// CheckIn enforces the check-in rules on attendance id as a device's
// check-in left it (look reads it; before is its row before, nil for a new
// check-in), index being the check-in's position in its batch and now the
// time of the write in the tenant's time zone. It returns the change that
// counts a new check-in on the participant's membership (units_used + 1),
// nil when nothing is counted, or the refusal: a *ValidationError, or a
// *ConflictError matching ErrAlreadyCheckedIn, ErrCourseFull or
// ErrNoUnitsLeft; or look's error.
func CheckIn(index int, id string, before map[string]any, now time.Time, look CheckInRows) (*Change, error) {
	after, err := look.Row(Attendances, id)
	if err != nil {
		return nil, err
	}
	ci := checkIn{index: index, course: checkInField(after, "course_id"), profile: checkInField(after, "profile_id"), date: checkInField(after, "date")}
	ci.springer, _ = after["springer"].(bool)
	for _, req := range [][2]string{{"course_id", ci.course}, {"profile_id", ci.profile}, {"date", ci.date}} {
		if req[1] == "" {
			return nil, ci.invalid(req[0], "is required for a check-in")
		}
	}
	if before == nil || before["signature"] != after["signature"] {
		if err := ci.signature(after["signature"]); err != nil {
			return nil, err
		}
	}
	moved := before == nil || before["course_id"] != ci.course || before["profile_id"] != ci.profile || before["date"] != ci.date ||
		before["springer"] != after["springer"]
	if !moved {
		return nil, nil
	}
	day, err := time.ParseInLocation(time.DateOnly, ci.date, now.Location())
	if err != nil {
		return nil, ci.invalid("date", fmt.Sprintf("want YYYY-MM-DD, got %q", ci.date))
	}
	crs, err := look.Row(Courses, ci.course)
	if err != nil {
		return nil, err
	}
	if crs == nil {
		return nil, ci.invalid("course_id", fmt.Sprintf("no course %q", ci.course))
	}
	if err := ci.when(day, crs, now); err != nil {
		return nil, err
	}
	n, err := look.Count(Attendances, map[string]any{"course_id": ci.course, "date": ci.date, "profile_id": ci.profile})
	if err != nil {
		return nil, err
	}
	if n > 1 {
		return nil, ci.conflict(ErrAlreadyCheckedIn, "participant %s is already checked in to course %s on %s", ci.profile, ci.course, ci.date)
	}
	membership, used, err := ci.membership(crs, before == nil, look)
	if err != nil || before != nil {
		return nil, err // a corrected check-in was counted when it was made
	}
	return &Change{Entity: CourseMembers, Op: OpUpsert, ID: membership, Fields: map[string]any{"units_used": used + 1}}, nil
}

// signature refuses a check-in's signature sig unless it is a base64 PNG
// of at most MaxSignatureBytes.
func (ci checkIn) signature(sig any) error {
	s, _ := sig.(string)
	if s == "" {
		return ci.invalid("signature", "is required for a check-in: the participant signs")
	}
	if base64.StdEncoding.DecodedLen(len(s)) > MaxSignatureBytes+2 {
		return ci.invalid("signature", fmt.Sprintf("exceeds %d KiB", MaxSignatureBytes>>10))
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return ci.invalid("signature", "is not base64")
	}
	if len(raw) > MaxSignatureBytes {
		return ci.invalid("signature", fmt.Sprintf("exceeds %d KiB", MaxSignatureBytes>>10))
	}
	if !bytes.HasPrefix(raw, pngMagic) {
		return ci.invalid("signature", "is not a PNG image")
	}
	if _, err := png.DecodeConfig(bytes.NewReader(raw)); err != nil {
		return ci.invalid("signature", "is not a valid PNG image")
	}
	return nil
}

// when refuses a check-in to course crs on day unless day is the course's
// weekday, not after now's date and at most CheckInMaxLate days before it
// (now in the tenant's time zone).
func (ci checkIn) when(day time.Time, crs map[string]any, now time.Time) error {
	weekday, ok := crs["weekday"].(int64)
	if iso := int64(day.Weekday()+6)%7 + 1; !ok || iso != weekday {
		return ci.invalid("date", fmt.Sprintf("%s is a %s, not a day of course %s", ci.date, day.Weekday(), ci.course))
	}
	today := now.Format(time.DateOnly)
	if ci.date > today {
		return ci.invalid("date", fmt.Sprintf("%s is in the future (today is %s)", ci.date, today))
	}
	if earliest := now.AddDate(0, 0, -CheckInMaxLate).Format(time.DateOnly); ci.date < earliest {
		return ci.invalid("date", fmt.Sprintf("%s is more than %d days ago: a check-in is accepted until %d days late", ci.date, CheckInMaxLate, CheckInMaxLate))
	}
	return nil
}

// noUnits is the refusal of a check-in whose membership has no units
// left, telling the front desk what to do.
func (ci checkIn) noUnits(used, total int64) error {
	return ci.conflict(ErrNoUnitsLeft, "participant %s has no units left (%d of %d used): the front desk needs a new prescription before the next check-in",
		ci.profile, used, total)
}

// checkIn is a check-in as CheckIn judges it.
type checkIn struct {
	index                 int
	course, profile, date string
	springer              bool
}

// invalid is the check-in's ValidationError of field.
func (ci checkIn) invalid(field, reason string) error {
	return &ValidationError{Index: ci.index, Entity: Attendances, Field: field, Reason: reason}
}

// conflict is the check-in's ConflictError, matching err, with its reason.
func (ci checkIn) conflict(err error, format string, args ...any) error {
	return &ConflictError{Index: ci.index, Entity: Attendances, Err: err, Reason: fmt.Sprintf(format, args...)}
}

// membership returns the membership whose units the check-in to course
// crs spends, and its units_used: a regular's of this course (one with
// units left first, then the lowest id), a Springer's of another
// (ownMembership), if the course has a seat left and, when counting, the
// membership a unit left.
func (ci checkIn) membership(crs map[string]any, counting bool, look CheckInRows) (string, int64, error) {
	regulars, err := look.Find(CourseMembers, map[string]string{"course_id": ci.course, "profile_id": ci.profile})
	if err != nil {
		return "", 0, err
	}
	id, regular := lowestID(regulars)
	for other, m := range regulars {
		if unitsLeft(m) && (!unitsLeft(regulars[id]) || other < id) {
			id = other
		}
	}
	switch {
	case ci.springer && regular:
		return "", 0, ci.invalid("springer", "the participant is a regular of this course")
	case !ci.springer && !regular:
		return "", 0, ci.invalid("profile_id", "the participant is not a regular of this course: check in as Springer")
	case !ci.springer:
		return ci.spend(id, regulars[id], counting)
	}
	id, row, err := ownMembership(ci.profile, ci.course, crs["practice_id"], look)
	if err != nil {
		return "", 0, err
	}
	if row == nil {
		return "", 0, ci.invalid("profile_id", "a Springer must be a regular of another course")
	}
	if capacity, ok := crs["capacity"].(int64); ok {
		taken, err := seatsTaken(ci.course, ci.date, look)
		if err != nil {
			return "", 0, err
		}
		if taken > capacity {
			return "", 0, ci.conflict(ErrCourseFull, "course %s is full on %s (capacity %d)", ci.course, ci.date, capacity)
		}
	}
	return ci.spend(id, row, counting)
}

// spend returns membership id (row) and its units_used, refusing it with
// ErrNoUnitsLeft when counting and it has no unit left.
func (ci checkIn) spend(id string, row map[string]any, counting bool) (string, int64, error) {
	used, _ := row["units_used"].(int64)
	if counting && !unitsLeft(row) {
		total, _ := row["units_total"].(int64)
		return "", 0, ci.noUnits(used, total)
	}
	return id, used, nil
}

// unitsLeft reports whether membership m has a unit left: units_used below
// units_total (none without units_total).
func unitsLeft(m map[string]any) bool {
	used, _ := m["units_used"].(int64)
	total, _ := m["units_total"].(int64)
	return used < total
}

// checkInField returns a row's string field, "" when it has none.
func checkInField(row map[string]any, field string) string { s, _ := row[field].(string); return s }

// lowestID returns the lowest id of rows, false when there is none.
func lowestID(rows map[string]map[string]any) (string, bool) {
	if len(rows) == 0 {
		return "", false
	}
	return slices.Min(slices.Collect(maps.Keys(rows))), true
}

// ownMembership returns the membership whose units a Springer of course
// (in practice) spends: of the participant's memberships of other
// courses, one with units left first, then one in the same practice, then
// the lowest id; its id and row, nil when there is none.
func ownMembership(profile, course string, practice any, look Rows) (string, map[string]any, error) {
	rows, err := look.Find(CourseMembers, map[string]string{"profile_id": profile})
	if err != nil {
		return "", nil, err
	}
	type candidate struct {
		id         string
		left, same bool
	}
	var cands []candidate
	for id, m := range rows {
		other, ok := m["course_id"].(string)
		if !ok || other == course {
			continue
		}
		crs, err := look.Row(Courses, other)
		if err != nil {
			return "", nil, err
		}
		cands = append(cands, candidate{id: id, left: unitsLeft(m), same: crs["practice_id"] == practice})
	}
	if len(cands) == 0 {
		return "", nil, nil
	}
	first := func(b bool) int {
		if b {
			return 0
		}
		return 1
	}
	best := slices.MinFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(first(a.left), first(b.left)), cmp.Compare(first(a.same), first(b.same)), cmp.Compare(a.id, b.id))
	})
	return best.id, rows[best.id], nil
}

// seatsTaken counts the seats of course taken on date: its regular members
// plus that day's Springer.
func seatsTaken(course, date string, look CheckInRows) (int64, error) {
	members, err := look.Count(CourseMembers, map[string]any{"course_id": course})
	if err != nil {
		return 0, err
	}
	springer, err := look.Count(Attendances, map[string]any{"course_id": course, "date": date, "springer": true})
	if err != nil {
		return 0, err
	}
	return members + springer, nil
}
