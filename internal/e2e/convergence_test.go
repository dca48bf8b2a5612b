package e2e_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
)

// localRows reads every entity table of a SQLite file as id → column → value.
func localRows(tb testing.TB, path string) map[string]map[string]map[string]any {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	out := map[string]map[string]map[string]any{}
	for _, e := range model.Entities() {
		rows, err := db.Query(`SELECT * FROM "` + e.Name + `"`)
		if err != nil {
			tb.Fatalf("read %s of %s: %v", e.Name, path, err)
		}
		cols, _ := rows.Columns()
		m := map[string]map[string]any{}
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			row := map[string]any{}
			for i, c := range cols {
				if b, ok := vals[i].([]byte); ok {
					vals[i] = string(b)
				}
				row[c] = vals[i]
			}
			m[row["id"].(string)] = row
		}
		rows.Close()
		out[e.Name] = m
	}
	return out
}

// TestConvergence runs random workloads — practice pushes with shares (to
// members and to *), reassignments of sessions and courses, a role change,
// device writes from devices of all three roles, disconnects, server
// restarts and two compactions of the log (everything but the head's
// change: offline devices resync) — after which every device's local
// database holds exactly the rows and fields of a fresh shard built at the
// same seq. Failures name their seed; add it to seeds to replay it.
func TestConvergence(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { convergence(t, seed) })
	}
}

func convergence(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	sys := newSystem(t)
	srv := sys.restartable()
	sys.startWorker(time.Hour)
	accounts := []string{"a1", "s1", "m1", "m2"}
	roles := map[string]string{"a1": "admin", "s1": "secretary", "m1": "member", "m2": "member"}
	var initial []map[string]any
	for _, a := range accounts {
		initial = append(initial, up("accounts", a, map[string]any{"name": a, "email": a + "@x.de", "role": roles[a], "app_enabled": true}))
	}
	profiles := []string{}
	for i := range 8 {
		p := fmt.Sprint("p", i)
		profiles = append(profiles, p)
		initial = append(initial, up("profiles", p, map[string]any{"owner_id": accounts[i%4], "first_name": fmt.Sprint("F", i)}))
	}
	sys.push(initial...)
	for _, a := range accounts {
		sys.waitShard(a, sys.seq(), 10*time.Second)
	}
	devices := map[string]*device.Client{}
	for _, a := range accounts {
		devices[a] = sys.deviceOf(t, a)
	}
	pick := func(l []string) string { return l[r.IntN(len(l))] }
	members := []string{"m1", "m2"}
	for step := range 40 {
		switch k := r.IntN(10); {
		case k < 4: // a practice push
			var ch map[string]any
			id := fmt.Sprint("x", step)
			switch r.IntN(6) {
			case 0:
				to := pick(members)
				if r.IntN(3) == 0 {
					to = "*"
				}
				ch = up("profile_shares", id, map[string]any{"profile_id": pick(profiles), "account_id": to})
			case 1:
				ch = up("sessions", fmt.Sprint("s", r.IntN(6)), map[string]any{"profile_id": pick(profiles), "therapist_id": pick(accounts), "protocol": fmt.Sprint("P", step)})
			case 2:
				ch = up("courses", fmt.Sprint("c", r.IntN(2)), map[string]any{"therapist_id": pick(accounts), "title": "Kurs"})
			case 3:
				ch = up("course_members", fmt.Sprint("cm", r.IntN(4)), map[string]any{"course_id": fmt.Sprint("c", r.IntN(2)), "profile_id": pick(profiles)})
			case 4:
				ch = up("transactions", fmt.Sprint("t", r.IntN(5)), map[string]any{"account_id": pick(accounts), "profile_id": pick(profiles), "kind": "invoice"})
			case 5:
				ch = map[string]any{"entity": "course_members", "op": "delete", "id": fmt.Sprint("cm", r.IntN(4))}
			}
			sys.push(ch)
		case k < 7: // a device writes
			a := pick(accounts)
			c := devices[a]
			var ch model.Change
			switch r.IntN(3) {
			case 0:
				ch = model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: pick(profiles), Fields: map[string]any{"phone": fmt.Sprint(step)}}
			case 1:
				id := fmt.Sprint("s", r.IntN(6)) // the practice's, or a new one
				if r.IntN(2) == 0 {
					id = uid(fmt.Sprint("ds", r.IntN(4)))
				}
				ch = model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: id, Fields: map[string]any{"status": "done", "therapist_id": a, "profile_id": pick(profiles)}}
			case 2:
				ch = model.Change{Entity: model.Transactions, Op: model.OpUpsert, ID: uid(fmt.Sprint("dt", step)), Fields: map[string]any{"account_id": a, "kind": "payment", "amount_cents": int64(step)}}
			}
			c.Write(context.Background(), ch) // a read-only device refuses; fine
		case k < 9: // a device syncs (others stay offline)
			if err := syncIdle(t, devices[pick(accounts)]); err != nil {
				t.Fatalf("seed %d step %d: sync = %v", seed, step, err)
			}
		default: // the server restarts
			srv.down()
			srv.up()
		}
		if step == 20 { // a role change in the middle
			sys.push(up("accounts", "m2", map[string]any{"role": "secretary"}))
			roles["m2"] = "secretary"
			members = []string{"m1"}
		}
		if step == 13 || step == 29 { // the log compacted (the worker's job, with a retention of 0s)
			sys.compactAll(t)
		}
	}
	for round := 0; round < 2; round++ { // a second round delivers what the first one's pushes caused
		for _, a := range accounts {
			if err := syncIdle(t, devices[a]); err != nil {
				t.Fatalf("seed %d: final sync of %s = %v", seed, a, err)
			}
		}
	}
	seq := sys.seq()
	for _, a := range accounts {
		c := devices[a]
		if cur, _ := c.Cursor(); cur != seq {
			t.Errorf("seed %d: %s at cursor %d; want %d", seed, a, cur, seq)
			continue
		}
		want := filepath.Join(t.TempDir(), "fresh.db")
		if _, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: sys.tenant.ID(), Path: sys.tenant.Path()}, a, want, time.Now()); err != nil {
			t.Fatal(err)
		}
		got, exp := localRows(t, filepath.Join(c.Dir(), "data.db")), localRows(t, want)
		for _, e := range model.Entities() {
			if !reflect.DeepEqual(got[e.Name], exp[e.Name]) {
				t.Errorf("seed %d: %s (%s) %s: device %v; fresh shard %v", seed, a, roles[a], e.Name, got[e.Name], exp[e.Name])
			}
		}
	}
}
