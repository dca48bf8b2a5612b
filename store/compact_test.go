package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// clock is a settable time for a store's Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newCompactTenant is newTenant on clk's time, folding about batch changes
// per write of a compaction.
func newCompactTenant(tb testing.TB, clk *clock, batch int) *store.Tenant {
	tb.Helper()
	s, err := store.Open(tb.TempDir(), store.Options{Now: clk.Now, CompactBatch: batch})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	st, _, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "Praxis Test", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatalf("CreateTenant: %v", err)
	}
	tn, err := s.Tenant(context.Background(), st.ID)
	if err != nil {
		tb.Fatalf("Tenant: %v", err)
	}
	return tn
}

// logged is a change as the log holds it, for comparisons.
type logged struct {
	Seq    int64
	Entity string
	Op     string
	ID     string
	Fields map[string]any
}

func readLog(tb testing.TB, tn *store.Tenant) []logged {
	tb.Helper()
	cs, _, err := tn.Changes(context.Background(), 0, 1<<20)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]logged, 0, len(cs))
	for _, c := range cs {
		out = append(out, logged{c.Seq, c.Entity, string(c.Op), c.ID, c.Fields})
	}
	return out
}

// pastAnswers are the log's answers about every seq from a horizon to the
// head: what compaction must leave as they were.
type pastAnswers struct {
	Links   map[int64]*model.Links // by seq
	Existed map[existedAt]bool     // ExistedBefore(entity, id, seq)
	Roles   map[roleAt]string      // RoleAt(account, seq)
	rows    map[[2]string]bool     // the rows asked about: every row of the log
	seqs    []int64                // the seqs asked about
}

type existedAt struct {
	entity, id string
	seq        int64
}

type roleAt struct {
	account string
	seq     int64
}

// since keeps the answers about the seqs from from on.
func (a pastAnswers) since(from int64) pastAnswers {
	var seqs []int64
	for _, s := range a.seqs {
		if s >= from {
			seqs = append(seqs, s)
		}
	}
	a.seqs = seqs
	for s := range a.Links {
		if s < from {
			delete(a.Links, s)
		}
	}
	for k := range a.Existed {
		if k.seq <= from { // ExistedBefore(s) asks about s-1
			delete(a.Existed, k)
		}
	}
	for k := range a.Roles {
		if k.seq < from {
			delete(a.Roles, k)
		}
	}
	return a
}

// answers asks about every row of the log at probes from from to the
// head, or about rows at seqs when given.
func answers(tb testing.TB, tn *store.Tenant, from int64, rows map[[2]string]bool, seqs []int64) pastAnswers {
	tb.Helper()
	ctx := context.Background()
	head, err := tn.Seq(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if seqs == nil {
		seqs = probes(from, head)
	}
	keys := rows
	if keys == nil {
		keys = map[[2]string]bool{}
		for _, c := range readLog(tb, tn) {
			keys[[2]string{c.Entity, c.ID}] = true
		}
	}
	a := pastAnswers{Links: map[int64]*model.Links{}, Existed: map[existedAt]bool{}, Roles: map[roleAt]string{}, rows: keys, seqs: seqs}
	for _, s := range seqs {
		if a.Links[s], err = tn.LinksAt(ctx, s); err != nil {
			tb.Fatalf("LinksAt(%d) = %v", s, err)
		}
		for k := range keys {
			if a.Existed[existedAt{k[0], k[1], s + 1}], err = tn.ExistedBefore(ctx, k[0], k[1], s+1); err != nil {
				tb.Fatal(err)
			}
			if k[0] == model.Accounts {
				if a.Roles[roleAt{k[1], s}], err = tn.RoleAt(ctx, k[1], s); err != nil {
					tb.Fatalf("RoleAt(%s, %d) = %v", k[1], s, err)
				}
			}
		}
	}
	return a
}

// probes are the seqs from from to head that answers asks about: the
// first few (around the horizon) and about ten more up to the head.
func probes(from, head int64) []int64 {
	var out []int64
	step := max((head-from)/10, 1)
	for s := from; s <= head; s++ {
		if s < from+3 || s == head || (s-from)%step == 0 {
			out = append(out, s)
		}
	}
	return out
}

// tableRows reads the current rows of every entity, without null fields.
func tableRows(tb testing.TB, tn *store.Tenant) map[string]map[string]map[string]any {
	tb.Helper()
	ctx := context.Background()
	out := map[string]map[string]map[string]any{}
	for _, e := range model.Entities() {
		ids, err := tn.RowIDs(ctx, e.Name)
		if err != nil {
			tb.Fatal(err)
		}
		for _, id := range ids {
			row, err := tn.Row(ctx, e.Name, id)
			if err != nil {
				tb.Fatal(err)
			}
			if out[e.Name] == nil {
				out[e.Name] = map[string]map[string]any{}
			}
			out[e.Name][id] = withoutNulls(row)
		}
	}
	return out
}

// replayed applies the whole log from seq 0 to nothing, as a client
// without data does, and returns the rows it ends with, without null
// fields.
func replayed(tb testing.TB, tn *store.Tenant) map[string]map[string]map[string]any {
	tb.Helper()
	out := map[string]map[string]map[string]any{}
	for _, c := range readLog(tb, tn) {
		if c.Op == string(model.OpDelete) {
			delete(out[c.Entity], c.ID)
			if len(out[c.Entity]) == 0 {
				delete(out, c.Entity)
			}
			continue
		}
		if out[c.Entity] == nil {
			out[c.Entity] = map[string]map[string]any{}
		}
		row := out[c.Entity][c.ID]
		if row == nil {
			row = map[string]any{}
			out[c.Entity][c.ID] = row
		}
		for k, v := range c.Fields {
			row[k] = v
		}
	}
	for _, rows := range out {
		for id, row := range rows {
			rows[id] = withoutNulls(row)
		}
	}
	return out
}

func withoutNulls(row map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range row {
		if v != nil {
			out[k] = v
		}
	}
	return out
}

// checkCompacted checks what compaction must keep: the answers about
// every seq from the horizon on, and a log from seq 0 that replays to the
// current rows.
func checkCompacted(tb testing.TB, tn *store.Tenant, horizon int64, before pastAnswers) {
	tb.Helper()
	after := answers(tb, tn, horizon, before.rows, before.seqs)
	for s, l := range before.Links {
		if !reflect.DeepEqual(after.Links[s], l) {
			tb.Errorf("LinksAt(%d) after compaction to %d = %+v; before %+v", s, horizon, after.Links[s], l)
		}
	}
	for k, v := range before.Existed {
		if after.Existed[k] != v {
			tb.Errorf("ExistedBefore(%s, %s, %d) after compaction to %d = %v; before %v", k.entity, k.id, k.seq, horizon, after.Existed[k], v)
		}
	}
	if !reflect.DeepEqual(after.Roles, before.Roles) {
		tb.Errorf("RoleAt after compaction to %d = %v; before %v", horizon, after.Roles, before.Roles)
	}
	if got, want := replayed(tb, tn), tableRows(tb, tn); !reflect.DeepEqual(got, want) {
		tb.Errorf("the log from 0 replays to %v; the tables hold %v", got, want)
	}
	if horizon > 0 {
		if _, err := tn.LinksAt(context.Background(), horizon-1); !errors.Is(err, store.ErrCompacted) {
			tb.Errorf("LinksAt(%d) below compacted_to %d = %v; want ErrCompacted", horizon-1, horizon, err)
		}
	}
}

// TestCompact: changes older than the retention fold into the newest
// change of each row (its whole state), deleted rows' changes go, the
// head's change stays, changes younger than the retention stay as they
// were; and what the log says about every seq from the horizon on does
// not change.
func TestCompact(t *testing.T) {
	type step struct {
		js  string
		old bool // made before the retention's cutoff
	}
	for _, tt := range []struct {
		name    string
		steps   []step
		horizon int64
		want    []logged // the log after compaction
	}{
		{
			name: "partial upserts merged into the newest",
			steps: []step{
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"A","owner_id":"m1"}}]`, true},
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"last_name":"B"}}]`, true},
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"C","phone":null}}]`, true},
				{`[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`, false},
			},
			horizon: 3,
			want: []logged{
				{3, "profiles", "upsert", "p1", map[string]any{"first_name": "C", "last_name": "B", "owner_id": "m1", "phone": nil}},
				{4, "practices", "upsert", "pr1", map[string]any{"name": "Mitte"}},
			},
		},
		{
			name: "a deleted row's changes go",
			steps: []step{
				{`[{"entity":"sessions","op":"upsert","id":"s1","fields":{"therapist_id":"m1"}},{"entity":"sessions","op":"upsert","id":"s2","fields":{"status":"done"}}]`, true},
				{`[{"entity":"sessions","op":"delete","id":"s1"}]`, true},
				{`[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`, false},
			},
			horizon: 3,
			want: []logged{
				{2, "sessions", "upsert", "s2", map[string]any{"status": "done"}},
				{4, "practices", "upsert", "pr1", map[string]any{"name": "Mitte"}},
			},
		},
		{
			name: "a row deleted and made again keeps only what came after the delete",
			steps: []step{
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"A","owner_id":"m1"}}]`, true},
				{`[{"entity":"profiles","op":"delete","id":"p1"}]`, true},
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"last_name":"B"}}]`, true},
				{`[{"entity":"profiles","op":"upsert","id":"p1","fields":{"phone":"1"}}]`, true},
				{`[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`, false},
			},
			horizon: 4,
			want: []logged{
				{4, "profiles", "upsert", "p1", map[string]any{"last_name": "B", "phone": "1"}},
				{5, "practices", "upsert", "pr1", map[string]any{"name": "Mitte"}},
			},
		},
		{
			name: "the head's change stays even when it is old",
			steps: []step{
				{`[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","name":"A"}}]`, true},
				{`[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"member"}}]`, true},
				{`[{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"B"}}]`, true},
			},
			horizon: 2,
			want: []logged{
				{2, "accounts", "upsert", "a1", map[string]any{"role": "member", "name": "A"}},
				{3, "accounts", "upsert", "a1", map[string]any{"name": "B"}},
			},
		},
		{
			name: "a delete at the head stays, what came before it goes",
			steps: []step{
				{`[{"entity":"courses","op":"upsert","id":"c1","fields":{"therapist_id":"m1"}}]`, true},
				{`[{"entity":"courses","op":"upsert","id":"c1","fields":{"title":"Rücken"}}]`, true},
				{`[{"entity":"courses","op":"delete","id":"c1"}]`, true},
			},
			horizon: 2,
			want: []logged{
				{2, "courses", "upsert", "c1", map[string]any{"therapist_id": "m1", "title": "Rücken"}},
				{3, "courses", "delete", "c1", nil},
			},
		},
		{
			name: "younger changes stay as they were",
			steps: []step{
				{`[{"entity":"sessions","op":"upsert","id":"s1","fields":{"therapist_id":"m1","profile_id":"p1"}}]`, true},
				{`[{"entity":"sessions","op":"upsert","id":"s1","fields":{"status":"done"}}]`, true},
				{`[{"entity":"sessions","op":"upsert","id":"s1","fields":{"therapist_id":"m2"}}]`, false},
				{`[{"entity":"sessions","op":"delete","id":"s1"}]`, false},
				{`[{"entity":"sessions","op":"upsert","id":"s1","fields":{"status":"planned"}}]`, false},
			},
			horizon: 2,
			want: []logged{
				{2, "sessions", "upsert", "s1", map[string]any{"therapist_id": "m1", "profile_id": "p1", "status": "done"}},
				{3, "sessions", "upsert", "s1", map[string]any{"therapist_id": "m2"}},
				{4, "sessions", "delete", "s1", nil},
				{5, "sessions", "upsert", "s1", map[string]any{"status": "planned"}},
			},
		},
		{
			name: "nothing old enough",
			steps: []step{
				{`[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"A"}}]`, false},
				{`[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"B"}}]`, false},
			},
			horizon: 0,
			want: []logged{
				{1, "practices", "upsert", "pr1", map[string]any{"name": "A"}},
				{2, "practices", "upsert", "pr1", map[string]any{"name": "B"}},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			_, tn, _ := newTenant(t, clk.Now)
			for i, s := range tt.steps {
				if !s.old && (i == 0 || tt.steps[i-1].old) {
					clk.advance(48 * time.Hour) // the retention's cutoff lies between the old and the young
				}
				mustApply(t, tn, fmt.Sprint("b", i), s.js)
				clk.advance(time.Second)
			}
			if tt.steps[len(tt.steps)-1].old {
				clk.advance(48 * time.Hour)
			}
			before := answers(t, tn, max(tt.horizon, 1), nil, nil)
			res, err := tn.Compact(context.Background(), 24*time.Hour)
			if err != nil {
				t.Fatalf("Compact = %v", err)
			}
			if res.Horizon != tt.horizon || res.CompactedTo != tt.horizon {
				t.Errorf("Compact = %+v; want horizon and compacted_to %d", res, tt.horizon)
			}
			if got := readLog(t, tn); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("log after compaction:\n%v\nwant\n%v", got, tt.want)
			}
			checkCompacted(t, tn, tt.horizon, before)
			again, err := tn.Compact(context.Background(), 24*time.Hour)
			if err != nil || again.Dropped != 0 || again.Rewritten != 0 {
				t.Errorf("a second Compact = %+v, %v; want nothing more to do", again, err)
			}
		})
	}
}

// TestCompactRandom: random workloads over rows that decide visibility,
// compacted twice at random horizons: what the log says about every seq
// from the horizon on stays, and the log from 0 replays to the tables.
func TestCompactRandom(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Parallel() // mostly waiting for fsyncs
			r := rand.New(rand.NewPCG(seed, 13))
			clk := newClock()
			tn := newCompactTenant(t, clk, 1+r.IntN(6)) // many small batches
			ids := []string{"x1", "x2", "x3", "x4"}
			accounts := []string{"m1", "m2", "a1"}
			pick := func(l []string) string { return l[r.IntN(len(l))] }
			change := func() map[string]any {
				entity := pick([]string{model.Accounts, model.Profiles, model.Sessions, model.ProfileShares, model.Courses, model.CourseMembers, model.Transactions})
				id := pick(ids)
				if entity == model.Accounts {
					id = pick(accounts)
				}
				if r.IntN(5) == 0 && entity != model.ProfileShares {
					return map[string]any{"entity": entity, "op": "delete", "id": id}
				}
				f := map[string]any{}
				switch entity {
				case model.Accounts:
					f["role"] = pick([]string{"member", "admin", "secretary"})
					if r.IntN(2) == 0 {
						f = map[string]any{"name": fmt.Sprint("N", r.IntN(9))}
					}
				case model.Profiles:
					f[pick([]string{"owner_id", "first_name"})] = pick(accounts)
				case model.Sessions:
					f[pick([]string{"profile_id", "therapist_id", "protocol"})] = pick(append(ids, accounts...))
				case model.ProfileShares:
					f = map[string]any{"profile_id": pick(ids), "account_id": pick(append(accounts, "*"))}
				case model.Courses:
					f[pick([]string{"therapist_id", "title"})] = pick(accounts)
				case model.CourseMembers:
					f[pick([]string{"course_id", "profile_id"})] = pick(ids)
				case model.Transactions:
					f[pick([]string{"account_id", "profile_id"})] = pick(append(ids, accounts...))
				}
				return map[string]any{"entity": entity, "op": "upsert", "id": id, "fields": f}
			}
			push := func(n int) {
				for i := range n {
					var batch []map[string]any
					for range 1 + r.IntN(3) {
						batch = append(batch, change())
					}
					js, _ := json.Marshal(batch)
					// A share is never changed: a repeat of one is refused,
					// and the batch with it.
					if _, err := apply(t, tn, "", string(js)); err != nil && !errors.Is(err, model.ErrForbidden) && !errors.Is(err, model.ErrInvalid) {
						t.Fatalf("batch %d: %v", i, err)
					}
					clk.advance(time.Duration(r.IntN(60)) * time.Minute)
				}
			}
			for round := range 2 {
				push(60)
				cut := time.Duration(r.IntN(20)) * time.Hour
				head, _ := tn.Seq(context.Background())
				if head == 0 {
					continue
				}
				// The answers from the lowest horizon the cut could give.
				l, err := tn.Log(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				before := answers(t, tn, max(l.CompactedTo, 1), nil, nil)
				res, err := tn.Compact(context.Background(), cut)
				if err != nil {
					t.Fatalf("round %d: Compact = %v", round, err)
				}
				if res.Horizon >= head {
					t.Fatalf("round %d: horizon %d at the head %d", round, res.Horizon, head)
				}
				checkCompacted(t, tn, res.CompactedTo, before.since(max(res.CompactedTo, 1)))
			}
		})
	}
}

// TestCompactRecords: records of batch ids and mutation ids older than the
// retention go (a retry that old is applied as new); younger ones stay.
func TestCompactRecords(t *testing.T) {
	clk := newClock()
	_, tn, _ := newTenant(t, clk.Now)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}}]`)
	m1 := model.Viewer{ID: "m1", Role: model.RoleMember}
	p1 := uid("p1")
	devicePush(t, tn, m1, "phone-1", []string{"old-mutation"}, `[{"entity":"profiles","op":"upsert","id":"`+p1+`","fields":{"owner_id":"m1","first_name":"A"}}]`)
	clk.advance(48 * time.Hour)
	mustApply(t, tn, "young", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`)
	devicePush(t, tn, m1, "phone-1", []string{"young-mutation"}, `[{"entity":"profiles","op":"upsert","id":"`+p1+`","fields":{"first_name":"B"}}]`)
	res, err := tn.Compact(ctx, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if res.BatchesDropped != 1 || res.MutationsDropped != 1 {
		t.Errorf("Compact = %+v; want 1 batch and 1 mutation record dropped", res)
	}
	for _, tt := range []struct {
		batch    string
		repeated bool
	}{{"seed", false}, {"young", true}} {
		js := map[string]string{
			"seed":  `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}}]`,
			"young": `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`,
		}[tt.batch]
		if got := mustApply(t, tn, tt.batch, js); got.Repeated != tt.repeated {
			t.Errorf("batch %s again: repeated = %v; want %v", tt.batch, got.Repeated, tt.repeated)
		}
	}
	for _, tt := range []struct {
		id      string
		applied bool
	}{{"old-mutation", true}, {"young-mutation", false}} {
		seq, _ := tn.Seq(ctx)
		got := devicePush(t, tn, m1, "phone-1", []string{tt.id}, `[{"entity":"profiles","op":"upsert","id":"`+p1+`","fields":{"first_name":"`+tt.id+`"}}]`)
		if applied := got.Seq > seq; applied != tt.applied {
			t.Errorf("mutation %s again: applied = %v; want %v", tt.id, applied, tt.applied)
		}
	}
}

// TestCompactReclaims: the space of the dropped changes goes back to the
// file system: in steps on a file made since compaction exists (its
// auto_vacuum is INCREMENTAL from the start), with one VACUUM that makes
// it INCREMENTAL on a small older one; a big older one waits for Vacuum.
func TestCompactReclaims(t *testing.T) {
	for _, tt := range []struct {
		name    string
		older   bool  // the file has auto_vacuum NONE, as tenants made before
		fullMax int64 // Options.FullVacuumMax
		vacuum  string
	}{
		{"a new file", false, 0, "incremental"},
		{"an older file", true, 0, "full"},
		{"a big older file", true, 1 << 10, "deferred"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			dir := t.TempDir()
			s, err := store.Open(dir, store.Options{Now: clk.Now, FullVacuumMax: tt.fullMax})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			st, _, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P"})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "tenants", st.ID, "central.db")
			if tt.older {
				setAutoVacuum(t, path, "NONE")
			}
			tn, err := s.Tenant(context.Background(), st.ID)
			if err != nil {
				t.Fatal(err)
			}
			big := fmt.Sprintf("%01024d", 0)
			for i := range 20 {
				var batch []map[string]any
				for j := range 50 {
					batch = append(batch, map[string]any{"entity": "profiles", "op": "upsert", "id": fmt.Sprint("p", j%10), "fields": map[string]any{"address": fmt.Sprint(big, i, j)}})
				}
				js, _ := json.Marshal(batch)
				mustApply(t, tn, "", string(js))
			}
			clk.advance(time.Hour)
			mustApply(t, tn, "", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`)
			res, err := tn.Compact(context.Background(), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if res.Dropped != 1000-10 || res.Rewritten != 10 || res.Vacuum != tt.vacuum {
				t.Errorf("Compact = %+v; want 990 dropped, 10 rewritten, vacuum %s", res, tt.vacuum)
			}
			if tt.vacuum == "deferred" {
				if got := autoVacuum(t, path); got != 0 || res.BytesAfter != res.BytesBefore {
					t.Errorf("deferred: auto_vacuum %d, %d → %d bytes; want 0 and the size unchanged", got, res.BytesBefore, res.BytesAfter)
				}
				if err := tn.Vacuum(context.Background()); err != nil {
					t.Fatal(err)
				}
				if res.BytesAfter, err = tn.Size(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if res.BytesAfter*3 > res.BytesBefore {
				t.Errorf("%d → %d bytes; want the file at most a third of what it was", res.BytesBefore, res.BytesAfter)
			}
			if got := autoVacuum(t, path); got != 2 {
				t.Errorf("auto_vacuum after = %d; want 2 (INCREMENTAL)", got)
			}
		})
	}
}

// setAutoVacuum sets the auto_vacuum of the database file at path (not
// open in the store) with a VACUUM.
func setAutoVacuum(tb testing.TB, path, mode string) {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`PRAGMA auto_vacuum = ` + mode); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM`); err != nil {
		tb.Fatal(err)
	}
}

func autoVacuum(tb testing.TB, path string) int {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`PRAGMA auto_vacuum`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestCompactWhileServing: a compaction in many small batches while
// another writer goes on and readers read the log from 0: every snapshot
// shows each row's history whole (before its fold or after it), never
// half of it; a reader paging from 0 that goes on only while
// Log.ContinuesFrom lets it ends each pass with the rows there are.
func TestCompactWhileServing(t *testing.T) {
	clk := newClock()
	tn := newCompactTenant(t, clk, 5)
	ctx := context.Background()
	// Profile i's j-th upsert sets phone (odd j) or email (even j) to j:
	// a replay that lost part of a history breaks the pairs.
	n := map[string]int{}
	next := func(id string) string {
		n[id]++
		field := "phone"
		if n[id]%2 == 0 {
			field = "email"
		}
		return fmt.Sprintf(`{"entity":"profiles","op":"upsert","id":%q,"fields":{%q:"%d"}}`, id, field, n[id])
	}
	// Session d<r> is made in round r and deleted in round r+1: a reader
	// that lost a delete holds more than one.
	for round := range 12 {
		batch := fmt.Sprintf(`{"entity":"sessions","op":"upsert","id":"d%d","fields":{"status":"planned"}}`, round)
		if round > 0 {
			batch += fmt.Sprintf(`,{"entity":"sessions","op":"delete","id":"d%d"}`, round-1)
		}
		for i := range 10 {
			batch += "," + next(fmt.Sprint("p", i))
		}
		mustApply(t, tn, fmt.Sprint("old", round), "["+batch+"]")
	}
	clk.advance(48 * time.Hour)
	check := func(cs []model.Change) error {
		rows := map[string]map[string]any{}
		for _, c := range cs {
			if c.Entity == model.Practices {
				continue
			}
			if c.Op == model.OpDelete {
				delete(rows, c.ID)
				continue
			}
			if rows[c.ID] == nil {
				rows[c.ID] = map[string]any{}
			}
			for k, v := range c.Fields {
				rows[c.ID][k] = v
			}
		}
		for id, row := range rows {
			if id[0] == 'd' {
				if id != "d11" {
					return fmt.Errorf("session %s replays as there, but it was deleted", id)
				}
				continue
			}
			var phone, email int
			fmt.Sscan(fmt.Sprint(row["phone"]), &phone)
			fmt.Sscan(fmt.Sprint(row["email"]), &email)
			if phone < 1 || (phone > 1 && email != phone-1 && email != phone+1) {
				return fmt.Errorf("%s replays to %v", id, row)
			}
		}
		return nil
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var passes, restarts int
	wg.Add(3)
	go func() { // a reader paging from 0, as a practice PC pulls
		defer wg.Done()
		var (
			cursor, token int64
			read          []model.Change
		)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := tn.Read(ctx, cursor, 7)
			if err != nil {
				errs <- err
				return
			}
			switch {
			case cursor == 0:
				token, read = r.Log().Resume(), nil
			case !r.Log().ContinuesFrom(cursor, "", token):
				cursor = 0 // compacted past it: from 0 again
				restarts++
				continue
			}
			read = append(read, r.Changes...)
			if len(r.Changes) > 0 {
				cursor = r.Changes[len(r.Changes)-1].Seq
			}
			if len(r.Changes) < 7 { // at the head: a whole pass
				if err := check(read); err != nil {
					errs <- fmt.Errorf("paging from 0: %w", err)
					return
				}
				cursor = 0
				passes++
			}
		}
	}()
	go func() { // a reader from 0
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cs, _, err := tn.Changes(ctx, 0, 1<<20)
			if err == nil {
				err = check(cs)
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // a writer of young changes
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			js := fmt.Sprintf(`[{"entity":"practices","op":"upsert","id":"pr%d","fields":{"name":"N"}}]`, i%3)
			if _, err := tn.Apply(ctx, store.Batch{Origin: store.OriginPractice, Changes: changes(t, js)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for seq := int64(0); seq <= 143; seq, _ = tn.Seq(ctx) {
		time.Sleep(time.Millisecond) // the young writer has begun
	}
	res, err := tn.Compact(ctx, 24*time.Hour)
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if err != nil || res.Horizon != 143 || res.Dropped != 110+22 || res.Rewritten != 10 {
		t.Errorf("Compact = %+v, %v; want horizon 143, 132 dropped, 10 rewritten", res, err)
	}
	if l, err := tn.Log(ctx); err != nil || l.FoldedTo != 143 || l.CompactedTo != 143 {
		t.Errorf("Log = %+v, %v; want compacted and folded to 143", l, err)
	}
	t.Logf("the paging reader made %d passes, %d restarts", passes, restarts)
	cs, _, err := tn.Changes(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(cs); err != nil {
		t.Error(err)
	}
}

// TestClaimCompaction: of the claims of a tenant's periodic compaction,
// one per interval succeeds.
func TestClaimCompaction(t *testing.T) {
	clk := newClock()
	_, tn, _ := newTenant(t, clk.Now)
	for _, tt := range []struct {
		after time.Duration // since the step before
		want  bool
	}{
		{0, true},
		{0, false},
		{59 * time.Minute, false},
		{time.Minute, true},
		{30 * time.Minute, false},
	} {
		clk.advance(tt.after)
		if got, err := tn.ClaimCompaction(context.Background(), time.Hour); err != nil || got != tt.want {
			t.Errorf("ClaimCompaction at %s = %v, %v; want %v", clk.Now().Format(time.TimeOnly), got, err, tt.want)
		}
	}
}

// TestContinuesFrom: a client paging from 0 goes on below compacted_to
// only with the Resume of a snapshot whose log was folded whole up to
// compacted_to, while compacted_to stays there.
func TestContinuesFrom(t *testing.T) {
	folded := store.Log{Seq: 100, History: "h", CompactedTo: 50, FoldedTo: 50}
	folding := store.Log{Seq: 100, History: "h", CompactedTo: 80, FoldedTo: 50} // a compaction to 80 under way
	for _, tt := range []struct {
		name   string
		began  store.Log // the snapshot the client began from 0 in
		now    store.Log
		cursor int64
		want   bool
	}{
		{"began folded, still there", folded, folded, 20, true},
		{"began folded, a compaction began since", folded, folding, 20, false},
		{"began while folding, still folding", folding, folding, 20, false},
		{"began while folding, folded since", folding, store.Log{Seq: 100, History: "h", CompactedTo: 80, FoldedTo: 80}, 20, false},
		{"at or past compacted_to", folding, folding, 80, true},
		{"another history", folded, store.Log{Seq: 100, History: "other", CompactedTo: 50, FoldedTo: 50}, 60, false},
		{"never compacted", store.Log{Seq: 100, History: "h"}, store.Log{Seq: 100, History: "h"}, 20, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.now.ContinuesFrom(tt.cursor, "h", tt.began.Resume()); got != tt.want {
				t.Errorf("ContinuesFrom(%d, h, %d) on %+v = %v; want %v", tt.cursor, tt.began.Resume(), tt.now, got, tt.want)
			}
		})
	}
}
