package model

import "slices"

// Tracker follows, change by change, what member accounts see: the link
// fields of a tenant (Links) and, for each followed member, why it sees each
// profile and course, as reference counts of the reasons of table.go.
// Applying a change costs what the change touches, not the size of the
// tenant; NewScope computes the same sets from scratch (a property test
// checks that they agree). A Tracker is not safe for concurrent use.
type Tracker struct {
	links   *Links
	members map[string]*refs // followed member accounts
	// all counts, by profile or course, the reasons that give it to every
	// member (shares to ShareAll).
	all map[sightID]int
	// byCourse are, by course, the rows whose reason names a course the
	// member must see (course_members); byAccount, by account, the rows
	// whose reason names that account (owner, share target, therapist):
	// Follow reads only those.
	byCourse  map[string]map[rowRef]struct{}
	byAccount map[string]map[rowRef]struct{}
	// viewers are, by profile and by course, the followed members that see
	// it through their own reasons (not counting reasons to all).
	viewers map[sightID]map[string]bool

	touched map[sightKey]bool // during Apply: what each touched sight was before
}

// refs counts, by profile and by course, a followed member's own reasons
// to see it.
type refs struct {
	profiles map[string]int
	courses  map[string]int
}

// sightID is a profile or a course.
type sightID struct {
	set Set
	id  string
}

// sightKey is a profile or course as one member sees it.
type sightKey struct {
	member string
	set    Set
	id     string
}

// reasonsOf are the reasons of table.go by the entity whose rows give them.
var reasonsOf = func() map[string][]reason {
	m := map[string][]reason{}
	for _, rs := range reasons {
		m[rs.entity] = append(m[rs.entity], rs)
	}
	return m
}()

// Shift is how one change moved what a followed member sees.
type Shift struct {
	Member string
	// Profiles and Courses became visible.
	Profiles, Courses []string
	// Shrank is true when a profile or course stopped being visible: those
	// of LostProfiles and LostCourses.
	Shrank                    bool
	LostProfiles, LostCourses []string
}

// NewTracker returns a Tracker over l, which it owns and keeps current.
func NewTracker(l *Links) *Tracker {
	t := &Tracker{links: l, members: map[string]*refs{}, all: map[sightID]int{},
		byCourse: map[string]map[rowRef]struct{}{}, byAccount: map[string]map[rowRef]struct{}{},
		viewers: map[sightID]map[string]bool{}}
	for entity := range reasonsOf {
		for id, r := range l.rows[entity] {
			t.count(entity, id, r, 1, "")
		}
	}
	return t
}

// Links returns the link fields the tracker keeps; callers must not change
// them.
func (t *Tracker) Links() *Links { return t.links }

// Follow starts following member: its reasons are counted from the rows
// that name it (and the rows seeing through its courses), not from all
// rows.
func (t *Tracker) Follow(member string) {
	if t.members[member] != nil {
		return
	}
	t.members[member] = &refs{profiles: map[string]int{}, courses: map[string]int{}}
	for ref := range t.byAccount[member] {
		r, _ := t.links.Get(ref.entity, ref.id)
		t.count(ref.entity, ref.id, r, 1, member)
		for _, rs := range reasonsOf[ref.entity] {
			if rs.grants != SetCourses || rs.account == "" || linkValue(ref.entity, rs.account, ref.id, r) != member {
				continue
			}
			for via := range t.byCourse[linkValue(ref.entity, rs.target, ref.id, r)] {
				vr, _ := t.links.Get(via.entity, via.id)
				t.count(via.entity, via.id, vr, 1, member)
			}
		}
	}
}

// Unfollow stops following member.
func (t *Tracker) Unfollow(member string) {
	m := t.members[member]
	if m == nil {
		return
	}
	for p := range m.profiles {
		t.setViewer(sightID{SetProfiles, p}, member, false)
	}
	for c := range m.courses {
		t.setViewer(sightID{SetCourses, c}, member, false)
	}
	delete(t.members, member)
}

// Following reports whether member is followed.
func (t *Tracker) Following(member string) bool { return t.members[member] != nil }

// Apply applies a change and returns the link fields of its row before it
// (existed is false for a new row) and how it moved what followed members
// see.
func (t *Tracker) Apply(c Change) (before LinkRow, existed bool, shifts []Shift) {
	before, existed = t.links.Get(c.Entity, c.ID)
	if !HasLinks(c.Entity) {
		return before, existed, nil
	}
	t.touched = map[sightKey]bool{}
	if existed {
		t.count(c.Entity, c.ID, before, -1, "")
	}
	t.links.Apply(c)
	if after, ok := t.links.Get(c.Entity, c.ID); ok {
		t.count(c.Entity, c.ID, after, 1, "")
	}
	byMember := map[string]*Shift{}
	for k, was := range t.touched {
		now := t.sees(k)
		if now == was {
			continue
		}
		s := byMember[k.member]
		if s == nil {
			s = &Shift{Member: k.member}
			byMember[k.member] = s
		}
		switch {
		case !now && k.set == SetProfiles:
			s.Shrank = true
			s.LostProfiles = append(s.LostProfiles, k.id)
		case !now:
			s.Shrank = true
			s.LostCourses = append(s.LostCourses, k.id)
		case k.set == SetProfiles:
			s.Profiles = append(s.Profiles, k.id)
		default:
			s.Courses = append(s.Courses, k.id)
		}
	}
	t.touched = nil
	for _, s := range byMember {
		shifts = append(shifts, *s)
	}
	return before, existed, shifts
}

// Hanging returns the rows that members see because of the profile (set
// SetProfiles) or course (SetCourses) id, by the field their rule tests
// (Dependents; the profile or course itself included when its rule tests
// the set), as the tracker's link fields hold them. It reads every row of
// those entities: it is for rare moments (a profile gone from sight whose
// rows may be gone too), not for every change.
func (t *Tracker) Hanging(set Set, id string) []RowRef {
	var out []RowRef
	for _, d := range Dependents(set) {
		if d.Field == "id" {
			if _, ok := t.links.Get(d.Entity, id); ok {
				out = append(out, RowRef{d.Entity, id})
			}
			continue
		}
		for rid, r := range t.links.rows[d.Entity] {
			if linkValue(d.Entity, d.Field, rid, r) == id {
				out = append(out, RowRef{d.Entity, rid})
			}
		}
	}
	return out
}

// SeesRow reports whether the followed member sees the row of entity with
// these link fields, by the rule of RuleFor.
func (t *Tracker) SeesRow(member, entity, id string, r LinkRow) bool {
	return t.SawRow(member, entity, id, r, Shift{})
}

// Scope returns the followed member's scope as NewScope would compute it.
func (t *Tracker) Scope(member string) *Scope {
	s := &Scope{Viewer: Viewer{ID: member, Role: RoleMember}, Profiles: map[string]bool{}, Courses: map[string]bool{}}
	if m := t.members[member]; m != nil {
		for p := range m.profiles {
			s.Profiles[p] = true
		}
		for c := range m.courses {
			s.Courses[c] = true
		}
	}
	for k := range t.all {
		s.set(k.set)[k.id] = true
	}
	return s
}

// sees reports whether the member sees the profile or course of k now.
func (t *Tracker) sees(k sightKey) bool {
	m := t.members[k.member]
	if m == nil {
		return false
	}
	if t.all[sightID{k.set, k.id}] > 0 {
		return true
	}
	if k.set == SetProfiles {
		return m.profiles[k.id] > 0
	}
	return m.courses[k.id] > 0
}

// count adds d to the reasons that the row of entity gives followed members
// (only that member when only is set) to see profiles and courses, by the
// reasons of table.go; without only it also keeps the indexes (a change of
// the row, not Follow).
func (t *Tracker) count(entity, id string, r LinkRow, d int, only string) {
	ref := rowRef{entity, id}
	for _, rs := range reasonsOf[entity] {
		if rs.course != "" {
			t.countViaCourse(rs, ref, r, d, only)
		} else {
			t.countOfAccount(rs, ref, r, d, only)
		}
	}
}

// followed returns the counts of member m when count counts it: m is
// followed, and is only if only is set.
func (t *Tracker) followed(m, only string) *refs {
	if m == "" || only != "" && m != only {
		return nil
	}
	return t.members[m]
}

// countViaCourse is count for a reason rs whose course field names a
// course: the accounts that course gives a reason to see it see the target.
func (t *Tracker) countViaCourse(rs reason, ref rowRef, r LinkRow, d int, only string) {
	target := linkValue(ref.entity, rs.target, ref.id, r)
	course := linkValue(ref.entity, rs.course, ref.id, r)
	if only == "" {
		t.index(t.byCourse, course, ref, d)
	}
	if target == "" || course == "" {
		return
	}
	for _, acct := range t.courseAccounts(course) {
		if m := t.followed(acct, only); m != nil {
			t.add(acct, m, rs.grants, target, d)
		}
	}
}

// countOfAccount is count for a reason rs whose account field names the
// account that sees the target (or ShareAll: every member).
func (t *Tracker) countOfAccount(rs reason, ref rowRef, r LinkRow, d int, only string) {
	target := linkValue(ref.entity, rs.target, ref.id, r)
	acct := linkValue(ref.entity, rs.account, ref.id, r)
	if only == "" && acct != ShareAll {
		t.index(t.byAccount, acct, ref, d)
	}
	if target == "" || acct == "" {
		return
	}
	if rs.all && acct == ShareAll {
		if only == "" {
			t.countToAll(rs.grants, target, d)
		}
		return
	}
	m := t.followed(acct, only)
	if m == nil {
		return
	}
	t.add(acct, m, rs.grants, target, d)
	if rs.grants != SetCourses || only != "" {
		return // Follow counts the rows seeing through the course itself
	}
	t.countThroughCourse(acct, m, target, d)
}

// countToAll adds d to the reasons that give the profile or course target
// of set to every member.
func (t *Tracker) countToAll(set Set, target string, d int) {
	for member := range t.members {
		t.touch(sightKey{member, set, target})
	}
	k := sightID{set, target}
	if t.all[k] += d; t.all[k] <= 0 {
		delete(t.all, k)
	}
}

// countThroughCourse adds d, for the followed account acct (its counts m)
// that gains (d 1) or loses (d -1) a reason to see course, to the reasons
// that the rows naming course in a course field give it.
func (t *Tracker) countThroughCourse(acct string, m *refs, course string, d int) {
	for via := range t.byCourse[course] {
		vr, _ := t.links.Get(via.entity, via.id)
		for _, vrs := range reasonsOf[via.entity] {
			if vrs.course == "" {
				continue
			}
			if vt := linkValue(via.entity, vrs.target, via.id, vr); vt != "" {
				t.add(acct, m, vrs.grants, vt, d)
			}
		}
	}
}

// courseAccounts returns the accounts that a course gives a reason to see
// it (its therapist), from the course reasons of table.go.
func (t *Tracker) courseAccounts(course string) []string {
	var out []string
	for _, rs := range reasons {
		if rs.grants != SetCourses || rs.target != "id" || rs.account == "" {
			continue
		}
		if r, ok := t.links.Get(rs.entity, course); ok {
			if a := linkValue(rs.entity, rs.account, course, r); a != "" {
				out = append(out, a)
			}
		}
	}
	return out
}

// add adds d to the member's reasons (its counts m) to see the profile or
// course id of set, and keeps viewers current.
func (t *Tracker) add(member string, m *refs, set Set, id string, d int) {
	t.touch(sightKey{member, set, id})
	counts := m.profiles
	if set == SetCourses {
		counts = m.courses
	}
	counts[id] += d
	if counts[id] <= 0 {
		delete(counts, id)
		t.setViewer(sightID{set, id}, member, false)
	} else {
		t.setViewer(sightID{set, id}, member, true)
	}
}

// touch records, during Apply, whether the member saw k before the change.
func (t *Tracker) touch(k sightKey) {
	if t.touched == nil {
		return
	}
	if _, ok := t.touched[k]; !ok {
		t.touched[k] = t.sees(k)
	}
}

// SawRow reports whether the followed member saw the row before a change
// whose shift is given, for a row whose link fields the change did not
// touch: the rule of RuleFor with the shift's gained profiles and courses
// not counted.
func (t *Tracker) SawRow(member, entity, id string, r LinkRow, shift Shift) bool {
	rule := memberRules[entity]
	if rule.All {
		return true
	}
	for _, c := range rule.Conds {
		v := linkValue(entity, c.Field, id, r)
		switch {
		case v == "":
		case c.Self && v == member:
			return true
		case c.In == SetProfiles && !slices.Contains(shift.Profiles, v) && t.sees(sightKey{member, c.In, v}),
			c.In == SetCourses && !slices.Contains(shift.Courses, v) && t.sees(sightKey{member, c.In, v}):
			return true
		}
	}
	return false
}
