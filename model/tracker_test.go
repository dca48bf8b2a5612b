package model_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/therasync/therasync/model"
)

// TestTrackerAgreesWithNewScope applies random changes to a Tracker and to
// plain Links, and checks after each one that every followed member's sets,
// row visibility, viewers and reported shifts agree with NewScope computed
// from scratch.
func TestTrackerAgreesWithNewScope(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			members := []string{"m1", "m2", "m3"}
			pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
			profiles := []string{"p1", "p2", "p3", "p4", ""}
			courses := []string{"c1", "c2", "c3"}
			random := func() model.Change {
				e := pick(model.Profiles, model.ProfileShares, model.Sessions, model.Courses, model.CourseMembers, model.Attendances, model.Transactions, model.Accounts)
				var id string
				var f map[string]any
				switch e {
				case model.Profiles:
					id, f = pick(profiles[:4]...), map[string]any{"owner_id": pick(append(members, "a1")...)}
				case model.ProfileShares:
					id, f = fmt.Sprint("sh", r.IntN(6)), map[string]any{"profile_id": pick(profiles...), "account_id": pick(append(members, model.ShareAll)...)}
				case model.Sessions:
					id, f = fmt.Sprint("s", r.IntN(6)), map[string]any{"profile_id": pick(profiles...), "therapist_id": pick(append(members, "a1")...)}
				case model.Courses:
					id, f = pick(courses...), map[string]any{"therapist_id": pick(append(members, "a1")...)}
				case model.CourseMembers:
					id, f = fmt.Sprint("cm", r.IntN(6)), map[string]any{"course_id": pick(courses...), "profile_id": pick(profiles...)}
				case model.Attendances:
					id, f = fmt.Sprint("at", r.IntN(4)), map[string]any{"course_id": pick(courses...)}
				case model.Transactions:
					id, f = fmt.Sprint("t", r.IntN(4)), map[string]any{"account_id": pick(members...), "profile_id": pick(profiles...)}
				default:
					id, f = pick(members...), map[string]any{"name": "x"}
				}
				if r.IntN(6) == 0 {
					return model.Change{Entity: e, Op: model.OpDelete, ID: id}
				}
				// Sometimes only one of the link fields.
				if r.IntN(3) == 0 {
					for k := range f {
						if r.IntN(2) == 0 && len(f) > 1 {
							delete(f, k)
						}
					}
				}
				return model.Change{Entity: e, Op: model.OpUpsert, ID: id, Fields: f}
			}
			plain := model.NewLinks()
			tr := model.NewTracker(model.NewLinks())
			// Start with some rows, then follow m1 and m2 (m3 later).
			for range 20 {
				c := random()
				plain.Apply(c)
				tr.Apply(c)
			}
			tr.Follow("m1")
			tr.Follow("m2")
			for step := range 300 {
				if step == 100 {
					tr.Follow("m3")
				}
				if step == 200 {
					tr.Unfollow("m2")
				}
				if step%37 == 36 { // following again counts from the indexes kept meanwhile
					m := pick("m1", "m3")
					tr.Unfollow(m)
					tr.Follow(m)
				}
				c := random()
				old := map[string]*model.Scope{}
				for _, m := range members {
					old[m] = model.NewScope(model.Viewer{ID: m, Role: model.RoleMember}, plain)
				}
				before, existed := plain.Get(c.Entity, c.ID)
				// The viewers of the row before and after must include
				// everyone who sees it.
				cands := map[string]bool{}
				tr.Viewers(c.Entity, c.ID, before, func(m string) { cands[m] = true })
				tb, tex, shifts := tr.Apply(c)
				if tb != before || tex != existed {
					t.Fatalf("step %d: Apply(%+v) before = %v %v; want %v %v", step, c, tb, tex, before, existed)
				}
				plain.Apply(c)
				after, exists := plain.Get(c.Entity, c.ID)
				tr.Viewers(c.Entity, c.ID, after, func(m string) { cands[m] = true })
				for _, m := range members {
					if !tr.Following(m) {
						continue
					}
					v := model.Viewer{ID: m, Role: model.RoleMember}
					want := model.NewScope(v, plain)
					got := tr.Scope(m)
					if !sameSet(got.Profiles, want.Profiles) || !sameSet(got.Courses, want.Courses) {
						t.Fatalf("step %d after %+v: %s sees %v %v; NewScope %v %v", step, c, m, keys(got.Profiles), keys(got.Courses), keys(want.Profiles), keys(want.Courses))
					}
					if exists && tr.SeesRow(m, c.Entity, c.ID, after) != want.SeesRow(c.Entity, c.ID, after) {
						t.Fatalf("step %d: SeesRow(%s, %+v) = %v; NewScope says %v", step, m, c, !want.SeesRow(c.Entity, c.ID, after), want.SeesRow(c.Entity, c.ID, after))
					}
					seen := existed && old[m].SeesRow(c.Entity, c.ID, before) || exists && want.SeesRow(c.Entity, c.ID, after)
					if seen && !cands[m] {
						t.Fatalf("step %d: Viewers of %+v miss %s", step, c, m)
					}
					var shift model.Shift
					for _, s := range shifts {
						if s.Member == m {
							shift = s
						}
					}
					gp, gc := grown(old[m].Profiles, want.Profiles), grown(old[m].Courses, want.Courses)
					lp, lc := grown(want.Profiles, old[m].Profiles), grown(want.Courses, old[m].Courses)
					shrank := len(lp) > 0 || len(lc) > 0
					sort.Strings(shift.Profiles)
					sort.Strings(shift.Courses)
					sort.Strings(shift.LostProfiles)
					sort.Strings(shift.LostCourses)
					if !slices.Equal(shift.Profiles, gp) || !slices.Equal(shift.Courses, gc) || shift.Shrank != shrank ||
						!slices.Equal(shift.LostProfiles, lp) || !slices.Equal(shift.LostCourses, lc) {
						t.Fatalf("step %d after %+v: shift of %s = %+v; want gained %v %v, lost %v %v", step, c, m, shift, gp, gc, lp, lc)
					}
					// What hangs on a lost profile: the rows the member saw
					// through it.
					for _, p := range lp {
						var hanging []string
						for _, r := range tr.Hanging(model.SetProfiles, p) {
							hanging = append(hanging, r.Entity+"/"+r.ID)
						}
						sort.Strings(hanging)
						if want := hangingOn(plain, p); !slices.Equal(hanging, want) {
							t.Fatalf("step %d: Hanging(%s) = %v; want %v", step, p, hanging, want)
						}
					}
					// Every other row: SawRow tells what the member saw before.
					if shrank {
						continue
					}
					for _, e := range []string{model.Profiles, model.ProfileShares, model.Sessions, model.Courses, model.CourseMembers, model.Attendances, model.Transactions} {
						for i := range 8 {
							for _, id := range []string{fmt.Sprint(map[string]string{model.Profiles: "p", model.Courses: "c"}[e], i), fmt.Sprint("sh", i), fmt.Sprint("s", i), fmt.Sprint("cm", i), fmt.Sprint("at", i), fmt.Sprint("t", i)} {
								r, ok := plain.Get(e, id)
								if !ok || e == c.Entity && id == c.ID {
									continue
								}
								if got, want := tr.SawRow(m, e, id, r, shift), old[m].SeesRow(e, id, r); got != want {
									t.Fatalf("step %d after %+v: SawRow(%s, %s/%s) = %v; want %v", step, c, m, e, id, got, want)
								}
							}
						}
					}
				}
			}
		})
	}
}

// hangingOn returns the rows of l whose member rule tests profile p by
// the fields DESIGN §4 names (the profile itself, and the shares,
// sessions and transactions naming it), as entity/id, sorted.
func hangingOn(l *model.Links, p string) []string {
	var out []string
	if _, ok := l.Get(model.Profiles, p); ok {
		out = append(out, model.Profiles+"/"+p)
	}
	for _, e := range []string{model.ProfileShares, model.Sessions, model.Transactions} {
		for i := range 8 {
			for _, id := range []string{fmt.Sprint("sh", i), fmt.Sprint("s", i), fmt.Sprint("t", i)} {
				r, ok := l.Get(e, id)
				a, b := model.LinkFields(e)
				if ok && (a == "profile_id" && r.A == p || b == "profile_id" && r.B == p) {
					out = append(out, e+"/"+id)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func sameSet(a, b map[string]bool) bool {
	return len(grown(a, b)) == 0 && len(grown(b, a)) == 0
}

// grown returns the keys of b missing in a, sorted.
func grown(a, b map[string]bool) []string {
	var out []string
	for k := range b {
		if !a[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string { return grown(nil, m) }

// BenchmarkTrackerFollow measures following one member in a tenant of
// 2,000 members with 20,000 profiles, 80,000 sessions and 200 courses, as a
// syncd does when a member's first device joins the live stream. Run:
//
//	go test -run '^$' -bench TrackerFollow ./model/
func BenchmarkTrackerFollow(b *testing.B) {
	l := model.NewLinks()
	for i := range 20000 {
		l.Set(model.Profiles, fmt.Sprint("p", i), model.LinkRow{A: fmt.Sprint("m", i%2000)})
	}
	for i := range 80000 {
		l.Set(model.Sessions, fmt.Sprint("s", i), model.LinkRow{A: fmt.Sprint("p", i%20000), B: fmt.Sprint("m", i%2000)})
	}
	for i := range 200 {
		l.Set(model.Courses, fmt.Sprint("c", i), model.LinkRow{A: fmt.Sprint("m", i)})
		for j := range 12 {
			l.Set(model.CourseMembers, fmt.Sprint("cm", i, "-", j), model.LinkRow{A: fmt.Sprint("c", i), B: fmt.Sprint("p", i*12+j)})
		}
	}
	tr := model.NewTracker(l)
	b.ResetTimer()
	for i := range b.N {
		m := fmt.Sprint("m", i%2000)
		tr.Follow(m)
		tr.Unfollow(m)
	}
}
