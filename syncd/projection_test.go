package syncd_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/syncd"
)

// untilSeq reads frames until caught_up at seq or later and returns the
// changes seen on the way and the caught_up seq.
func untilSeq(tb testing.TB, ws *websocket.Conn, seq int64) ([]map[string]any, int64) {
	tb.Helper()
	var seen []map[string]any
	for {
		f := next(tb, ws, 3*time.Second)
		seen = append(seen, f.Changes...)
		if f.Type == "caught_up" && f.Seq >= seq {
			return seen, f.Seq
		}
		if f.Type != "changes" && f.Type != "caught_up" {
			tb.Fatalf("unexpected frame %+v", f)
		}
	}
}

// TestEmptiedChangesAreDropped: a change of which a viewer may see no
// field (a session's protocol for a secretary, an account's email for a
// member) reaches that viewer's devices not at all, neither live nor in a
// catch-up, while their cursors still move on with caught_up; a change
// that creates a row is sent even when the viewer sees none of its fields.
func TestEmptiedChangesAreDropped(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	devices := map[string]string{"admin": "a1", "secretary": "s1", "member": "m1"}
	tokens := map[string]string{}
	live := map[string]*websocket.Conn{}
	for role, acc := range devices {
		tokens[role] = e.token(t, acc, role+"-phone")
		live[role], _, _ = dial(t, e.URL, "/v1/device/sync?cursor=0", tokens[role])
		untilSeq(t, live[role], e.seq(t))
	}
	for i, tt := range []struct {
		name, change string
		// get says, by role, what the device receives: the change's fields
		// as JSON, or "" for nothing.
		get map[string]string
	}{
		{"protocol of an existing session",
			`{"entity":"sessions","op":"upsert","id":"ses1","fields":{"protocol":"Verlauf gut"}}`,
			map[string]string{"admin": `{"protocol":"Verlauf gut"}`, "secretary": "", "member": `{"protocol":"Verlauf gut"}`}},
		{"status of an existing session",
			`{"entity":"sessions","op":"upsert","id":"ses1","fields":{"status":"cancelled"}}`,
			map[string]string{"admin": `{"status":"cancelled"}`, "secretary": `{"status":"cancelled"}`, "member": `{"status":"cancelled"}`}},
		{"protocol and status of an existing session",
			`{"entity":"sessions","op":"upsert","id":"ses1","fields":{"protocol":"neu","status":"done"}}`,
			map[string]string{"admin": `{"protocol":"neu","status":"done"}`, "secretary": `{"status":"done"}`, "member": `{"protocol":"neu","status":"done"}`}},
		{"new session with only a protocol",
			`{"entity":"sessions","op":"upsert","id":"ses-p","fields":{"protocol":"nur Text"}}`,
			map[string]string{"admin": `{"protocol":"nur Text"}`, "secretary": `{}`, "member": ""}},
		{"email of an existing account",
			`{"entity":"accounts","op":"upsert","id":"a2","fields":{"email":"a2@x.de"}}`,
			map[string]string{"admin": `{"email":"a2@x.de"}`, "secretary": `{"email":"a2@x.de"}`, "member": ""}},
		{"new account with only an email (a member by default)",
			`{"entity":"accounts","op":"upsert","id":"acc-new","fields":{"email":"neu@x.de"}}`,
			map[string]string{"admin": `{"email":"neu@x.de","role":"member"}`, "secretary": `{"email":"neu@x.de","role":"member"}`, "member": `{"role":"member"}`}},
		{"protocol of a session deleted and made again",
			`{"entity":"sessions","op":"delete","id":"ses-p"},{"entity":"sessions","op":"upsert","id":"ses-p","fields":{"protocol":"wieder"}}`,
			map[string]string{"admin": `{"protocol":"wieder"}`, "secretary": `{}`, "member": ""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.seq(t)
			seq := e.push(t, fmt.Sprint("b", i), "["+tt.change+"]")
			check := func(how, role string, got []map[string]any, caught int64) {
				t.Helper()
				if caught != seq {
					t.Errorf("%s %s: caught_up %d; want %d", how, role, caught, seq)
				}
				var upserts []string
				for _, c := range got {
					if c["op"] == "upsert" {
						f, _ := c["fields"].(map[string]any)
						upserts = append(upserts, mustJSONString(t, f))
					}
				}
				switch want := tt.get[role]; {
				case want == "" && len(upserts) > 0:
					t.Errorf("%s %s got %v; want nothing", how, role, got)
				case want != "" && (len(upserts) != 1 || upserts[0] != want):
					t.Errorf("%s %s got upserts %v; want one with fields %s", how, role, upserts, want)
				}
			}
			for role, ws := range live {
				got, caught := untilSeq(t, ws, seq)
				check("live", role, got, caught)
			}
			for role := range devices {
				ws, _, _ := dial(t, e.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", before), tokens[role])
				got, caught := untilSeq(t, ws, seq)
				check("catch-up", role, got, caught)
				ws.Close()
			}
		})
	}
}

// mustJSONString encodes fields as JSON (keys sorted), {} for none.
func mustJSONString(tb testing.TB, fields map[string]any) string {
	tb.Helper()
	if fields == nil {
		return "{}"
	}
	b, err := json.Marshal(fields)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
