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

// Reasons are DESIGN §4's reasons for a member A to see a profile or a
// course, written once: NewScope evaluates them over a tenant's link fields,
// SeesProfile and SeesCourse over its rows, one profile or course at a time.
type reason struct {
	// entity is the row that gives the reason.
	entity string
	// target is its field naming the profile or course seen ("id": the row
	// is the profile or course itself).
	target string
	// account is its field that must name A; all accepts ShareAll too.
	account string
	all     bool
	// course, instead of account, is its field naming a course A sees.
	course string
}

// profileReasons: A owns the profile, it is shared to A or to all, A is
// the therapist of one of its sessions or of a course it is a member of.
var profileReasons = []reason{
	{entity: Profiles, target: "id", account: "owner_id"},
	{entity: ProfileShares, target: "profile_id", account: "account_id", all: true},
	{entity: Sessions, target: "profile_id", account: "therapist_id"},
	{entity: CourseMembers, target: "profile_id", course: "course_id"},
}

// courseReasons: A is the course's therapist.
var courseReasons = []reason{
	{entity: Courses, target: "id", account: "therapist_id"},
}

// linkValue returns field of a row from its link fields.
func linkValue(entity, field, id string, r LinkRow) string {
	names := linkFields[entity]
	switch field {
	case "id":
		return id
	case names[0]:
		return r.A
	case names[1]:
		return r.B
	}
	return ""
}

// gives reports whether a row (its field values by get) gives member a
// reason to see its target, courses being the courses member sees.
func (rs reason) gives(member string, get func(string) string, courses func(string) bool) bool {
	if rs.course != "" {
		c := get(rs.course)
		return c != "" && courses(c)
	}
	a := get(rs.account)
	return a != "" && (a == member || rs.all && a == ShareAll)
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
	scan := func(reasons []reason, into map[string]bool) {
		for _, rs := range reasons {
			for id, r := range l.rows[rs.entity] {
				get := func(f string) string { return linkValue(rs.entity, f, id, r) }
				if t := get(rs.target); t != "" && rs.gives(v.ID, get, func(c string) bool { return s.Courses[c] }) {
					into[t] = true
				}
			}
		}
	}
	scan(courseReasons, s.Courses)
	scan(profileReasons, s.Profiles)
	return s
}

// Rows reads a tenant's current rows, for decisions about one row at a
// time (what a write may do). The store answers it inside the writing
// transaction.
type Rows interface {
	// Row returns the row's fields, nil when there is none.
	Row(entity, id string) (map[string]any, error)
	// Find returns the ids and fields of entity's rows whose fields equal
	// every value of match (link fields only).
	Find(entity string, match map[string]string) (map[string]map[string]any, error)
}

// SeesProfile reports whether member sees profile p, by the reasons of
// DESIGN §4 as look finds them; p need not exist (rows may name it).
func SeesProfile(member, p string, look Rows) (bool, error) {
	return sees(member, p, profileReasons, look)
}

// SeesCourse reports whether member sees course c.
func SeesCourse(member, c string, look Rows) (bool, error) {
	return sees(member, c, courseReasons, look)
}

func sees(member, target string, reasons []reason, look Rows) (bool, error) {
	if target == "" {
		return false, nil
	}
	var lookErr error
	courses := func(c string) bool {
		ok, err := SeesCourse(member, c, look)
		if err != nil {
			lookErr = err
		}
		return ok
	}
	for _, rs := range reasons {
		var rows map[string]map[string]any
		if rs.target == "id" {
			row, err := look.Row(rs.entity, target)
			if err != nil {
				return false, err
			}
			if row != nil {
				rows = map[string]map[string]any{target: row}
			}
		} else {
			match := map[string]string{rs.target: target}
			if rs.account != "" && !rs.all {
				match[rs.account] = member // narrow the read to the reason itself
			}
			var err error
			if rows, err = look.Find(rs.entity, match); err != nil {
				return false, err
			}
		}
		for _, fields := range rows {
			get := func(f string) string { s, _ := fields[f].(string); return s }
			if rs.gives(member, get, courses) {
				return true, nil
			}
			if lookErr != nil {
				return false, lookErr
			}
		}
	}
	return false, nil
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
