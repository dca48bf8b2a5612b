package model

// This file is the access policy of DESIGN §4: who sees which rows and
// fields. Every reader of visible data (shard builder, backups, statistics,
// the live stream) asks it; nothing else decides visibility.

// Viewer is the account whose view of a tenant is asked for.
type Viewer struct {
	ID   string
	Role string // RoleAdmin, RoleMember or RoleSecretary; anything else sees nothing
}

// LinkRow is the link fields of one row: the fields visibility depends on
// (see linkFields), A and B by entity.
type LinkRow struct{ A, B string }

// linkFields names, for every entity whose rows' visibility depends on
// other rows, its link fields A and B ("" for none).
var linkFields = map[string][2]string{
	Profiles:      {"owner_id", ""},
	ProfileShares: {"profile_id", "account_id"},
	Sessions:      {"profile_id", "therapist_id"},
	Courses:       {"therapist_id", ""},
	CourseMembers: {"course_id", "profile_id"},
	Attendances:   {"course_id", ""},
	Transactions:  {"account_id", "profile_id"},
}

// HasLinks reports whether the visibility of entity's rows depends on
// link fields.
func HasLinks(entity string) bool { _, ok := linkFields[entity]; return ok }

// Links is the part of a tenant's rows that visibility depends on: for each
// row of a linked entity, its id and link fields. It is built from the rows
// (Set) or kept current by applying every change (Apply).
type Links struct {
	rows map[string]map[string]LinkRow // entity → id → link fields
}

// NewLinks returns empty Links.
func NewLinks() *Links {
	l := &Links{rows: make(map[string]map[string]LinkRow, len(linkFields))}
	for e := range linkFields {
		l.rows[e] = map[string]LinkRow{}
	}
	return l
}

// Set records a row's link fields.
func (l *Links) Set(entity, id string, r LinkRow) {
	if m := l.rows[entity]; m != nil {
		m[id] = r
	}
}

// Get returns a row's link fields, and whether the row exists.
func (l *Links) Get(entity, id string) (LinkRow, bool) {
	r, ok := l.rows[entity][id]
	return r, ok
}

// Apply applies a change: an upsert merges the link fields it carries, a
// delete removes the row.
func (l *Links) Apply(c Change) {
	m := l.rows[c.Entity]
	if m == nil {
		return
	}
	if c.Op == OpDelete {
		delete(m, c.ID)
		return
	}
	r := m[c.ID]
	names := linkFields[c.Entity]
	if v, ok := c.Fields[names[0]]; ok {
		r.A, _ = v.(string)
	}
	if v, ok := c.Fields[names[1]]; ok && names[1] != "" {
		r.B, _ = v.(string)
	}
	m[c.ID] = r
}

// Affects reports whether applying c to l may change what v sees of
// profiles and courses, judged before the change is applied: it touches
// the owner of a profile, a share to v or to all, a session or course v is
// (or was) the therapist of, or a member of such a course.
func (l *Links) Affects(v Viewer, c Change) bool {
	if v.Role != RoleMember {
		return false
	}
	before, _ := l.Get(c.Entity, c.ID)
	after := before
	if c.Op == OpUpsert {
		names := linkFields[c.Entity]
		if val, ok := c.Fields[names[0]]; ok {
			after.A, _ = val.(string)
		}
		if val, ok := c.Fields[names[1]]; ok && names[1] != "" {
			after.B, _ = val.(string)
		}
	}
	either := func(f func(LinkRow) bool) bool { return f(before) || f(after) }
	switch c.Entity {
	case Profiles:
		return either(func(r LinkRow) bool { return r.A == v.ID })
	case ProfileShares:
		return either(func(r LinkRow) bool { return r.B == v.ID || r.B == ShareAll })
	case Sessions:
		return either(func(r LinkRow) bool { return r.B == v.ID })
	case Courses:
		return either(func(r LinkRow) bool { return r.A == v.ID })
	case CourseMembers:
		return either(func(r LinkRow) bool {
			crs, ok := l.Get(Courses, r.A)
			return ok && crs.A == v.ID
		})
	}
	return false
}

// Scope is what one viewer sees of one state of a tenant.
type Scope struct {
	Viewer Viewer
	// Profiles are the ids of the profiles a member sees; nil for admins
	// and secretaries, who see all.
	Profiles map[string]bool
	// Courses are the ids of the courses a member is the therapist of; nil
	// for admins and secretaries.
	Courses map[string]bool
}

// NewScope applies DESIGN §4 to links: the profiles and courses a member
// sees. For an admin or a secretary nothing needs computing.
func NewScope(v Viewer, l *Links) *Scope {
	s := &Scope{Viewer: v}
	if v.Role != RoleMember {
		return s
	}
	s.Profiles = map[string]bool{}
	s.Courses = map[string]bool{}
	for id, p := range l.rows[Profiles] {
		if p.A == v.ID {
			s.Profiles[id] = true
		}
	}
	for _, sh := range l.rows[ProfileShares] {
		if sh.A != "" && (sh.B == v.ID || sh.B == ShareAll) {
			s.Profiles[sh.A] = true
		}
	}
	for _, ses := range l.rows[Sessions] {
		if ses.B == v.ID && ses.A != "" {
			s.Profiles[ses.A] = true
		}
	}
	for id, c := range l.rows[Courses] {
		if c.A == v.ID {
			s.Courses[id] = true
		}
	}
	for _, m := range l.rows[CourseMembers] {
		if s.Courses[m.A] && m.B != "" {
			s.Profiles[m.B] = true
		}
	}
	return s
}

// Set names a set of ids of a Scope.
type Set string

// The sets a Rule can test against.
const (
	SetProfiles Set = "profiles"
	SetCourses  Set = "courses"
)

// Cond is one condition on a row: its Field equals the viewer's id (Self) or
// is in the scope's set In.
type Cond struct {
	Field string
	Self  bool
	In    Set
}

// Rule says which rows of an entity a viewer sees: all of them, none, or
// those meeting any of Conds. Shard builds render it to SQL; the stream
// evaluates it on a row with Sees. Both are mechanical: the decision is
// RuleFor's alone.
type Rule struct {
	All   bool
	Conds []Cond
}

// RuleFor returns the rows of entity that the scope's viewer sees.
func (s *Scope) RuleFor(entity string) Rule {
	switch s.Viewer.Role {
	case RoleAdmin, RoleSecretary:
		return Rule{All: true}
	case RoleMember:
	default:
		return Rule{}
	}
	self := func(f string) Cond { return Cond{Field: f, Self: true} }
	in := func(f string, set Set) Cond { return Cond{Field: f, In: set} }
	switch entity {
	case Accounts, Practices:
		return Rule{All: true}
	case Profiles:
		return Rule{Conds: []Cond{in("id", SetProfiles)}}
	case ProfileShares:
		return Rule{Conds: []Cond{in("profile_id", SetProfiles)}}
	case Sessions:
		return Rule{Conds: []Cond{self("therapist_id"), in("profile_id", SetProfiles)}}
	case Courses:
		return Rule{Conds: []Cond{self("therapist_id")}}
	case CourseMembers, Attendances:
		return Rule{Conds: []Cond{in("course_id", SetCourses)}}
	case Transactions:
		return Rule{Conds: []Cond{self("account_id"), in("profile_id", SetProfiles)}}
	}
	return Rule{}
}

// Sees reports whether the viewer sees the row (id plus fields) of entity.
func (s *Scope) Sees(entity, id string, fields map[string]any) bool {
	return s.see(entity, id, func(f string) string { v, _ := fields[f].(string); return v })
}

// SeesRow reports whether the viewer sees the row of entity with these link
// fields.
func (s *Scope) SeesRow(entity, id string, r LinkRow) bool {
	names := linkFields[entity]
	return s.see(entity, id, func(f string) string {
		switch f {
		case names[0]:
			return r.A
		case names[1]:
			return r.B
		}
		return ""
	})
}

func (s *Scope) see(entity, id string, field func(string) string) bool {
	r := s.RuleFor(entity)
	if r.All {
		return true
	}
	for _, c := range r.Conds {
		var v string
		if c.Field == "id" {
			v = id
		} else {
			v = field(c.Field)
		}
		if v == "" {
			continue
		}
		if c.Self && v == s.Viewer.ID {
			return true
		}
		if c.In != "" && s.set(c.In)[v] {
			return true
		}
	}
	return false
}

func (s *Scope) set(name Set) map[string]bool {
	switch name {
	case SetProfiles:
		return s.Profiles
	case SetCourses:
		return s.Courses
	}
	return nil
}

// Fields returns the fields of entity (id excluded) that a viewer of role
// sees, in schema order: a secretary never sees a session's protocol; a
// member sees only the name and role of accounts; nobody else loses a field.
func Fields(role, entity string) []Field {
	e, ok := Lookup(entity)
	if !ok {
		return nil
	}
	keep := func(f Field) bool { return true }
	switch {
	case role == RoleSecretary && entity == Sessions:
		keep = func(f Field) bool { return f.Name != "protocol" }
	case role == RoleMember && entity == Accounts:
		keep = func(f Field) bool { return f.Name == "name" || f.Name == "role" }
	}
	out := make([]Field, 0, len(e.Fields))
	for _, f := range e.Fields {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// ValidRole reports whether role is one of the three account roles.
func ValidRole(role string) bool {
	return role == RoleAdmin || role == RoleMember || role == RoleSecretary
}

// LinkFields returns the names of entity's link fields A and B ("" for
// none, or for an entity without links).
func LinkFields(entity string) (a, b string) {
	f := linkFields[entity]
	return f[0], f[1]
}

// LinkedEntities returns the entities whose rows' visibility depends on
// link fields.
func LinkedEntities() []string {
	out := make([]string, 0, len(linkFields))
	for e := range linkFields {
		out = append(out, e)
	}
	return out
}
