package shardbuilder_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// group is a random practice group, kept as the rows pushed.
type group struct {
	rows map[string]map[string]map[string]any // entity → id → fields
}

func (g *group) get(entity, id string) map[string]any { return g.rows[entity][id] }

func str(v any) string { s, _ := v.(string); return s }

// randomGroup pushes a random practice group into tn: accounts of every
// role, patients, shares to members and to *, sessions (with protocols),
// courses with members and attendances, transactions. Some members are
// created after the shares to * they must see.
func randomGroup(tb testing.TB, tn *store.Tenant, r *rand.Rand) *group {
	tb.Helper()
	g := &group{rows: map[string]map[string]map[string]any{}}
	var batches [][]model.Change
	var cur []model.Change
	add := func(entity, id string, f map[string]any) {
		if g.rows[entity] == nil {
			g.rows[entity] = map[string]map[string]any{}
		}
		if g.rows[entity][id] == nil {
			g.rows[entity][id] = map[string]any{}
		}
		for k, v := range f {
			g.rows[entity][id][k] = v
		}
		cur = append(cur, model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f})
	}
	flush := func() {
		if len(cur) > 0 {
			batches = append(batches, cur)
			cur = nil
		}
	}
	roles := []string{model.RoleAdmin, model.RoleMember, model.RoleSecretary}
	nAcc := 2 + r.IntN(5)
	var accounts []string
	for i := range nAcc {
		id := fmt.Sprintf("acc%d", i)
		accounts = append(accounts, id)
		role := roles[r.IntN(3)]
		if i == 0 {
			role = model.RoleMember
		}
		add(model.Accounts, id, map[string]any{"name": "A " + id, "email": id + "@x.de", "role": role, "app_enabled": r.IntN(2) == 0, "practice_ids": []string{"pr1"}})
	}
	late := fmt.Sprintf("acc%d", nAcc) // a member created after everything else
	pick := func(ids []string) string { return ids[r.IntN(len(ids))] }
	add(model.Practices, "pr1", map[string]any{"name": "Mitte"})
	var profiles []string
	for i := range r.IntN(25) + 1 {
		id := fmt.Sprintf("pat%d", i)
		profiles = append(profiles, id)
		add(model.Profiles, id, map[string]any{"owner_id": pick(accounts), "first_name": "F", "last_name": fmt.Sprint("L", i), "insurance": "AOK"})
	}
	flush()
	for i := range r.IntN(10) {
		to := pick(accounts)
		if r.IntN(3) == 0 {
			to = model.ShareAll
		}
		add(model.ProfileShares, fmt.Sprintf("sh%d", i), map[string]any{"profile_id": pick(profiles), "account_id": to, "shared_by": pick(accounts)})
	}
	for i := range r.IntN(40) {
		f := map[string]any{"profile_id": pick(profiles), "therapist_id": pick(accounts), "status": "done", "price_cents": int64(1000 + r.IntN(5000))}
		if r.IntN(4) > 0 {
			f["protocol"] = fmt.Sprintf("Befund %d", i)
		}
		if r.IntN(10) == 0 {
			delete(f, "profile_id")
		}
		add(model.Sessions, fmt.Sprintf("ses%d", i), f)
	}
	var courses []string
	for i := range r.IntN(4) {
		id := fmt.Sprintf("crs%d", i)
		courses = append(courses, id)
		add(model.Courses, id, map[string]any{"therapist_id": pick(accounts), "title": "Rehasport", "weekday": int64(1 + r.IntN(7)), "capacity": int64(10)})
	}
	if len(courses) > 0 {
		for i := range r.IntN(12) {
			add(model.CourseMembers, fmt.Sprintf("cm%d", i), map[string]any{"course_id": pick(courses), "profile_id": pick(profiles), "units_total": int64(20), "units_used": int64(0)})
		}
		for i := range r.IntN(8) {
			add(model.Attendances, fmt.Sprintf("att%d", i), map[string]any{"course_id": pick(courses), "profile_id": pick(profiles), "date": "2026-11-20", "springer": r.IntN(2) == 0})
		}
	}
	for i := range r.IntN(20) {
		f := map[string]any{"account_id": pick(accounts), "kind": "invoice", "amount_cents": int64(r.IntN(9000)), "status": "billed"}
		if r.IntN(3) > 0 {
			f["profile_id"] = pick(profiles)
		}
		add(model.Transactions, fmt.Sprintf("tx%d", i), f)
	}
	flush()
	add(model.Accounts, late, map[string]any{"name": "Late", "role": model.RoleMember, "app_enabled": true})
	flush()
	for i, b := range batches {
		res, err := tn.Apply(context.Background(), store.Batch{ID: fmt.Sprint("b", i), Origin: store.OriginPractice, Changes: b})
		if err != nil {
			tb.Fatalf("Apply = %v", err)
		}
		for _, c := range res.Changes { // server-assigned fields (references, shared_at)
			for k, v := range c.Fields {
				g.rows[c.Entity][c.ID][k] = v
			}
		}
	}
	return g
}

// reference says, straight from DESIGN §4 and without the policy code,
// whether account a sees the row.
func (g *group) reference(a, role, entity, id string) bool {
	switch role {
	case model.RoleAdmin, model.RoleSecretary:
		return true
	case model.RoleMember:
	default:
		return false
	}
	profileVisible := func(p string) bool {
		if p == "" {
			return false
		}
		if row := g.get(model.Profiles, p); row != nil && str(row["owner_id"]) == a {
			return true
		}
		for _, sh := range g.rows[model.ProfileShares] {
			if str(sh["profile_id"]) == p && (str(sh["account_id"]) == a || str(sh["account_id"]) == "*") {
				return true
			}
		}
		for _, s := range g.rows[model.Sessions] {
			if str(s["profile_id"]) == p && str(s["therapist_id"]) == a {
				return true
			}
		}
		for cid, c := range g.rows[model.Courses] {
			if str(c["therapist_id"]) != a {
				continue
			}
			for _, m := range g.rows[model.CourseMembers] {
				if str(m["course_id"]) == cid && str(m["profile_id"]) == p {
					return true
				}
			}
		}
		return false
	}
	ownCourse := func(c string) bool {
		row := g.get(model.Courses, c)
		return row != nil && str(row["therapist_id"]) == a
	}
	row := g.get(entity, id)
	switch entity {
	case model.Accounts, model.Practices:
		return true
	case model.Profiles:
		return profileVisible(id)
	case model.ProfileShares:
		return profileVisible(str(row["profile_id"]))
	case model.Sessions:
		return str(row["therapist_id"]) == a || profileVisible(str(row["profile_id"]))
	case model.Courses:
		return ownCourse(id)
	case model.CourseMembers, model.Attendances:
		return ownCourse(str(row["course_id"]))
	case model.Transactions:
		return str(row["account_id"]) == a || profileVisible(str(row["profile_id"]))
	}
	return false
}

// referenceColumns are the columns, id first, that DESIGN gives role for
// entity.
func referenceColumns(role, entity string) []string {
	e, _ := model.Lookup(entity)
	cols := []string{"id"}
	for _, f := range e.Fields {
		if role == model.RoleSecretary && entity == model.Sessions && f.Name == "protocol" {
			continue
		}
		if role == model.RoleMember && entity == model.Accounts && f.Name != "name" && f.Name != "role" {
			continue
		}
		cols = append(cols, f.Name)
	}
	return cols
}

// readTable returns the columns and the rows (id → column → value) of a table.
func readTable(tb testing.TB, db *sql.DB, table string, cols []string) map[string]map[string]any {
	tb.Helper()
	q := "SELECT "
	for i, c := range cols {
		if i > 0 {
			q += ", "
		}
		q += `"` + c + `"`
	}
	rows, err := db.Query(q + ` FROM "` + table + `"`)
	if err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			tb.Fatal(err)
		}
		m := map[string]any{}
		for i, c := range cols {
			m[c] = vals[i]
		}
		out[vals[0].(string)] = m
	}
	return out
}

func tableColumns(tb testing.TB, db *sql.DB, table string) []string {
	tb.Helper()
	rows, err := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		rows.Scan(&c)
		cols = append(cols, c)
	}
	return cols
}

func openDB(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// TestShardsMatchReference builds every account's shard of many random
// practice groups and compares each, row by row and field by field, with
// the brute-force reference.
func TestShardsMatchReference(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			s, tn := newTenant(t)
			r := rand.New(rand.NewPCG(uint64(seed), 42))
			g := randomGroup(t, tn, r)
			central := openDB(t, tn.Path())
			var accounts []string
			for id := range g.rows[model.Accounts] {
				accounts = append(accounts, id)
			}
			sort.Strings(accounts)
			for _, a := range accounts {
				role := str(g.rows[model.Accounts][a]["role"])
				path := filepath.Join(t.TempDir(), a+".db")
				m, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}, a, path, time.Now())
				if err != nil {
					t.Fatalf("WriteFile(%s) = %v", a, err)
				}
				shard := openDB(t, path)
				checkIntegrity(t, shard)
				var rows int64
				for _, e := range model.Entities() {
					wantCols := referenceColumns(role, e.Name)
					if got := tableColumns(t, shard, e.Name); !slices.Equal(got, wantCols) {
						t.Fatalf("seed %d, %s (%s): columns of %s = %v; want %v", seed, a, role, e.Name, got, wantCols)
					}
					all := readTable(t, central, e.Name, wantCols)
					want := map[string]map[string]any{}
					for id, row := range all {
						if g.reference(a, role, e.Name, id) {
							want[id] = row
						}
					}
					got := readTable(t, shard, e.Name, wantCols)
					if !reflect.DeepEqual(got, want) {
						t.Errorf("seed %d, %s (%s): %s rows = %v; want %v", seed, a, role, e.Name, keys(got), keys(want))
					}
					rows += int64(len(got))
				}
				if m.Rows != rows || m.Role != role {
					t.Errorf("Meta = %+v; want %d rows, role %s", m, rows, role)
				}
				if role == model.RoleSecretary {
					var n int
					shard.QueryRow(`SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'protocol'`).Scan(&n)
					if n != 0 {
						t.Errorf("secretary %s's shard has a protocol column", a)
					}
				}
			}
			_ = s
		})
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func checkIntegrity(tb testing.TB, db *sql.DB) {
	tb.Helper()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		tb.Fatalf("integrity_check = %q, %v; want ok", res, err)
	}
}
