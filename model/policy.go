package model

// This file applies the access policy of DESIGN §4 (its tables are in
// table.go): who sees which rows and fields. Every reader of visible data
// (shard builder, backups, statistics, the live stream, the check-in view)
// asks it; nothing else decides visibility.

// Viewer is the account whose view of a tenant is asked for.
type Viewer struct {
	ID   string
	Role string // RoleAdmin, RoleMember or RoleSecretary; anything else sees nothing
}

// Scope is what one viewer sees of one state of a tenant.
type Scope struct {
	Viewer Viewer
	// Profiles are the ids of the profiles a member sees; nil for admins
	// and secretaries, who see all.
	Profiles map[string]bool
	// Courses are the ids of the courses a member sees; nil for admins and
	// secretaries.
	Courses map[string]bool
}

// gives reports whether a row (its field values by get) gives member its
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
	for _, rs := range reasons { // course reasons first
		into := s.set(rs.grants)
		for id, r := range l.rows[rs.entity] {
			get := func(f string) string { return linkValue(rs.entity, f, id, r) }
			if t := get(rs.target); t != "" && rs.gives(v.ID, get, func(c string) bool { return s.Courses[c] }) {
				into[t] = true
			}
		}
	}
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
	return sees(member, p, SetProfiles, look)
}

// SeesCourse reports whether member sees course c.
func SeesCourse(member, c string, look Rows) (bool, error) {
	return sees(member, c, SetCourses, look)
}

// sees reports whether member sees the profile or course target of set:
// whether a row look finds gives it one of the reasons of table.go.
func sees(member, target string, set Set, look Rows) (bool, error) {
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
		if rs.grants != set {
			continue
		}
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

// SeesRow reports whether member sees the row of entity with these fields,
// by its rule's conditions asked of look one profile or course at a time.
func SeesRow(member, entity, id string, fields map[string]any, look Rows) (bool, error) {
	rule := memberRules[entity]
	if rule.All {
		return true, nil
	}
	for _, cond := range rule.Conds {
		var v string
		if cond.Field == "id" {
			v = id
		} else {
			v, _ = fields[cond.Field].(string)
		}
		if v == "" {
			continue
		}
		var (
			ok  bool
			err error
		)
		switch {
		case cond.Self:
			ok = v == member
		case cond.In != "":
			ok, err = sees(member, v, cond.In, look)
		}
		if err != nil || ok {
			return ok, err
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
		return memberRules[entity]
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
	return s.see(entity, id, func(f string) string { return linkValue(entity, f, id, r) })
}

// see reports whether the scope sees the row of entity whose fields field
// returns, by the rule of RuleFor.
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

// set returns the scope's ids of set name.
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
// sees, in schema order (hiddenFields, onlyFields: a secretary never sees a
// session's protocol; a member sees only the name and role of accounts;
// nobody else loses a field).
func Fields(role, entity string) []Field {
	e, ok := Lookup(entity)
	if !ok {
		return nil
	}
	k := [2]string{role, entity}
	keep := func(f Field) bool {
		for _, h := range hiddenFields[k] {
			if f.Name == h {
				return false
			}
		}
		only, ok := onlyFields[k]
		if !ok {
			return true
		}
		for _, o := range only {
			if f.Name == o {
				return true
			}
		}
		return false
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
