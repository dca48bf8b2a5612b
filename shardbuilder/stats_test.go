package shardbuilder_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// addFinances pushes sessions of every status and transactions of every
// kind and status into tn (and g), dated around the month and year end of
// 2026/2027 and written with offsets other than the tenant's, so that a
// session's UTC day and its day in the tenant's zone differ.
func addFinances(tb testing.TB, tn *store.Tenant, g *group, r *rand.Rand) {
	tb.Helper()
	var accounts, profiles []string
	for id := range g.rows[model.Accounts] {
		accounts = append(accounts, id)
	}
	for id := range g.rows[model.Profiles] {
		profiles = append(profiles, id)
	}
	sort.Strings(accounts)
	sort.Strings(profiles)
	pick := func(ids []string) string { return ids[r.IntN(len(ids))] }
	base := time.Date(2026, 12, 30, 0, 0, 0, 0, time.UTC)
	zones := []*time.Location{time.UTC, time.FixedZone("", -10*3600), time.FixedZone("", 14*3600), time.FixedZone("", 3600)}
	var cs []model.Change
	var sessions []string
	for i := range 10 + r.IntN(30) {
		id := fmt.Sprintf("fs%d", i)
		sessions = append(sessions, id)
		at := base.Add(time.Duration(r.IntN(4*24*60)-2*24*60) * time.Minute).In(zones[r.IntN(len(zones))])
		f := map[string]any{"therapist_id": pick(accounts), "starts_at": at.Format(time.RFC3339),
			"status": []string{"planned", "done", "done", "cancelled"}[r.IntN(4)], "price_cents": int64(100 * (1 + r.IntN(90)))}
		if r.IntN(5) > 0 {
			f["profile_id"] = pick(profiles)
		}
		cs = append(cs, model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: id, Fields: f})
	}
	for i := range 10 + r.IntN(40) {
		day := base.AddDate(0, 0, r.IntN(5)-2)
		f := map[string]any{"account_id": pick(accounts), "kind": []string{"invoice", "invoice", "payment", "expense"}[r.IntN(4)],
			"status": []string{"unbilled", "billed", "paid"}[r.IntN(3)], "amount_cents": int64(r.IntN(20000) - 2000), "date": day.Format(time.DateOnly)}
		if r.IntN(3) > 0 {
			f["profile_id"] = pick(profiles)
		}
		if r.IntN(2) == 0 {
			f["session_id"] = pick(sessions)
		}
		cs = append(cs, model.Change{Entity: model.Transactions, Op: model.OpUpsert, ID: fmt.Sprintf("ft%d", i), Fields: f})
	}
	res, err := tn.Apply(context.Background(), store.Batch{ID: "finances", Origin: store.OriginPractice, Changes: cs})
	if err != nil {
		tb.Fatalf("Apply(finances) = %v", err)
	}
	for _, c := range res.Changes {
		if g.rows[c.Entity] == nil {
			g.rows[c.Entity] = map[string]map[string]any{}
		}
		if g.rows[c.Entity][c.ID] == nil {
			g.rows[c.Entity][c.ID] = map[string]any{}
		}
		for k, v := range c.Fields {
			g.rows[c.Entity][c.ID][k] = v
		}
	}
}

// referenceStats computes the figures straight from DESIGN §4's words over
// the rows account a sees (g.reference), without the SQL of ComputeStats.
func referenceStats(g *group, a, role string, from, to string, loc *time.Location) shardbuilder.Stats {
	var st shardbuilder.Stats
	in := func(day string) bool { return day >= from && day <= to }
	num := func(v any) int64 { n, _ := v.(int64); return n }
	billed := map[string]bool{} // sessions that a billed or paid invoice names
	for id, x := range g.rows[model.Transactions] {
		if !g.reference(a, role, model.Transactions, id) {
			continue
		}
		invoice := str(x["kind"]) == "invoice"
		if invoice && (str(x["status"]) == "billed" || str(x["status"]) == "paid") && str(x["session_id"]) != "" {
			billed[str(x["session_id"])] = true
		}
		if !in(str(x["date"])) {
			continue
		}
		switch {
		case invoice && str(x["status"]) == "paid":
			st.RevenueCents += num(x["amount_cents"])
			st.PaidCents += num(x["amount_cents"])
		case invoice && str(x["status"]) == "billed":
			st.RevenueCents += num(x["amount_cents"])
			st.OpenCents += num(x["amount_cents"])
		case str(x["kind"]) == "expense":
			n := num(x["amount_cents"])
			if n < 0 {
				n = -n
			}
			st.ExpensesCents += n
		}
	}
	st.ProfitCents = st.RevenueCents - st.ExpensesCents
	for id, s := range g.rows[model.Sessions] {
		if !g.reference(a, role, model.Sessions, id) || str(s["status"]) != "done" || billed[id] {
			continue
		}
		at, err := time.Parse(time.RFC3339, str(s["starts_at"]))
		if err != nil || !in(at.In(loc).Format(time.DateOnly)) {
			continue
		}
		st.UnbilledSessions++
		st.UnbilledCents += num(s["price_cents"])
	}
	return st
}

// TestStatsMatchReference: over random practice groups (all three roles,
// every status), in several time zones and for periods across month and
// year ends, the statistics equal the reference from DESIGN §4.
func TestStatsMatchReference(t *testing.T) {
	zones := []string{"Europe/Berlin", "America/New_York", "Pacific/Kiritimati", "UTC"}
	periods := [][2]string{{"2026-12-01", "2026-12-31"}, {"2027-01-01", "2027-01-31"}, {"2026-12-31", "2027-01-01"},
		{"2026-12-29", "2026-12-29"}, {"2026-11-01", "2027-02-28"}}
	for seed := range 12 {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			_, tn := newTenant(t)
			r := rand.New(rand.NewPCG(uint64(seed), 4))
			g := randomGroup(t, tn, r)
			addFinances(t, tn, g, r)
			var accounts []string
			for id := range g.rows[model.Accounts] {
				accounts = append(accounts, id)
			}
			sort.Strings(accounts)
			nonzero := 0
			for _, a := range accounts {
				role := str(g.rows[model.Accounts][a]["role"])
				path := filepath.Join(t.TempDir(), a+".db")
				if _, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}, a, path, time.Now()); err != nil {
					t.Fatalf("WriteFile(%s) = %v", a, err)
				}
				for _, zone := range zones {
					loc, _ := time.LoadLocation(zone)
					for _, p := range periods {
						period, err := shardbuilder.ParsePeriod(p[0], p[1], time.Now(), loc)
						if err != nil {
							t.Fatal(err)
						}
						got, err := shardbuilder.ComputeStats(context.Background(), path, period)
						if err != nil {
							t.Fatalf("ComputeStats = %v", err)
						}
						if want := referenceStats(g, a, role, p[0], p[1], loc); got != want {
							t.Errorf("%s (%s), %s %s…%s:\n got %+v\nwant %+v", a, role, zone, p[0], p[1], got, want)
						}
						if got.RevenueCents != 0 || got.UnbilledSessions != 0 {
							nonzero++
						}
					}
				}
			}
			if nonzero == 0 {
				t.Error("every figure was zero: the test compares nothing")
			}
		})
	}
}

// TestMonthToDate: the default period is this month up to today, in the
// tenant's zone (its month may not be UTC's).
func TestMonthToDate(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	now := time.Date(2026, 12, 31, 23, 30, 0, 0, time.UTC) // already 2027-01-01 in Berlin
	p, err := shardbuilder.ParsePeriod("", "", now, berlin)
	if err != nil || p.From.Format(time.DateOnly) != "2027-01-01" || p.To.Format(time.DateOnly) != "2027-01-01" {
		t.Errorf("default period at %s = %v…%v, %v; want 2027-01-01…2027-01-01", now, p.From, p.To, err)
	}
	p, err = shardbuilder.ParsePeriod("2026-12-15", "", now.Add(-time.Hour), berlin)
	if err != nil || p.From.Format(time.DateOnly) != "2026-12-15" || p.To.Format(time.DateOnly) != "2026-12-31" {
		t.Errorf("from only = %v…%v, %v; want 2026-12-15…2026-12-31", p.From, p.To, err)
	}
	for _, q := range [][2]string{{"2026-12-31", "2026-12-01"}, {"Dezember", ""}, {"", "2026-13-01"}} {
		if _, err := shardbuilder.ParsePeriod(q[0], q[1], now, berlin); err == nil {
			t.Errorf("ParsePeriod(%q, %q) = nil; want an error", q[0], q[1])
		}
	}
}
