package model_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/therasync/therasync/model"
)

// TestNaming: the fields that name a row of an entity, from the policy's
// tables and the schema's <entity>_id convention.
func TestNaming(t *testing.T) {
	for _, tt := range []struct {
		target, want string
	}{
		{model.Profiles, "[{attendances profile_id} {course_members profile_id} {profile_shares profile_id} {sessions profile_id} {transactions profile_id}]"},
		{model.Sessions, "[{transactions session_id}]"},
		{model.Courses, "[{attendances course_id} {course_members course_id}]"},
		{model.Accounts, "[{courses therapist_id} {profile_shares account_id} {profiles owner_id} {sessions therapist_id} {transactions account_id}]"},
		{model.ProfileShares, "[]"},
		{model.Transactions, "[]"},
	} {
		if got := fmt.Sprint(model.Naming(tt.target)); got != tt.want {
			t.Errorf("Naming(%s) = %s; want %s", tt.target, got, tt.want)
		}
	}
}

// eraseRows is a tenant for Erase: current rows and a change log.
type eraseRows struct {
	mapRows
	log []model.Change
	err error
}

func (e eraseRows) Find(entity string, match map[string]string) (map[string]map[string]any, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.mapRows.Find(entity, match)
}

func (e eraseRows) Logged(entity, field, value string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, c := range e.log {
		if c.Entity == entity && c.Fields[field] == value && !seen[c.ID] {
			seen[c.ID] = true
			out = append(out, c.ID)
		}
	}
	return out, nil
}

func TestErase(t *testing.T) {
	up := func(entity, id string, f map[string]any) model.Change {
		return model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
	}
	tenant := eraseRows{
		mapRows: mapRows{
			model.Profiles: {"p1": {"owner_id": "m1"}, "p2": {"owner_id": "m1"}},
			model.Sessions: {
				"s1": {"profile_id": "p1", "therapist_id": "m2"},
				"s2": {"profile_id": "p2", "therapist_id": "m2"},
				"s8": {"profile_id": "p2", "therapist_id": "m2"}, // was p1's
			},
			model.ProfileShares: {"sh1": {"profile_id": "p1", "account_id": "*"}, "sh2": {"profile_id": "p2", "account_id": "m2"}},
			model.CourseMembers: {"cm1": {"course_id": "c1", "profile_id": "p1"}, "cm2": {"course_id": "c1", "profile_id": "p2"}},
			model.Attendances:   {"at1": {"course_id": "c1", "profile_id": "p1"}, "at2": {"course_id": "c1", "profile_id": "p2"}},
			model.Transactions: {
				"t1": {"account_id": "m1", "profile_id": "p1"},
				"t2": {"account_id": "m1", "session_id": "s1"}, // p1's by its session
				"t3": {"account_id": "m1", "profile_id": "p2"},
				"t4": {"account_id": "m1", "session_id": "s2"},
				"t8": {"account_id": "m1"}, // named s9 once
			},
			model.Courses: {"c1": {"therapist_id": "m2"}},
		},
		log: []model.Change{
			up(model.Sessions, "s8", map[string]any{"profile_id": "p1"}),
			up(model.Sessions, "s9", map[string]any{"profile_id": "p1", "protocol": "x"}), // deleted since
			up(model.Transactions, "t9", map[string]any{"session_id": "s9"}),              // deleted since
			up(model.Transactions, "t8", map[string]any{"session_id": "s9"}),
			up(model.Sessions, "s1", map[string]any{"profile_id": "p1"}),
			up(model.Sessions, "s8", map[string]any{"profile_id": "p2"}),
		},
	}
	for _, tt := range []struct {
		name              string
		id                string
		look              eraseRows
		delete, scrub, kp string
	}{
		{"a profile with rows, past rows and a row moved away", "p1", tenant,
			"[{transactions t2} {transactions t1} {sessions s1} {profile_shares sh1} {course_members cm1} {attendances at1} {profiles p1}]",
			"[{profiles p1} {attendances at1} {course_members cm1} {profile_shares sh1} {sessions s1} {sessions s9} {transactions t1} {transactions t2} {transactions t9} {sessions s8} {transactions t8}]",
			"[{sessions s8} {transactions t8}]"},
		{"another profile of the tenant", "p2", tenant,
			"[{transactions t4} {transactions t3} {sessions s8} {sessions s2} {profile_shares sh2} {course_members cm2} {attendances at2} {profiles p2}]",
			"[{profiles p2} {attendances at2} {course_members cm2} {profile_shares sh2} {sessions s2} {sessions s8} {transactions t3} {transactions t4}]",
			"[]"},
		{"a profile that never existed", "p0", tenant, "[]", "[{profiles p0}]", "[]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			er, err := model.Erase(tt.id, tt.look)
			if err != nil {
				t.Fatalf("Erase(%s) = %v", tt.id, err)
			}
			for _, got := range []struct{ name, got, want string }{
				{"Delete", fmt.Sprint(er.Delete), tt.delete},
				{"Scrub", fmt.Sprint(er.Scrub), tt.scrub},
				{"Keep", fmt.Sprint(er.Keep), tt.kp},
			} {
				if got.got != got.want {
					t.Errorf("Erase(%s).%s = %s; want %s", tt.id, got.name, got.got, got.want)
				}
			}
		})
	}
	broken := tenant
	broken.err = errors.New("disk on fire")
	if _, err := model.Erase("p1", broken); !errors.Is(err, broken.err) {
		t.Errorf("Erase with a failing lookup = %v; want its error", err)
	}
}

// erasedRows is a tenant with erased rows.
type erasedRows struct {
	mapRows
	erased map[model.RowRef]bool
}

func (e erasedRows) Erased(entity, id string) (bool, error) {
	return e.erased[model.RowRef{Entity: entity, ID: id}], nil
}

// TestRefuseErased: a device's write does not bring an erased row back,
// by its id or by naming it; a row the practice created again is written
// as any other.
func TestRefuseErased(t *testing.T) {
	look := erasedRows{
		mapRows: mapRows{model.Profiles: {"p-back": {"owner_id": "m1"}}, model.Sessions: {"s-ok": {"profile_id": "p-ok"}}},
		erased: map[model.RowRef]bool{
			{Entity: model.Profiles, ID: "p-gone"}: true, {Entity: model.Profiles, ID: "p-back"}: true,
			{Entity: model.Sessions, ID: "s-gone"}: true,
		},
	}
	up := func(entity, id string, f map[string]any) model.Change {
		return model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
	}
	for _, tt := range []struct {
		name string
		c    model.Change
		ok   bool
	}{
		{"the erased profile written again", up(model.Profiles, "p-gone", map[string]any{"phone": "1"}), false},
		{"a new session of the erased profile", up(model.Sessions, newID, map[string]any{"profile_id": "p-gone", "protocol": "x"}), false},
		{"an existing session moved onto the erased profile", up(model.Sessions, "s-ok", map[string]any{"profile_id": "p-gone"}), false},
		{"a payment of an erased session", up(model.Transactions, newID, map[string]any{"session_id": "s-gone", "amount_cents": int64(1)}), false},
		{"a check-in of the erased profile", up(model.Attendances, newID, map[string]any{"profile_id": "p-gone", "course_id": "c1"}), false},
		{"a profile the practice created again", up(model.Profiles, "p-back", map[string]any{"phone": "1"}), true},
		{"a session of a profile created again", up(model.Sessions, newID, map[string]any{"profile_id": "p-back"}), true},
		{"a session of another profile", up(model.Sessions, "s-ok", map[string]any{"protocol": "x"}), true},
		{"a delete", model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p-gone"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := look.Row(tt.c.Entity, tt.c.ID)
			err := model.RefuseErased(0, tt.c, before, look)
			if tt.ok && err != nil || !tt.ok && !errors.Is(err, model.ErrForbidden) {
				t.Errorf("RefuseErased(%+v) = %v; want allowed %v", tt.c, err, tt.ok)
			}
		})
	}
}
