package model

// This file is the access policy of DESIGN §4: who sees which rows and
// fields. Every reader of visible data (shard builder, backups, statistics,
// the live stream) asks it; nothing else decides visibility.

// Viewer is the account whose view of a tenant is asked for.
type Viewer struct {
	ID   string
	Role string // RoleAdmin, RoleMember or RoleSecretary; anything else sees nothing
}

// Links is the part of a tenant's rows that visibility depends on: for each
// row, only its id and link fields. Feed every row of the tenant with Add.
type Links struct {
	profileOwner    map[string]string   // profile id → owner_id
	shares          map[string][]string // profile id → account ids shared to (or ShareAll)
	sessions        []link2             // profile_id, therapist_id
	courseTherapist map[string]string   // course id → therapist_id
	courseMembers   []link2             // course_id, profile_id
}

type link2 struct{ a, b string }

// NewLinks returns empty Links.
func NewLinks() *Links {
	return &Links{
		profileOwner:    map[string]string{},
		shares:          map[string][]string{},
		courseTherapist: map[string]string{},
	}
}

// AddProfile records a profile and its owner.
func (l *Links) AddProfile(id, ownerID string) { l.profileOwner[id] = ownerID }

// AddShare records a profile share.
func (l *Links) AddShare(profileID, accountID string) {
	l.shares[profileID] = append(l.shares[profileID], accountID)
}

// AddSession records a session's profile and therapist.
func (l *Links) AddSession(profileID, therapistID string) {
	l.sessions = append(l.sessions, link2{profileID, therapistID})
}

// AddCourse records a course's therapist.
func (l *Links) AddCourse(id, therapistID string) { l.courseTherapist[id] = therapistID }

// AddCourseMember records a course membership.
func (l *Links) AddCourseMember(courseID, profileID string) {
	l.courseMembers = append(l.courseMembers, link2{courseID, profileID})
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
	for id, owner := range l.profileOwner {
		if owner == v.ID {
			s.Profiles[id] = true
		}
	}
	for profile, to := range l.shares {
		for _, a := range to {
			if a == v.ID || a == ShareAll {
				s.Profiles[profile] = true
			}
		}
	}
	for _, ses := range l.sessions {
		if ses.b == v.ID && ses.a != "" {
			s.Profiles[ses.a] = true
		}
	}
	for id, therapist := range l.courseTherapist {
		if therapist == v.ID {
			s.Courses[id] = true
		}
	}
	for _, m := range l.courseMembers {
		if s.Courses[m.a] && m.b != "" {
			s.Profiles[m.b] = true
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
	r := s.RuleFor(entity)
	if r.All {
		return true
	}
	for _, c := range r.Conds {
		var v string
		if c.Field == "id" {
			v = id
		} else {
			v, _ = fields[c.Field].(string)
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
