package model

import (
	"fmt"
	"slices"
	"testing"
)

// TestTablesAgree: the link fields of every entity are exactly the fields
// that the reasons and the member rules name (besides "id"), and every
// name is a field of its entity. A new rule that names a new field must
// add it to linkFields.
func TestTablesAgree(t *testing.T) {
	used := map[string][]string{}
	use := func(entity, field string) {
		if field == "" || field == "id" || slices.Contains(used[entity], field) {
			return
		}
		e, ok := Lookup(entity)
		if !ok {
			t.Fatalf("the policy names an unknown entity %q", entity)
		}
		if _, ok := e.Field(field); !ok {
			t.Errorf("the policy names %s.%s, which is no field", entity, field)
		}
		used[entity] = append(used[entity], field)
	}
	for _, rs := range reasons {
		use(rs.entity, rs.target)
		use(rs.entity, rs.account)
		use(rs.entity, rs.course)
	}
	for entity, r := range memberRules {
		for _, c := range r.Conds {
			use(entity, c.Field)
		}
	}
	for entity, fields := range used {
		a, b := LinkFields(entity)
		for _, f := range fields {
			if f != a && f != b {
				t.Errorf("%s.%s decides visibility but is not a link field of %s (%q, %q)", entity, f, entity, a, b)
			}
		}
	}
	for entity, names := range linkFields {
		for _, f := range names {
			if f != "" && !slices.Contains(used[entity], f) {
				t.Errorf("link field %s.%s decides nothing", entity, f)
			}
		}
	}
	for _, rs := range reasons {
		if (rs.account == "") == (rs.course == "") {
			t.Errorf("reason %+v: exactly one of account and course", rs)
		}
	}
}

// TestDependents: what comes with a newly visible profile or course, as
// the member rules say (the profile itself first).
func TestDependents(t *testing.T) {
	for _, tt := range []struct {
		set  Set
		want string
	}{
		{SetProfiles, "[{profiles id} {profile_shares profile_id} {sessions profile_id} {transactions profile_id}]"},
		{SetCourses, "[{attendances course_id} {course_members course_id}]"},
	} {
		if got := fmt.Sprint(Dependents(tt.set)); got != tt.want {
			t.Errorf("Dependents(%s) = %s; want %s", tt.set, got, tt.want)
		}
	}
}
