package syncd_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/syncd"
)

type checkinView struct {
	Date     string `json:"date"`
	TimeZone string `json:"time_zone"`
	Seq      int64  `json:"seq"`
	Courses  []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Seats    int64  `json:"seats"`
		Capacity *int64 `json:"capacity"`
		Regulars []struct {
			ProfileID   string `json:"profile_id"`
			FirstName   string `json:"first_name"`
			LastName    string `json:"last_name"`
			UnitsUsed   *int64 `json:"units_used"`
			CheckedInAt string `json:"checked_in_at"`
		} `json:"regulars"`
		Springer []struct {
			ProfileID string `json:"profile_id"`
		} `json:"springer"`
	} `json:"courses"`
	Participants []struct {
		ProfileID string `json:"profile_id"`
	} `json:"participants"`
}

// TestCheckinDay: GET /v1/device/checkin gives the day's courses in the
// tenant's time zone, running first, with what the account sees.
func TestCheckinDay(t *testing.T) {
	// Monday 2026-11-23, 10:15 in Berlin (09:15 UTC).
	now := time.Date(2026, 11, 23, 9, 15, 0, 0, time.UTC)
	e := newTenantEnv(t, syncd.Config{Now: func() time.Time { return now }})
	e.push(t, "courses", `[
		{"entity":"courses","op":"upsert","id":"c-early","fields":{"therapist_id":"m1","title":"Früh","weekday":1,"start_time":"08:00","duration_min":45}},
		{"entity":"courses","op":"upsert","id":"c-now","fields":{"therapist_id":"m2","title":"Jetzt","weekday":1,"start_time":"10:00","duration_min":60,"capacity":5}},
		{"entity":"courses","op":"upsert","id":"c-late","fields":{"therapist_id":"m1","title":"Spät","weekday":1,"start_time":"17:00","duration_min":45}},
		{"entity":"courses","op":"upsert","id":"c-noon","fields":{"therapist_id":"m1","title":"Mittag","weekday":1,"start_time":"12:00","duration_min":45}},
		{"entity":"courses","op":"upsert","id":"c-tue","fields":{"therapist_id":"m2","title":"Dienstag","weekday":2,"start_time":"10:00","duration_min":45}},
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"owner_id":"m2","first_name":"Ben","last_name":"Berg"}},
		{"entity":"profiles","op":"upsert","id":"p3","fields":{"owner_id":"m2","first_name":"Cem","last_name":"Aydin"}},
		{"entity":"course_members","op":"upsert","id":"cm1","fields":{"course_id":"c-now","profile_id":"p2","units_total":10,"units_used":3}},
		{"entity":"course_members","op":"upsert","id":"cm2","fields":{"course_id":"c-now","profile_id":"p3","units_total":10,"units_used":0}},
		{"entity":"course_members","op":"upsert","id":"cm3","fields":{"course_id":"c-late","profile_id":"p1","units_total":10,"units_used":0}},
		{"entity":"course_members","op":"upsert","id":"cm4","fields":{"course_id":"c-tue","profile_id":"p3","units_total":10,"units_used":0}},
		{"entity":"attendances","op":"upsert","id":"at1","fields":{"course_id":"c-now","profile_id":"p2","date":"2026-11-23","checked_in_at":"2026-11-23T09:01:00Z"}},
		{"entity":"attendances","op":"upsert","id":"at2","fields":{"course_id":"c-now","profile_id":"p1","date":"2026-11-23","springer":true}},
		{"entity":"attendances","op":"upsert","id":"at3","fields":{"course_id":"c-now","profile_id":"p3","date":"2026-11-16"}}
	]`)
	get := func(t *testing.T, token, query string) (int, checkinView, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.URL+"/v1/device/checkin"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v checkinView
		var raw json.RawMessage
		json.NewDecoder(resp.Body).Decode(&raw)
		json.Unmarshal(raw, &v)
		return resp.StatusCode, v, string(raw)
	}
	ids := func(v checkinView) string {
		var out []string
		for _, c := range v.Courses {
			out = append(out, c.ID+":"+c.State)
		}
		return strings.Join(out, " ")
	}

	t.Run("secretary sees every course of the day, running first", func(t *testing.T) {
		code, v, raw := get(t, e.token(t, "s1", "tablet"), "")
		if code != 200 || v.Date != "2026-11-23" || v.TimeZone != "Europe/Berlin" || v.Seq != e.seq(t) {
			t.Fatalf("GET checkin = %d %s", code, raw)
		}
		if got, want := ids(v), "c-now:running c-noon:next c-late:later c-early:over"; got != want {
			t.Errorf("courses = %s; want %s", got, want)
		}
		now := v.Courses[0]
		if len(now.Regulars) != 2 || now.Regulars[0].ProfileID != "p3" || now.Regulars[1].ProfileID != "p2" {
			t.Fatalf("regulars of c-now = %+v; want Aydin, Berg (by last name)", now.Regulars)
		}
		if r := now.Regulars[1]; r.CheckedInAt != "2026-11-23T09:01:00Z" || r.UnitsUsed == nil || *r.UnitsUsed != 3 || r.FirstName != "Ben" {
			t.Errorf("Ben = %+v; want checked in, 3 units used", r)
		}
		if now.Regulars[0].CheckedInAt != "" {
			t.Errorf("Cem = %+v; want not checked in today (only last week)", now.Regulars[0])
		}
		if len(now.Springer) != 1 || now.Springer[0].ProfileID != "p1" || now.Seats != 3 || now.Capacity == nil || *now.Capacity != 5 {
			t.Errorf("c-now = %+v; want Springer p1, 3 of 5 seats", now)
		}
		if len(v.Participants) != 3 {
			t.Errorf("participants = %+v; want p1, p2, p3", v.Participants)
		}
	})
	t.Run("member sees only own courses and their participants", func(t *testing.T) {
		code, v, raw := get(t, e.token(t, "m1", "phone"), "")
		if code != 200 {
			t.Fatalf("GET checkin = %d %s", code, raw)
		}
		if got, want := ids(v), "c-noon:next c-late:later c-early:over"; got != want {
			t.Errorf("courses = %s; want %s", got, want)
		}
		if len(v.Participants) != 1 || v.Participants[0].ProfileID != "p1" || strings.Contains(raw, "Berg") {
			t.Errorf("participants = %s; want only p1 (the member's course)", raw)
		}
	})
	t.Run("another date", func(t *testing.T) {
		_, v, _ := get(t, e.token(t, "s1", "tablet-2"), "?date=2026-11-24")
		if got, want := ids(v), "c-tue:next"; got != want {
			t.Errorf("courses on Tuesday = %s; want %s", got, want)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		tok := e.token(t, "s1", "tablet-3")
		if code, _, raw := get(t, tok, "?date=23.11.2026"); code != 400 || !strings.Contains(raw, "bad_request") {
			t.Errorf("bad date = %d %s; want 400 bad_request", code, raw)
		}
		if code, _, raw := get(t, "nope", ""); code != 401 || !strings.Contains(raw, "unauthorized") {
			t.Errorf("bad token = %d %s; want 401 unauthorized", code, raw)
		}
		if _, err := e.T.RevokeDevice(context.Background(), "tablet-3", false, "practice", ""); err != nil {
			t.Fatal(err)
		}
		if code, _, raw := get(t, tok, ""); code != 403 || !strings.Contains(raw, "device_revoked") {
			t.Errorf("revoked = %d %s; want 403 device_revoked", code, raw)
		}
	})
}

// TestBrowserSubprotocolToken: a browser cannot set headers on a
// WebSocket; it offers its token as the subprotocol "bearer.<token>".
func TestBrowserSubprotocolToken(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	url := "ws" + strings.TrimPrefix(e.URL, "http") + "/v1/device/sync?cursor=0"
	tok := e.token(t, "s1", "tablet")
	d := websocket.Dialer{Subprotocols: []string{"therasync", "bearer." + tok}}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial with the token as subprotocol: %v", err)
	}
	defer ws.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "therasync" {
		t.Errorf("chosen subprotocol = %q; want therasync (never the token)", got)
	}
	if f, _ := until(t, ws, "caught_up"); f.Seq != e.seq(t) {
		t.Errorf("caught_up = %d; want %d", f.Seq, e.seq(t))
	}
	d.Subprotocols = []string{"therasync", "bearer.wrong"}
	if _, resp, err := d.Dial(url, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Errorf("dial with a wrong token = %v; want 401", err)
	}
}

// TestCheckinPageServed: the page, its script and its service worker are
// served with a strict content security policy.
func TestCheckinPageServed(t *testing.T) {
	e := newEnv(t, syncd.Config{})
	for _, tc := range []struct{ path, want string }{
		{"/checkin/", "Zugangscode"},
		{"/checkin/app.js", "attendances"},
		{"/checkin/sw.js", "caches"},
		{"/checkin/style.css", ".person"},
	} {
		resp, err := http.Get(e.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), tc.want) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s = %d, CSP %q; want 200 with %q and a CSP", tc.path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"), tc.want)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(e.URL + "/checkin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/checkin/" {
		t.Errorf("GET /checkin = %d → %q; want a redirect to /checkin/", resp.StatusCode, resp.Header.Get("Location"))
	}
}
