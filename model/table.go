package model

import "slices"

// This file is the access policy of DESIGN §4 as data: who sees which rows
// and fields. Everything that decides visibility is derived from these
// tables — the scope from scratch (NewScope), one profile or course at a
// time (SeesProfile, SeesCourse: writes), change by change (Tracker: the
// live stream), the rows a shard holds (RuleFor rendered to SQL by the
// shard builder), what comes with a newly visible profile or course
// (Dependents) and the check-in day view. docs/architecture.md says how to
// add a rule or an entity.

// reason is one reason for a member A to see a profile or course: a row of
// entity whose target field names it (target "id": the row is the profile
// or course itself) and whose account field names A (or ShareAll, when all
// is set), or, instead of account, whose course field names a course A
// sees.
type reason struct {
	grants  Set
	entity  string
	target  string
	account string
	all     bool
	course  string
}

// reasons are DESIGN §4's: A is the therapist of a course; A owns a
// profile, it is shared to A or to all, A is the therapist of one of its
// sessions or of a course it is a member of. Course reasons come first: a
// profile reason may name a course.
var reasons = []reason{
	{grants: SetCourses, entity: Courses, target: "id", account: "therapist_id"},
	{grants: SetProfiles, entity: Profiles, target: "id", account: "owner_id"},
	{grants: SetProfiles, entity: ProfileShares, target: "profile_id", account: "account_id", all: true},
	{grants: SetProfiles, entity: Sessions, target: "profile_id", account: "therapist_id"},
	{grants: SetProfiles, entity: CourseMembers, target: "profile_id", course: "course_id"},
}

// memberRules say which rows of each entity a member sees: all, or those
// meeting any condition (a field naming the member itself, or naming a
// profile or course of its scope). An entity not listed: none.
var memberRules = map[string]Rule{
	Accounts:      {All: true},
	Practices:     {All: true},
	Profiles:      {Conds: []Cond{{Field: "id", In: SetProfiles}}},
	ProfileShares: {Conds: []Cond{{Field: "profile_id", In: SetProfiles}}},
	Sessions:      {Conds: []Cond{{Field: "therapist_id", Self: true}, {Field: "profile_id", In: SetProfiles}}},
	Courses:       {Conds: []Cond{{Field: "therapist_id", Self: true}}},
	CourseMembers: {Conds: []Cond{{Field: "course_id", In: SetCourses}}},
	Attendances:   {Conds: []Cond{{Field: "course_id", In: SetCourses}}},
	Transactions:  {Conds: []Cond{{Field: "account_id", Self: true}, {Field: "profile_id", In: SetProfiles}}},
}

// hiddenFields are the fields a role never sees of an entity (whichever
// rows it sees); onlyFields, for a role and entity, the only ones it sees.
var (
	hiddenFields = map[[2]string][]string{
		{RoleSecretary, Sessions}: {"protocol"},
	}
	onlyFields = map[[2]string][]string{
		{RoleMember, Accounts}: {"name", "role"},
	}
)

// linkFields name, for every entity whose rows' visibility depends on
// fields (those named by reasons and memberRules; a test checks they
// agree), those fields as A and B ("" for none).
var linkFields = map[string][2]string{
	Profiles:      {"owner_id", ""},
	ProfileShares: {"profile_id", "account_id"},
	Sessions:      {"profile_id", "therapist_id"},
	Courses:       {"therapist_id", ""},
	CourseMembers: {"course_id", "profile_id"},
	Attendances:   {"course_id", ""},
	Transactions:  {"account_id", "profile_id"},
}

// Dependent is a kind of row that a member sees because of the profile or
// course its Field names ("id": the profile itself).
type Dependent struct {
	Entity, Field string
}

// Dependents returns what comes into a member's sight with a profile (set
// SetProfiles) or course (SetCourses) it newly sees: the rows whose rule
// tests that set, by the field it tests.
// The profile or course itself, if its own rule tests the set, comes
// first.
func Dependents(set Set) []Dependent {
	var self, out []Dependent
	for _, e := range Entities() {
		for _, c := range memberRules[e.Name].Conds {
			switch {
			case c.In != set:
			case c.Field == "id":
				self = append(self, Dependent{Entity: e.Name, Field: c.Field})
			default:
				out = append(out, Dependent{Entity: e.Name, Field: c.Field})
			}
		}
	}
	return append(self, out...)
}

// ReasonEntities returns the entities whose rows give reasons to see
// profiles and courses: all NewScope needs of a tenant's link fields.
func ReasonEntities() []string {
	var out []string
	for _, rs := range reasons {
		if !slices.Contains(out, rs.entity) {
			out = append(out, rs.entity)
		}
	}
	return out
}
