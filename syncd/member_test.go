package syncd_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/syncd"
)

type rows map[string]map[string]map[string]any // entity → id → field → value (JSON-normalized)

// applyFrames applies streamed changes to a device's state, as the client
// library does: an upsert merges, a delete removes.
func applyFrames(state rows, cs []map[string]any) {
	for _, c := range cs {
		e, id := c["entity"].(string), c["id"].(string)
		if state[e] == nil {
			state[e] = map[string]map[string]any{}
		}
		if c["op"] == "delete" {
			delete(state[e], id)
			continue
		}
		row := state[e][id]
		if row == nil {
			row = map[string]any{}
			state[e][id] = row
		}
		for k, v := range c["fields"].(map[string]any) {
			row[k] = v
		}
	}
}

// shardRows builds account's shard now and returns its rows in the JSON
// form the stream uses (nulls left out, booleans true/false, lists as lists).
func shardRows(tb testing.TB, e *liveEnv, account string) (rows, int64) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "shard.db")
	m, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: e.T.ID(), Path: e.T.Path()}, account, path, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	out := rows{}
	for _, ent := range model.Entities() {
		fields := model.Fields(m.Role, ent.Name)
		q := `SELECT id`
		for _, f := range fields {
			q += `, "` + f.Name + `"`
		}
		rs, err := db.Query(q + ` FROM "` + ent.Name + `"`)
		if err != nil {
			tb.Fatal(err)
		}
		for rs.Next() {
			var id string
			vals := make([]any, len(fields))
			ptrs := []any{&id}
			for i := range vals {
				ptrs = append(ptrs, &vals[i])
			}
			rs.Scan(ptrs...)
			row := map[string]any{}
			for i, f := range fields {
				switch v := vals[i].(type) {
				case nil:
				case int64:
					if f.Kind == model.Bool {
						row[f.Name] = v != 0
					} else {
						row[f.Name] = float64(v)
					}
				case string:
					if f.Kind == model.StringList {
						var l []any
						json.Unmarshal([]byte(v), &l)
						row[f.Name] = l
					} else {
						row[f.Name] = v
					}
				}
			}
			if out[ent.Name] == nil {
				out[ent.Name] = map[string]map[string]any{}
			}
			out[ent.Name][id] = row
		}
		rs.Close()
	}
	return out, m.Seq
}

// normalize drops null fields and empty tables, so that both sides compare.
func normalize(r rows) rows {
	out := rows{}
	for e, m := range r {
		for id, row := range m {
			clean := map[string]any{}
			for k, v := range row {
				if v != nil {
					clean[k] = v
				}
			}
			if out[e] == nil {
				out[e] = map[string]map[string]any{}
			}
			out[e][id] = clean
		}
	}
	return out
}

// converge reads the stream to caught_up at the tenant's seq and checks the
// device state equals a fresh shard, row by row and field by field; it
// returns that caught_up.
func converge(tb testing.TB, e *liveEnv, ws *websocket.Conn, state rows, account string) frame {
	tb.Helper()
	want, seq := shardRows(tb, e, account)
	var f frame
	for {
		f = next(tb, ws, 3*time.Second)
		if f.Type == "resync" {
			tb.Fatalf("unexpected resync: %s", f.Reason)
		}
		applyFrames(state, f.Changes)
		if f.Type == "caught_up" && f.Seq >= seq {
			break
		}
	}
	if got, w := normalize(state), normalize(want); !reflect.DeepEqual(got, w) {
		for _, ent := range model.Entities() {
			if !reflect.DeepEqual(got[ent.Name], w[ent.Name]) {
				tb.Errorf("%s's %s: stream %v; shard %v", account, ent.Name, got[ent.Name], w[ent.Name])
			}
		}
	}
	return f
}

// TestMemberStream: a member's device that applies its stream holds exactly
// what a fresh shard holds, through growth by shares (to it and to *),
// assignments and courses; a shrink gets resync.
func TestMemberStream(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	e.push(t, "more", `[
		{"entity":"accounts","op":"upsert","id":"m2","fields":{"name":"Lena","role":"member","app_enabled":true,"email":"l@x.de"}},
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"owner_id":"m2","first_name":"Ben"}},
		{"entity":"profiles","op":"upsert","id":"p3","fields":{"owner_id":"m2","first_name":"Clara"}},
		{"entity":"sessions","op":"upsert","id":"ses-p2","fields":{"profile_id":"p2","therapist_id":"m2","protocol":"nur für Lena"}},
		{"entity":"sessions","op":"upsert","id":"ses-p3","fields":{"profile_id":"p3","therapist_id":"m2","protocol":"Clara"}},
		{"entity":"transactions","op":"upsert","id":"tx-p3","fields":{"account_id":"m2","profile_id":"p3","kind":"invoice","amount_cents":100}},
		{"entity":"courses","op":"upsert","id":"crs","fields":{"therapist_id":"m2","title":"Rücken"}},
		{"entity":"course_members","op":"upsert","id":"cm","fields":{"course_id":"crs","profile_id":"p2"}},
		{"entity":"attendances","op":"upsert","id":"att","fields":{"course_id":"crs","profile_id":"p2","date":"2026-11-20"}}
	]`)
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", "phone"))
	state := rows{}
	converge(t, e, ws, state, "m1")
	if state[model.Profiles]["p2"] != nil || state[model.Sessions]["ses-p2"] != nil {
		t.Fatalf("m1 got m2's rows: %v", state)
	}
	if f := state[model.Accounts]["m2"]; f["email"] != nil || f["name"] != "Lena" {
		t.Errorf("m1 sees m2's account as %v; want name and role only", f)
	}

	// Growth: a share to m1 streams the profile and what hangs on it.
	e.push(t, "share", `[{"entity":"profile_shares","op":"upsert","id":"sh-p3","fields":{"profile_id":"p3","account_id":"m1","shared_by":"m2"}}]`)
	converge(t, e, ws, state, "m1")
	if state[model.Sessions]["ses-p3"]["protocol"] != "Clara" || state[model.Transactions]["tx-p3"] == nil {
		t.Errorf("after the share m1 lacks p3's session or transaction: %v", state[model.Sessions])
	}
	// Growth: a course assigned to m1 brings its members, their profiles
	// and attendances.
	e.push(t, "course", `[{"entity":"courses","op":"upsert","id":"crs","fields":{"therapist_id":"m1"}}]`)
	// m2 lost the course: not a shrink for m1.
	converge(t, e, ws, state, "m1")
	if state[model.Attendances]["att"] == nil || state[model.Profiles]["p2"] == nil {
		t.Errorf("after the course assignment m1 lacks its attendance or member profile")
	}
	// Live changes of invisible rows never arrive; visible ones do.
	e.push(t, "mixed", `[
		{"entity":"profiles","op":"upsert","id":"p-hidden","fields":{"owner_id":"m2","first_name":"Geheim"}},
		{"entity":"sessions","op":"upsert","id":"ses-1-new","fields":{"profile_id":"p-hidden","therapist_id":"m2","protocol":"geheim"}},
		{"entity":"sessions","op":"upsert","id":"ses1","fields":{"status":"cancelled"}}
	]`)
	converge(t, e, ws, state, "m1")
	if state[model.Profiles]["p-hidden"] != nil {
		t.Errorf("an invisible profile reached m1")
	}

	// A share to * reaches a member created after it, with the sessions.
	e.push(t, "star", `[{"entity":"profile_shares","op":"upsert","id":"sh-star","fields":{"profile_id":"p-hidden","account_id":"*"}}]`)
	e.push(t, "late", `[{"entity":"accounts","op":"upsert","id":"m9","fields":{"name":"Neu","role":"member","app_enabled":true}}]`)
	late, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m9", "late-phone"))
	lateState := rows{}
	converge(t, e, late, lateState, "m9")
	if lateState[model.Sessions]["ses-1-new"]["protocol"] != "geheim" {
		t.Errorf("the late member lacks the *-shared profile's session: %v", lateState[model.Sessions])
	}
	converge(t, e, ws, state, "m1") // m1 gets them too

	// A shrink: the course member leaves m1's course, so its profile (and
	// its session) leave m1's sight.
	e.push(t, "shrink", `[{"entity":"course_members","op":"delete","id":"cm"}]`)
	for {
		f := next(t, ws, 3*time.Second)
		if f.Type == "resync" {
			break
		}
		if f.Type == "caught_up" {
			t.Fatalf("no resync after the shrink")
		}
	}
}
