package main

import (
	"testing"
	"time"

	"github.com/therasync/therasync/model"
)

// TestDemoShowsThePolicy: in the demo a member sees its own patients, a few
// shared ones, the ones shared to everybody and those of its sessions and
// courses — clearly not nearly all 200.
func TestDemoShowsThePolicy(t *testing.T) {
	links := model.NewLinks()
	owners := map[string]string{}
	var starShared []string
	for _, batch := range demoData(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), "09", 500) {
		for _, c := range batch {
			links.Apply(model.Change{Entity: c.Entity, Op: model.Op(c.Op), ID: c.ID, Fields: c.Fields})
			if c.Entity == model.Profiles {
				owners[c.ID], _ = c.Fields["owner_id"].(string)
			}
			if c.Entity == model.ProfileShares && c.Fields["account_id"] == model.ShareAll {
				starShared = append(starShared, c.Fields["profile_id"].(string))
			}
		}
	}
	if len(starShared) == 0 {
		t.Fatal("the demo shares no profile to * (every member)")
	}
	for _, a := range demoAccounts {
		if a.Role != model.RoleMember {
			continue
		}
		t.Run(a.ID, func(t *testing.T) {
			sees := model.NewScope(model.Viewer{ID: a.ID, Role: model.RoleMember}, links).Profiles
			own := 0
			for p, o := range owners {
				if o == a.ID {
					own++
					if !sees[p] {
						t.Errorf("%s does not see its own patient %s", a.ID, p)
					}
				}
			}
			for _, p := range starShared {
				if !sees[p] {
					t.Errorf("%s does not see %s, shared to *", a.ID, p)
				}
			}
			others := len(sees) - own
			t.Logf("%s sees %d of %d patients: %d its own, %d by shares, sessions and courses", a.ID, len(sees), len(owners), own, others)
			if others < len(starShared) || len(sees) > len(owners)/2 {
				t.Errorf("%s sees %d patients (%d its own); want its own, a few more, and at most half of %d", a.ID, len(sees), own, len(owners))
			}
		})
	}
}
