package syncd

import (
	"cmp"
	"embed"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// The check-in terminal (DESIGN §8): a page for a tablet at the front desk,
// served from files embedded in the binary, and the one read it needs
// beyond the device API: the courses of a day with their participants.

//go:embed checkin
var checkinFiles embed.FS

// checkinPage serves the page's files under /checkin/. They are always
// revalidated, so a tablet picks up a new version at its next load; the
// page's service worker keeps them for loads while the server is away.
func checkinPage() http.Handler {
	sub, err := fs.Sub(checkinFiles, "checkin")
	if err != nil {
		panic(err) // the embedded directory exists: a build error otherwise
	}
	files := http.StripPrefix("/checkin/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasSuffix(r.URL.Path, "/sw.js") {
			h.Set("Service-Worker-Allowed", "/checkin/")
		}
		files.ServeHTTP(w, r)
	})
}

// checkinView is the answer of GET /v1/device/checkin.
type checkinView struct {
	TenantID  string `json:"tenant_id"`
	AccountID string `json:"account_id"`
	Role      string `json:"role"`
	// Date is the day shown (YYYY-MM-DD), Now the server's time, both in
	// the tenant's time zone TimeZone.
	Date     string `json:"date"`
	Now      string `json:"now"`
	TimeZone string `json:"time_zone"`
	// Seq is the tenant's seq the view was read at: the page follows the
	// live stream from it.
	Seq int64 `json:"seq"`
	// History is the log's history id at Seq: the page sends it with its
	// cursor (DESIGN §2).
	History string `json:"history"`
	// Courses are the day's courses, the running ones first, then the
	// coming ones by start time, then those that are over.
	Courses []checkinCourse `json:"courses"`
	// Participants are everyone with a course membership the account
	// sees: the people a Springer search finds, by last and first name.
	Participants []checkinPerson `json:"participants"`
}

type checkinCourse struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	PracticeID  string `json:"practice_id"`
	TherapistID string `json:"therapist_id"`
	StartTime   string `json:"start_time"`
	DurationMin int64  `json:"duration_min"`
	// Capacity is nil for a course without limit.
	Capacity *int64 `json:"capacity"`
	// Seats are taken by the regulars plus the day's Springer.
	Seats int64 `json:"seats"`
	// State is running, next (the first to come), later or over.
	State    string          `json:"state"`
	Regulars []checkinPerson `json:"regulars"`
	Springer []checkinPerson `json:"springer"`
}

type checkinPerson struct {
	ProfileID string `json:"profile_id"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	// UnitsTotal and UnitsUsed are the membership's units (regulars only).
	UnitsTotal *int64 `json:"units_total,omitempty"`
	UnitsUsed  *int64 `json:"units_used,omitempty"`
	// CheckedInAt is set when the person checked in to the course that day.
	CheckedInAt  string `json:"checked_in_at,omitempty"`
	AttendanceID string `json:"attendance_id,omitempty"`
}

// handleCheckinDay serves GET /v1/device/checkin?date=YYYY-MM-DD (default:
// today in the tenant's time zone): the day's courses the device's account
// sees, with their regulars and who checked in.
func (s *Server) handleCheckinDay(w http.ResponseWriter, r *http.Request, t *store.Tenant, d store.Device, acc store.Account) {
	st, err := t.Settings(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	loc := st.Location()
	now := s.now().In(loc)
	date := r.URL.Query().Get("date")
	if date == "" {
		date = now.Format(time.DateOnly)
	}
	if _, err := time.ParseInLocation(time.DateOnly, date, loc); err != nil {
		s.fail(w, r, badRequest("date: want YYYY-MM-DD, got %q", date))
		return
	}
	day, err := t.CheckInDay(r.Context(), model.Viewer{ID: acc.ID, Role: acc.Role}, date)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newCheckinView(day, acc, t.ID(), date, now, loc))
}

// newCheckinView composes the day view of day for acc: courses with their
// regulars and Springer, in the order the page shows them, and the
// participants a Springer search finds.
func newCheckinView(day store.CheckInDay, acc store.Account, tenant, date string, now time.Time, loc *time.Location) checkinView {
	v := checkinView{TenantID: tenant, AccountID: acc.ID, Role: acc.Role, Date: date, Now: now.Format(time.RFC3339),
		TimeZone: loc.String(), Seq: day.Seq, History: day.History, Courses: []checkinCourse{}, Participants: []checkinPerson{}}
	checkins := checkinsByCourse(day)
	courses := map[string]*checkinCourse{}
	for id, row := range day.Courses {
		courses[id] = newCheckinCourse(id, row)
	}
	v.Participants = addRegulars(day, courses, checkins)
	for course, byProfile := range checkins {
		for profile, a := range byProfile {
			if a["springer"] == true && courses[course] != nil {
				p := dayPerson(day, profile)
				p.CheckedInAt, p.AttendanceID = rowStr(a, "checked_in_at"), rowStr(a, "id")
				courses[course].Springer = append(courses[course].Springer, p)
			}
		}
	}
	day0, _ := time.ParseInLocation(time.DateOnly, date, loc)
	for _, c := range courses {
		slices.SortFunc(c.Regulars, byName)
		slices.SortFunc(c.Springer, byName)
		c.Seats = int64(len(c.Regulars) + len(c.Springer))
		c.State = courseState(c, day0, now, loc)
		v.Courses = append(v.Courses, *c)
	}
	orderCourses(v.Courses)
	slices.SortFunc(v.Participants, byName)
	return v
}

// checkinsByCourse indexes the day's attendances by course, then profile
// (each with its id under "id").
func checkinsByCourse(day store.CheckInDay) map[string]map[string]map[string]any {
	checkins := map[string]map[string]map[string]any{}
	for id, a := range day.Attendances {
		c := rowStr(a, "course_id")
		if checkins[c] == nil {
			checkins[c] = map[string]map[string]any{}
		}
		a["id"] = id
		checkins[c][rowStr(a, "profile_id")] = a
	}
	return checkins
}

// newCheckinCourse is the course row id without its participants.
func newCheckinCourse(id string, row map[string]any) *checkinCourse {
	c := &checkinCourse{ID: id, Title: rowStr(row, "title"), PracticeID: rowStr(row, "practice_id"), TherapistID: rowStr(row, "therapist_id"),
		StartTime: rowStr(row, "start_time"), Capacity: rowInt(row, "capacity"), Regulars: []checkinPerson{}, Springer: []checkinPerson{}}
	if n := rowInt(row, "duration_min"); n != nil {
		c.DurationMin = *n
	}
	return c
}

// addRegulars adds every membership of the day to its course's regulars
// (with their units and check-in) and returns everyone with a membership,
// once each.
func addRegulars(day store.CheckInDay, courses map[string]*checkinCourse, checkins map[string]map[string]map[string]any) []checkinPerson {
	participants := []checkinPerson{}
	seen := map[string]bool{}
	for _, m := range day.Members {
		profile := rowStr(m, "profile_id")
		if !seen[profile] {
			seen[profile] = true
			participants = append(participants, dayPerson(day, profile))
		}
		c := courses[rowStr(m, "course_id")]
		if c == nil {
			continue
		}
		p := dayPerson(day, profile)
		p.UnitsTotal, p.UnitsUsed = rowInt(m, "units_total"), rowInt(m, "units_used")
		if a := checkins[c.ID][profile]; a != nil && a["springer"] != true {
			p.CheckedInAt, p.AttendanceID = rowStr(a, "checked_in_at"), rowStr(a, "id")
		}
		c.Regulars = append(c.Regulars, p)
	}
	return participants
}

// courseState is running, over or later for c held on day0 at now.
func courseState(c *checkinCourse, day0, now time.Time, loc *time.Location) string {
	b := day0
	if hm, err := time.Parse("15:04", c.StartTime); err == nil {
		b = time.Date(day0.Year(), day0.Month(), day0.Day(), hm.Hour(), hm.Minute(), 0, 0, loc)
	}
	switch e := b.Add(time.Duration(c.DurationMin) * time.Minute); {
	case !now.Before(e):
		return "over"
	case !now.Before(b):
		return "running"
	default:
		return "later"
	}
}

// orderCourses sorts courses running first, then coming by start time,
// then over, and marks the first coming one next.
func orderCourses(courses []checkinCourse) {
	rank := map[string]int{"running": 0, "next": 1, "later": 1, "over": 2}
	slices.SortFunc(courses, func(a, b checkinCourse) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(a.StartTime, b.StartTime), cmp.Compare(a.Title, b.Title), cmp.Compare(a.ID, b.ID))
	})
	for i := range courses {
		if courses[i].State == "later" {
			courses[i].State = "next"
			break
		}
	}
}

// dayPerson is profile with its name from the day's names.
func dayPerson(day store.CheckInDay, profile string) checkinPerson {
	n := day.Names[profile]
	first, _ := n["first_name"].(string)
	last, _ := n["last_name"].(string)
	return checkinPerson{ProfileID: profile, FirstName: first, LastName: last}
}

// byName orders people by last name, first name, then id.
func byName(a, b checkinPerson) int {
	return cmp.Or(cmp.Compare(a.LastName, b.LastName), cmp.Compare(a.FirstName, b.FirstName), cmp.Compare(a.ProfileID, b.ProfileID))
}

// rowStr is the string field f of row, "" when it is none.
func rowStr(row map[string]any, f string) string { s, _ := row[f].(string); return s }

// rowInt is the integer field f of row, nil when it is none.
func rowInt(row map[string]any, f string) *int64 {
	if n, ok := row[f].(int64); ok {
		return &n
	}
	return nil
}
