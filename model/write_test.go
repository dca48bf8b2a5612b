package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/therasync/therasync/model"
)

func TestCanWrite(t *testing.T) {
	rows := map[string]map[string]map[string]any{
		model.Profiles: {
			"p-m1":     {"owner_id": "m1"},
			"p-m2":     {"owner_id": "m2"},
			"p-m3":     {"owner_id": "m3"},
			"p-all":    {"owner_id": "m3"},
			"p-course": {"owner_id": "m3"},
		},
		model.Accounts: {
			"m1": {"role": "member"},
		},
		model.Courses: {
			"c-m1": {"therapist_id": "m1"},
			"c-m2": {"therapist_id": "m2"},
		},
		model.Sessions: {
			"s-m1":   {"therapist_id": "m1", "profile_id": "p-m2"},
			"s-m2":   {"therapist_id": "m2", "profile_id": "p-m1"},
			"s-m3":   {"therapist_id": "m3", "profile_id": "p-m3"},
			"s-gone": {"therapist_id": "m3", "profile_id": "p-gone"},
		},
		model.CourseMembers: {
			"cm1": {"course_id": "c-m1", "profile_id": "p-course"},
		},
		model.Transactions: {
			"t-m1": {"account_id": "m1"},
			"t-m2": {"account_id": "m2"},
		},
		model.Attendances: {
			"a-m2": {"course_id": "c-m2"},
		},
		model.ProfileShares: {
			"sh1": {"profile_id": "p-m1", "account_id": "*"},
			"sh2": {"profile_id": "p-all", "account_id": "*"},
		},
	}
	lookup := mapRows(rows)
	member := model.Viewer{ID: "m1", Role: model.RoleMember}
	secretary := model.Viewer{ID: "s1", Role: model.RoleSecretary}
	admin := model.Viewer{ID: "a1", Role: model.RoleAdmin}
	up := func(entity, id string, f map[string]any) model.Change {
		return model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
	}
	del := func(entity, id string) model.Change { return model.Change{Entity: entity, Op: model.OpDelete, ID: id} }
	tests := []struct {
		name string
		v    model.Viewer
		c    model.Change
		ok   bool
	}{
		{"member creates own profile", member, up("profiles", newID, map[string]any{"owner_id": "m1", "first_name": "A"}), true},
		{"member creates a profile for another", member, up("profiles", newID, map[string]any{"owner_id": "m2"}), false},
		{"member creates a profile without owner", member, up("profiles", newID, map[string]any{"first_name": "A"}), false},
		{"member updates own profile", member, up("profiles", "p-m1", map[string]any{"phone": "1"}), true},
		{"member updates another's profile", member, up("profiles", "p-m2", map[string]any{"phone": "1"}), false},
		{"member gives its profile away", member, up("profiles", "p-m1", map[string]any{"owner_id": "m2"}), false},
		{"member deletes own profile", member, del("profiles", "p-m1"), false},
		{"member shares own profile", member, up("profile_shares", newID, map[string]any{"profile_id": "p-m1", "account_id": "m2", "shared_by": "m1"}), true},
		{"member shares another's profile", member, up("profile_shares", newID, map[string]any{"profile_id": "p-m2", "account_id": "m3"}), false},
		{"member shares in another's name", member, up("profile_shares", newID, map[string]any{"profile_id": "p-m1", "account_id": "m2", "shared_by": "m2"}), false},
		{"member changes a share", member, up("profile_shares", "sh1", map[string]any{"account_id": "m2"}), false},
		{"admin changes a share", admin, up("profile_shares", "sh1", map[string]any{"account_id": "m2"}), false},
		{"admin deletes a share", admin, del("profile_shares", "sh1"), false},
		{"member creates a session as therapist", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "protocol": "x"}), true},
		{"member creates a session on a profile it sees", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-m1"}), true},
		{"member creates a session on a profile shared to all", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-all"}), true},
		{"member creates a session on a profile it does not see", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-m3"}), false},
		{"member creates a session on an unknown profile", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-none"}), false},
		{"member moves its session onto a profile it does not see", member, up("sessions", "s-m1", map[string]any{"profile_id": "p-m3"}), false},
		{"member keeps its session on the profile it gives sight of", member, up("sessions", "s-m1", map[string]any{"profile_id": "p-m2", "status": "done"}), true},
		{"member creates a session on its course member's profile", member, up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-course"}), true},
		{"member creates a profile whose id sessions name", member, up("profiles", "p-gone", map[string]any{"owner_id": "m1"}), false},
		{"member books on a profile it does not see", member, up("transactions", newID, map[string]any{"account_id": "m1", "profile_id": "p-m3"}), false},
		{"member books on a profile it sees", member, up("transactions", newID, map[string]any{"account_id": "m1", "profile_id": "p-m1"}), true},
		{"member books on a session it does not see", member, up("transactions", newID, map[string]any{"account_id": "m1", "session_id": "s-m3"}), false},
		{"member books on its own session", member, up("transactions", newID, map[string]any{"account_id": "m1", "session_id": "s-m1"}), true},
		{"member checks in a profile it does not see", member, up("attendances", newID, map[string]any{"course_id": "c-m1", "profile_id": "p-m3"}), false},
		{"member checks in its course member", member, up("attendances", newID, map[string]any{"course_id": "c-m1", "profile_id": "p-course"}), true},
		{"member checks a Springer in", member, up("attendances", newID, map[string]any{"course_id": "c-m1", "profile_id": "p-course", "springer": true}), false},
		{"member writes protocol of own session", member, up("sessions", "s-m1", map[string]any{"protocol": "Befund"}), true},
		{"member writes another's session", member, up("sessions", "s-m2", map[string]any{"protocol": "x"}), false},
		{"member hands its session over", member, up("sessions", "s-m1", map[string]any{"therapist_id": "m2"}), false},
		{"member checks in at own course", member, up("attendances", newID, map[string]any{"course_id": "c-m1", "profile_id": "p-m2"}), true},
		{"member checks in at another's course", member, up("attendances", newID, map[string]any{"course_id": "c-m2"}), false},
		{"member moves another's attendance to own course", member, up("attendances", "a-m2", map[string]any{"course_id": "c-m1"}), false},
		{"member books own transaction", member, up("transactions", newID, map[string]any{"account_id": "m1", "kind": "invoice"}), true},
		{"member books for another", member, up("transactions", newID, map[string]any{"account_id": "m2"}), false},
		{"member edits another's transaction", member, up("transactions", "t-m2", map[string]any{"status": "paid"}), false},
		{"member writes a course", member, up("courses", "c-m1", map[string]any{"title": "x"}), false},
		{"member writes an account", member, up("accounts", "m1", map[string]any{"role": "admin"}), false},
		{"secretary writes a profile", secretary, up("profiles", "p-m2", map[string]any{"phone": "1"}), true},
		{"secretary reschedules a session", secretary, up("sessions", "s-m2", map[string]any{"starts_at": "2026-11-23T09:00:00Z", "status": "planned", "price_cents": int64(1), "duration_min": int64(30)}), true},
		{"secretary writes a protocol", secretary, up("sessions", "s-m2", map[string]any{"protocol": "x"}), false},
		{"secretary reassigns a session", secretary, up("sessions", "s-m2", map[string]any{"therapist_id": "m1"}), false},
		{"secretary creates a session", secretary, up("sessions", newID, map[string]any{"status": "planned"}), false},
		{"secretary books a transaction", secretary, up("transactions", newID, map[string]any{"account_id": "m2"}), true},
		{"secretary checks a participant in", secretary, up("attendances", newID, map[string]any{"course_id": "c-m2"}), true},
		{"secretary writes a course", secretary, up("courses", "c-m2", map[string]any{"capacity": int64(3)}), false},
		{"secretary deletes a profile", secretary, del("profiles", "p-m2"), false},
		{"admin writes anything", admin, up("accounts", "m1", map[string]any{"role": "secretary"}), true},
		{"admin deletes a session", admin, del("sessions", "s-m2"), true},
		{"member creates a profile under a practice-style id", member, up("profiles", "p9", map[string]any{"owner_id": "m1"}), false},
		{"member creates a share under a practice-style id", member, up("profile_shares", "sh9", map[string]any{"profile_id": "p-m1", "account_id": "m2"}), false},
		{"secretary creates a transaction under a practice-style id", secretary, up("transactions", "t9", map[string]any{"account_id": "m2"}), false},
		{"admin creates an account under a practice-style id", admin, up("accounts", "m9", map[string]any{"role": "member"}), false},
		{"admin creates an account under a UUID", admin, up("accounts", newID, map[string]any{"role": "member"}), true},
		{"no role writes nothing", model.Viewer{ID: "x"}, up("profiles", newID, map[string]any{"owner_id": "x"}), false},
		{"admin erases a profile", admin, model.Change{Entity: model.Profiles, Op: model.OpErase, ID: "p-m2"}, false},
		{"secretary erases a profile", secretary, model.Change{Entity: model.Profiles, Op: model.OpErase, ID: "p-m2"}, false},
		{"member erases its own profile", member, model.Change{Entity: model.Profiles, Op: model.OpErase, ID: "p-m1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := model.CanWrite(tt.v, 0, tt.c, rows[tt.c.Entity][tt.c.ID], lookup)
			if tt.ok && err != nil {
				t.Errorf("CanWrite(%s, %+v) = %v; want allowed", tt.v.Role, tt.c, err)
			}
			if !tt.ok && !errors.Is(err, model.ErrForbidden) {
				t.Errorf("CanWrite(%s, %+v) = %v; want ErrForbidden", tt.v.Role, tt.c, err)
			}
		})
	}
}

// newID is the UUID a device gives a row it creates.
const newID = "0b7e4d1a-9c1f-4c44-9b0a-2f5e1d3c4a5b"

// mapRows reads rows held in a map: entity → id → fields.
type mapRows map[string]map[string]map[string]any

func (m mapRows) Row(entity, id string) (map[string]any, error) { return m[entity][id], nil }

func (m mapRows) Find(entity string, match map[string]string) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	for id, f := range m[entity] {
		ok := true
		for k, v := range match {
			if s, _ := f[k].(string); s != v {
				ok = false
			}
		}
		if ok {
			out[id] = f
		}
	}
	return out, nil
}

// unseenUUID is a device-made row's id that a member may have learnt but
// does not see.
const unseenUUID = "11111111-2222-4333-8444-555555555555"

// TestSharedProfileStaysForDevices: a shared profile cannot be deleted by
// a device, an admin's included (DESIGN §4: only the practice erases it).
func TestSharedProfileStaysForDevices(t *testing.T) {
	rows := mapRows{
		model.Profiles:      {"p1": {"owner_id": "m1"}, "p2": {"owner_id": "m1"}},
		model.ProfileShares: {"sh1": {"profile_id": "p1", "account_id": "*"}},
	}
	admin := model.Viewer{ID: "a1", Role: model.RoleAdmin}
	if err := model.CanWrite(admin, 0, model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p1"}, rows[model.Profiles]["p1"], rows); !errors.Is(err, model.ErrForbidden) {
		t.Errorf("an admin's device deleting shared profile p1 = %v; want forbidden", err)
	}
	if err := model.CanWrite(admin, 0, model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p2"}, rows[model.Profiles]["p2"], rows); err != nil {
		t.Errorf("an admin's device deleting unshared p2 = %v; want allowed", err)
	}
}

// TestCanWriteRevealsNothing checks that a member's refused write reads
// the same whether the row it names exists unseen or does not exist.
func TestCanWriteRevealsNothing(t *testing.T) {
	rows := mapRows{
		model.Profiles:      {"p-other": {"owner_id": "m2"}, "p-own": {"owner_id": "m1"}},
		model.Sessions:      {"s-other": {"therapist_id": "m2", "profile_id": "p-other"}, "s-seen": {"therapist_id": "m2", "profile_id": "p-own"}},
		model.Courses:       {"c-other": {"therapist_id": "m2"}},
		model.ProfileShares: {"sh-other": {"profile_id": "p-other", "account_id": "m2"}},
	}
	member := model.Viewer{ID: "m1", Role: model.RoleMember}
	up := func(entity, id string, f map[string]any) model.Change {
		return model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
	}
	pairs := []struct {
		name         string
		exists, none model.Change
	}{
		{"session onto a profile", up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-other"}), up("sessions", newID, map[string]any{"therapist_id": "m1", "profile_id": "p-none"})},
		{"transaction on a profile", up("transactions", newID, map[string]any{"account_id": "m1", "profile_id": "p-other"}), up("transactions", newID, map[string]any{"account_id": "m1", "profile_id": "p-none"})},
		{"transaction on a session", up("transactions", newID, map[string]any{"account_id": "m1", "session_id": "s-other"}), up("transactions", newID, map[string]any{"account_id": "m1", "session_id": "s-none"})},
		{"share of a profile", up("profile_shares", newID, map[string]any{"profile_id": "p-other", "account_id": "m3"}), up("profile_shares", newID, map[string]any{"profile_id": "p-none", "account_id": "m3"})},
		{"check-in at a course", up("attendances", newID, map[string]any{"course_id": "c-other"}), up("attendances", newID, map[string]any{"course_id": "c-none"})},
		{"write of a profile unseen or absent", up("profiles", "p-other", map[string]any{"owner_id": "m1"}), up("profiles", "p-none", map[string]any{"owner_id": "m1"})},
		{"write of a share unseen or absent", up("profile_shares", "sh-other", map[string]any{"account_id": "m1"}), up("profile_shares", "sh-none", map[string]any{"profile_id": "p-own", "account_id": "m1"})},
		{"write of a session unseen or absent", up("sessions", "s-other", map[string]any{"therapist_id": "m1"}), up("sessions", "s-none", map[string]any{"therapist_id": "m1"})},
		{"delete of a profile unseen or absent", model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p-other"}, model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p-none"}},
		{"delete of a session unseen or absent", model.Change{Entity: model.Sessions, Op: model.OpDelete, ID: "s-other"}, model.Change{Entity: model.Sessions, Op: model.OpDelete, ID: "s-none"}},
		{"upsert under an unseen UUID or a free one", up("profiles", unseenUUID, map[string]any{"owner_id": "m2"}), up("profiles", newID, map[string]any{"owner_id": "m2"})},
		{"update of a session seen or not", up("sessions", "s-other", map[string]any{"status": "done"}), up("sessions", "s-seen", map[string]any{"status": "done"})},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			e1 := model.CanWrite(member, 0, p.exists, rows[p.exists.Entity][p.exists.ID], rows)
			e2 := model.CanWrite(member, 0, p.none, rows[p.none.Entity][p.none.ID], rows)
			if e1 == nil || e2 == nil {
				t.Fatalf("want both refused, got %v and %v", e1, e2)
			}
			m1 := strings.ReplaceAll(e1.Error(), p.exists.ID, "ID")
			m2 := strings.ReplaceAll(e2.Error(), p.none.ID, "ID")
			if m1 != m2 {
				t.Errorf("refusals differ:\n  %s\n  %s", m1, m2)
			}
		})
	}
}
