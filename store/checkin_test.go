package store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// seedCourses makes courses of two practices: c1 (Mondays, therapist m1,
// capacity 3, regulars p1 and p2), c2 (Mondays, therapist m2, regulars p3
// with no units left in this membership and p4), c3 (Tuesdays, practice
// pr2, p3 with units left), c4 (Sundays, p2), c5 (Mondays, therapist m1,
// p6 with no units left), plus p5 in no course.
func seedCourses(tb testing.TB, tn *store.Tenant) {
	tb.Helper()
	mustApply(tb, tn, "courses", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"role":"secretary","app_enabled":true}},
		{"entity":"courses","op":"upsert","id":"c1","fields":{"practice_id":"pr1","therapist_id":"m1","title":"Rücken","weekday":1,"start_time":"09:00","duration_min":45,"capacity":3}},
		{"entity":"courses","op":"upsert","id":"c2","fields":{"practice_id":"pr1","therapist_id":"m2","title":"Herz","weekday":1,"start_time":"10:00","duration_min":45}},
		{"entity":"courses","op":"upsert","id":"c3","fields":{"practice_id":"pr2","therapist_id":"m2","title":"Wasser","weekday":2,"start_time":"10:00","duration_min":45}},
		{"entity":"course_members","op":"upsert","id":"cm1","fields":{"course_id":"c1","profile_id":"p1","units_total":10,"units_used":4}},
		{"entity":"course_members","op":"upsert","id":"cm2","fields":{"course_id":"c1","profile_id":"p2","units_total":10,"units_used":0}},
		{"entity":"course_members","op":"upsert","id":"cm3a","fields":{"course_id":"c2","profile_id":"p3","units_total":5,"units_used":5}},
		{"entity":"course_members","op":"upsert","id":"cm3b","fields":{"course_id":"c3","profile_id":"p3","units_total":5,"units_used":1}},
		{"entity":"course_members","op":"upsert","id":"cm4","fields":{"course_id":"c2","profile_id":"p4","units_total":5,"units_used":0}},
		{"entity":"courses","op":"upsert","id":"c4","fields":{"practice_id":"pr1","therapist_id":"m2","title":"Sonntag","weekday":7,"start_time":"10:00","duration_min":45}},
		{"entity":"courses","op":"upsert","id":"c5","fields":{"practice_id":"pr1","therapist_id":"m1","title":"Knie","weekday":1,"start_time":"11:00","duration_min":45}},
		{"entity":"course_members","op":"upsert","id":"cm5","fields":{"course_id":"c4","profile_id":"p2","units_total":10,"units_used":0}},
		{"entity":"course_members","op":"upsert","id":"cm6","fields":{"course_id":"c5","profile_id":"p6","units_total":2,"units_used":2}}
	]`)
}

// signature is a real 1×1 PNG, base64: a valid check-in signature.
var signature = pngBase64(1, 1)

// pngBase64 returns a w×h PNG, base64 (standard, padded).
func pngBase64(w, h int) string {
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func checkIn(id, course, profile, date string, springer bool) string {
	return signedCheckIn(id, course, profile, date, springer, signature)
}

func signedCheckIn(id, course, profile, date string, springer bool, sig string) string {
	return fmt.Sprintf(`{"entity":"attendances","op":"upsert","id":%q,"fields":{"course_id":%q,"profile_id":%q,"date":%q,"springer":%t,"signature":%q}}`,
		uid(id), course, profile, date, springer, sig)
}

// bigPNG is a valid PNG of more than 256 KiB: noise does not compress.
func bigPNG(tb testing.TB) string {
	tb.Helper()
	img := image.NewGray(image.Rect(0, 0, 600, 600))
	x := uint32(1)
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = byte(x)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	if b.Len() <= 256<<10 {
		tb.Fatalf("big PNG is only %d bytes", b.Len())
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// TestCheckInRules: DESIGN §8 on attendances written by devices, one push
// after another on one tenant.
func TestCheckInRules(t *testing.T) {
	// Monday 2026-11-30, 00:30 in Berlin (the tenant's default zone), still
	// the 29th in UTC: the dates are the tenant's.
	now := time.Date(2026, 11, 29, 23, 30, 0, 0, time.UTC)
	_, tn, _ := newTenant(t, func() time.Time { return now })
	ctx := context.Background()
	seedCourses(t, tn)
	m1 := model.Viewer{ID: "m1", Role: model.RoleMember}
	s1 := model.Viewer{ID: "s1", Role: model.RoleSecretary}
	const day = "2026-11-23"
	steps := []struct {
		name   string
		viewer model.Viewer
		change string
		want   error  // nil: accepted
		units  string // the membership whose units_used went up, if accepted
	}{
		{"regular checks in", m1, checkIn("a1", "c1", "p1", day, false), nil, "cm1"},
		{"the same participant again", m1, checkIn("a2", "c1", "p1", day, false), model.ErrAlreadyCheckedIn, ""},
		{"the same participant again, by another device", s1, checkIn("a3", "c1", "p1", day, false), model.ErrAlreadyCheckedIn, ""},
		{"the same participant the next week", s1, checkIn("a4", "c1", "p1", "2026-11-30", false), nil, "cm1"},
		{"a non-member without springer", s1, checkIn("a5", "c1", "p4", day, false), model.ErrInvalid, ""},
		{"a regular as Springer of the own course", s1, checkIn("a6", "c1", "p2", day, true), model.ErrInvalid, ""},
		{"a Springer in no course at all", s1, checkIn("a7", "c1", "p5", day, true), model.ErrInvalid, ""},
		{"a Springer: the membership with units left counts", s1, checkIn("a8", "c1", "p3", day, true), nil, "cm3b"},
		{"a second Springer past capacity (2 regulars + 1 Springer = 3)", s1, checkIn("a9", "c1", "p4", day, true), model.ErrCourseFull, ""},
		{"a Springer in a course without capacity", s1, checkIn("a10", "c2", "p1", day, true), nil, "cm1"},
		{"a member checks in at another's course", m1, checkIn("a11", "c2", "p4", day, false), model.ErrForbidden, ""},
		{"a check-in without date", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a12") + `","fields":{"course_id":"c1","profile_id":"p2"}}`, model.ErrInvalid, ""},
		{"a check-in at an unknown course", s1, checkIn("a13", "nope", "p2", day, false), model.ErrInvalid, ""},
		{"a device sets another device id", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a14") + `","fields":{"course_id":"c1","profile_id":"p2","date":"2026-11-23","device_id":"other"}}`, model.ErrInvalid, ""},
		{"a check-in moved onto an existing one", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a4") + `","fields":{"date":"2026-11-23"}}`, model.ErrAlreadyCheckedIn, ""},
		{"a correction of a check-in counts nothing", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a1") + `","fields":{"signature":"` + pngBase64(2, 1) + `"}}`, nil, ""},
		{"a correction to a non-PNG signature", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a1") + `","fields":{"signature":"AAAA"}}`, model.ErrInvalid, ""},
		{"a signature missing", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a20") + `","fields":{"course_id":"c1","profile_id":"p2","date":"2026-11-23"}}`, model.ErrInvalid, ""},
		{"a signature empty", s1, signedCheckIn("a21", "c1", "p2", day, false, ""), model.ErrInvalid, ""},
		{"a signature not base64", s1, signedCheckIn("a22", "c1", "p2", day, false, "not base64!"), model.ErrInvalid, ""},
		{"a signature not a PNG (a JPEG's first bytes)", s1, signedCheckIn("a23", "c1", "p2", day, false, base64.StdEncoding.EncodeToString([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"))), model.ErrInvalid, ""},
		{"a signature with the PNG magic only", s1, signedCheckIn("a24", "c1", "p2", day, false, "iVBORw0KGgo="), model.ErrInvalid, ""},
		{"a signature over 256 KiB", s1, signedCheckIn("a25", "c1", "p2", day, false, bigPNG(t)), model.ErrInvalid, ""},
		{"a signature far over 256 KiB, not decoded", s1, signedCheckIn("a26", "c1", "p2", day, false, strings.Repeat("A", 1<<20)), model.ErrInvalid, ""},
		{"the wrong weekday (a Tuesday for a Monday course)", s1, checkIn("a28", "c1", "p2", "2026-11-24", false), model.ErrInvalid, ""},
		{"a date in the future (next Monday)", s1, checkIn("a29", "c1", "p2", "2026-12-07", false), model.ErrInvalid, ""},
		{"8 days late (a Sunday course, 2026-11-22)", s1, checkIn("a30", "c4", "p2", "2026-11-22", false), model.ErrInvalid, ""},
		{"7 days late is accepted (2026-11-23)", s1, checkIn("a31", "c1", "p2", day, false), nil, "cm2"},
		{"today in the tenant's zone, tomorrow in UTC", s1, checkIn("a32", "c1", "p2", "2026-11-30", false), nil, "cm2"},
		{"a regular with no units left", s1, checkIn("a33", "c5", "p6", "2026-11-30", false), model.ErrNoUnitsLeft, ""},
		{"a member's regular with no units left", m1, checkIn("a34", "c5", "p6", day, false), model.ErrNoUnitsLeft, ""},
		{"a Springer whose own membership has no units left", s1, checkIn("a35", "c2", "p6", "2026-11-30", true), model.ErrNoUnitsLeft, ""},
		{"a moved check-in needs the course's weekday too", s1, `{"entity":"attendances","op":"upsert","id":"` + uid("a31") + `","fields":{"date":"2026-11-24"}}`, model.ErrInvalid, ""},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			rowsBefore, _, _ := tn.Changes(ctx, 0, 100000)
			units := map[string]int64{}
			for _, id := range []string{"cm1", "cm2", "cm3a", "cm3b", "cm4", "cm5", "cm6"} {
				row, _ := tn.Row(ctx, model.CourseMembers, id)
				units[id], _ = row["units_used"].(int64)
			}
			res := devicePush(t, tn, st.viewer, "tablet-"+st.viewer.ID, []string{fmt.Sprint("mut-", i)}, "["+st.change+"]")
			err := res.Refused[0]
			if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
				t.Fatalf("check-in = %v; want %v", err, st.want)
			}
			rowsAfter, _, _ := tn.Changes(ctx, 0, 100000)
			if st.want != nil {
				if len(rowsAfter) != len(rowsBefore) || len(res.Changes) != 0 {
					t.Errorf("a refused check-in logged %d changes", len(rowsAfter)-len(rowsBefore))
				}
			}
			for id, n := range units {
				row, _ := tn.Row(ctx, model.CourseMembers, id)
				want := n
				if id == st.units {
					want++
				}
				if got, _ := row["units_used"].(int64); got != want {
					t.Errorf("units_used of %s = %d; want %d", id, got, want)
				}
			}
			if st.units != "" {
				last := res.Changes[len(res.Changes)-1]
				if len(res.Changes) != 2 || last.Entity != model.CourseMembers || last.ID != st.units || last.Seq != res.Seq {
					t.Errorf("logged = %+v; want the attendance, then the units_used of %s", res.Changes, st.units)
				}
			}
		})
	}
	row, err := tn.Row(ctx, model.Attendances, uid("a1"))
	if err != nil || row["device_id"] != "tablet-m1" || row["checked_in_at"] == nil || row["signature"] != pngBase64(2, 1) {
		t.Errorf("attendance a1 = %v, %v; want the device id and check-in time set by the server", row, err)
	}
}

// TestPracticeAttendancesAsGiven: a practice PC's attendances are recorded
// as given, without the device rules.
func TestPracticeAttendancesAsGiven(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	seedCourses(t, tn)
	mustApply(t, tn, "import", "["+checkIn("x1", "c1", "p5", "2026-01-05", false)+"]")
	row, _ := tn.Row(context.Background(), model.CourseMembers, "cm1")
	if row["units_used"] != int64(4) {
		t.Errorf("units_used after a practice import = %v; want 4 (unchanged)", row["units_used"])
	}
}
