package model_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/therasync/therasync/model"
)

// fixture is a small practice group:
//
//	p-own     owned by m1
//	p-shared  owned by m2, shared to m1
//	p-star    owned by m2, shared to * (before m3 existed)
//	p-ses     owned by m2, m1 is the therapist of one of its sessions
//	p-course  owned by m2, member of course c1 whose therapist is m1
//	p-other   owned by m2, nothing links it to m1
func fixture() *model.Links {
	l := model.NewLinks()
	for id, owner := range map[string]string{"p-own": "m1", "p-shared": "m2", "p-star": "m2", "p-ses": "m2", "p-course": "m2", "p-other": "m2"} {
		l.Set(model.Profiles, id, model.LinkRow{A: owner})
	}
	l.Set(model.ProfileShares, "sh1", model.LinkRow{A: "p-shared", B: "m1"})
	l.Set(model.ProfileShares, "sh2", model.LinkRow{A: "p-star", B: model.ShareAll})
	l.Set(model.Sessions, "s1", model.LinkRow{A: "p-ses", B: "m1"})
	l.Set(model.Sessions, "s2", model.LinkRow{A: "p-other", B: "m2"})
	l.Set(model.Courses, "c1", model.LinkRow{A: "m1"})
	l.Set(model.Courses, "c2", model.LinkRow{A: "m2"})
	l.Set(model.CourseMembers, "cm1", model.LinkRow{A: "c1", B: "p-course"})
	l.Set(model.CourseMembers, "cm2", model.LinkRow{A: "c2", B: "p-other"})
	return l
}

func TestPolicyRows(t *testing.T) {
	l := fixture()
	type row struct {
		entity, id string
		fields     map[string]any
	}
	tests := []struct {
		name   string
		viewer model.Viewer
		row    row
		want   bool
	}{
		{"owner sees own profile", model.Viewer{"m1", "member"}, row{"profiles", "p-own", nil}, true},
		{"single-member share", model.Viewer{"m1", "member"}, row{"profiles", "p-shared", nil}, true},
		{"share to another member is not for m3", model.Viewer{"m3", "member"}, row{"profiles", "p-shared", nil}, false},
		{"* share reaches a member created after it", model.Viewer{"m3", "member"}, row{"profiles", "p-star", nil}, true},
		{"therapist of a session sees its profile", model.Viewer{"m1", "member"}, row{"profiles", "p-ses", nil}, true},
		{"therapist of a course sees its members' profiles", model.Viewer{"m1", "member"}, row{"profiles", "p-course", nil}, true},
		{"unlinked profile is hidden", model.Viewer{"m1", "member"}, row{"profiles", "p-other", nil}, false},
		{"session as therapist", model.Viewer{"m1", "member"}, row{"sessions", "s9", map[string]any{"therapist_id": "m1", "profile_id": "p-other"}}, true},
		{"session of a visible profile", model.Viewer{"m1", "member"}, row{"sessions", "s8", map[string]any{"therapist_id": "m2", "profile_id": "p-shared"}}, true},
		{"session of a hidden profile", model.Viewer{"m1", "member"}, row{"sessions", "s7", map[string]any{"therapist_id": "m2", "profile_id": "p-other"}}, false},
		{"share of a visible profile", model.Viewer{"m1", "member"}, row{"profile_shares", "sh1", map[string]any{"profile_id": "p-star", "account_id": "*"}}, true},
		{"share of a hidden profile", model.Viewer{"m1", "member"}, row{"profile_shares", "sh2", map[string]any{"profile_id": "p-other", "account_id": "m4"}}, false},
		{"own course", model.Viewer{"m1", "member"}, row{"courses", "c1", map[string]any{"therapist_id": "m1"}}, true},
		{"another's course", model.Viewer{"m1", "member"}, row{"courses", "c2", map[string]any{"therapist_id": "m2"}}, false},
		{"member of own course", model.Viewer{"m1", "member"}, row{"course_members", "cm1", map[string]any{"course_id": "c1", "profile_id": "p-course"}}, true},
		{"member of another's course, even of a visible profile", model.Viewer{"m1", "member"}, row{"course_members", "cm2", map[string]any{"course_id": "c2", "profile_id": "p-own"}}, false},
		{"attendance of own course", model.Viewer{"m1", "member"}, row{"attendances", "at1", map[string]any{"course_id": "c1"}}, true},
		{"attendance of another's course", model.Viewer{"m1", "member"}, row{"attendances", "at2", map[string]any{"course_id": "c2"}}, false},
		{"own transaction", model.Viewer{"m1", "member"}, row{"transactions", "t1", map[string]any{"account_id": "m1", "profile_id": "p-other"}}, true},
		{"transaction of a visible profile", model.Viewer{"m1", "member"}, row{"transactions", "t2", map[string]any{"account_id": "m2", "profile_id": "p-ses"}}, true},
		{"another's transaction of a hidden profile", model.Viewer{"m1", "member"}, row{"transactions", "t3", map[string]any{"account_id": "m2", "profile_id": "p-other"}}, false},
		{"transaction without profile of another", model.Viewer{"m1", "member"}, row{"transactions", "t4", map[string]any{"account_id": "m2"}}, false},
		{"member sees all accounts", model.Viewer{"m1", "member"}, row{"accounts", "m2", nil}, true},
		{"member sees all practices", model.Viewer{"m1", "member"}, row{"practices", "pr1", nil}, true},
		{"admin sees everything", model.Viewer{"a", "admin"}, row{"profiles", "p-other", nil}, true},
		{"admin sees every transaction", model.Viewer{"a", "admin"}, row{"transactions", "t3", map[string]any{"account_id": "m2"}}, true},
		{"secretary sees every session", model.Viewer{"s", "secretary"}, row{"sessions", "s7", map[string]any{"therapist_id": "m2"}}, true},
		{"secretary sees every attendance", model.Viewer{"s", "secretary"}, row{"attendances", "at2", map[string]any{"course_id": "c2"}}, true},
		{"no role sees nothing", model.Viewer{"x", ""}, row{"practices", "pr1", nil}, false},
		{"unknown role sees nothing", model.Viewer{"x", "owner"}, row{"accounts", "x", nil}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := model.NewScope(tt.viewer, l)
			if got := s.Sees(tt.row.entity, tt.row.id, tt.row.fields); got != tt.want {
				t.Errorf("Sees(%v, %s %s %v) = %v; want %v", tt.viewer, tt.row.entity, tt.row.id, tt.row.fields, got, tt.want)
			}
		})
	}
}

func TestPolicyFields(t *testing.T) {
	names := func(fs []model.Field) map[string]bool {
		m := map[string]bool{}
		for _, f := range fs {
			m[f.Name] = true
		}
		return m
	}
	tests := []struct {
		role, entity string
		has, hasNot  []string
	}{
		{"secretary", "sessions", []string{"profile_id", "therapist_id", "starts_at", "price_cents", "status"}, []string{"protocol"}},
		{"admin", "sessions", []string{"protocol"}, nil},
		{"member", "sessions", []string{"protocol"}, nil},
		{"member", "accounts", []string{"name", "role"}, []string{"email", "app_enabled", "practice_ids"}},
		{"secretary", "accounts", []string{"name", "role", "email", "app_enabled", "practice_ids"}, nil},
		{"admin", "accounts", []string{"email", "app_enabled", "practice_ids"}, nil},
		{"member", "profiles", []string{"first_name", "birth_date", "insurance"}, nil},
	}
	for _, tt := range tests {
		got := names(model.Fields(tt.role, tt.entity))
		for _, f := range tt.has {
			if !got[f] {
				t.Errorf("Fields(%s, %s) lacks %s", tt.role, tt.entity, f)
			}
		}
		for _, f := range tt.hasNot {
			if got[f] {
				t.Errorf("Fields(%s, %s) has %s; want it hidden", tt.role, tt.entity, f)
			}
		}
	}
}

// TestSeesAgreesWithNewScope builds random tenants and checks that
// SeesProfile and SeesCourse, asked one id at a time of the rows, agree
// with NewScope over the same rows' link fields, for every member and id.
func TestSeesAgreesWithNewScope(t *testing.T) {
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 11))
		members := []string{"m1", "m2", "m3"}
		pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
		profiles := []string{"p1", "p2", "p3", "p4", "p5", ""}
		courses := []string{"c1", "c2", "c3", ""}
		rows := mapRows{}
		links := model.NewLinks()
		add := func(entity, id string, f map[string]any) {
			if rows[entity] == nil {
				rows[entity] = map[string]map[string]any{}
			}
			rows[entity][id] = f
			links.Apply(model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f})
		}
		for i := range 4 {
			add(model.Profiles, profiles[r.IntN(5)], map[string]any{"owner_id": pick(append(members, "a1")...)})
			add(model.ProfileShares, fmt.Sprint("sh", i), map[string]any{"profile_id": pick(profiles...), "account_id": pick(append(members, model.ShareAll)...)})
			add(model.Sessions, fmt.Sprint("s", i), map[string]any{"profile_id": pick(profiles...), "therapist_id": pick(append(members, "a1")...)})
			add(model.Courses, courses[r.IntN(3)], map[string]any{"therapist_id": pick(append(members, "a1")...)})
			add(model.CourseMembers, fmt.Sprint("cm", i), map[string]any{"course_id": pick(courses...), "profile_id": pick(profiles...)})
		}
		for _, m := range members {
			s := model.NewScope(model.Viewer{ID: m, Role: model.RoleMember}, links)
			for _, p := range profiles {
				got, err := model.SeesProfile(m, p, rows)
				if err != nil || got != s.Profiles[p] {
					t.Fatalf("seed %d: SeesProfile(%s, %q) = %v, %v; NewScope says %v", seed, m, p, got, err, s.Profiles[p])
				}
			}
			for _, c := range courses {
				got, err := model.SeesCourse(m, c, rows)
				if err != nil || got != s.Courses[c] {
					t.Fatalf("seed %d: SeesCourse(%s, %q) = %v, %v; NewScope says %v", seed, m, c, got, err, s.Courses[c])
				}
			}
		}
	}
}
