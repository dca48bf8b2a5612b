package syncd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/therasync/therasync/syncd"
)

// TestHistory: a cursor of another history is never continued (DESIGN
// §2). A device gets resync; the practice pull answers 409 history_changed
// with the log's history and head; the same history, or none, goes on, and
// caught_up and the pull carry the history.
func TestHistory(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	log, err := e.T.Log(context.Background())
	if err != nil || len(log.History) != 32 {
		t.Fatalf("Log = %+v, %v; want a 128-bit history id", log, err)
	}
	tok := e.token(t, "s1", "tablet")
	for _, tc := range []struct {
		name, query string
		want        string // the frame type
	}{
		{"same history", fmt.Sprintf("cursor=%d&history=%s", log.Seq, log.History), "caught_up"},
		{"no history", fmt.Sprintf("cursor=%d", log.Seq), "caught_up"},
		{"another history", fmt.Sprintf("cursor=%d&history=%s", log.Seq, "00000000000000000000000000000000"), "resync"},
		{"another history from 0", "cursor=0&history=0123", "resync"},
	} {
		t.Run("device "+tc.name, func(t *testing.T) {
			ws, code, _ := dial(t, e.URL, "/v1/device/sync?"+tc.query, tok)
			if ws == nil {
				t.Fatalf("dial = %d", code)
			}
			var f frame
			for f = next(t, ws, 5*time.Second); f.Type == "changes"; f = next(t, ws, 5*time.Second) {
				if tc.want == "resync" {
					t.Fatalf("a cursor of another history got changes")
				}
			}
			if f.Type != tc.want {
				t.Fatalf("frame %s (%s); want %s", f.Type, f.Reason, tc.want)
			}
			ws.Close()
		})
	}
	t.Run("caught_up carries the history", func(t *testing.T) {
		ws, _, _ := dial(t, e.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", log.Seq), tok)
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var f struct{ Type, History string }
		if err := ws.ReadJSON(&f); err != nil || f.Type != "caught_up" || f.History != log.History {
			t.Fatalf("first frame %+v, %v; want caught_up with history %s", f, err, log.History)
		}
	})
	for _, tc := range []struct {
		name, query string
		code        int
		error       string
	}{
		{"same history", "since=0&history=" + log.History, 200, ""},
		{"no history", "since=0", 200, ""},
		{"another history", "since=0&history=abc", 409, "history_changed"},
	} {
		t.Run("pull "+tc.name, func(t *testing.T) {
			code, body := e.do(t, "GET", "/v1/practice/changes?"+tc.query, e.Key, nil)
			var r struct {
				Error   string
				History string
				Seq     int64
				Changes []any
			}
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			if code != tc.code || r.Error != tc.error || r.History != log.History || r.Seq != log.Seq {
				t.Fatalf("pull = %d %s; want %d %q with history %s and seq %d", code, body, tc.code, tc.error, log.History, log.Seq)
			}
			if code != 200 && len(r.Changes) > 0 {
				t.Fatalf("a pull of another history got changes")
			}
		})
	}
}
