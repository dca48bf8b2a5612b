package model

import "slices"

// Tracker follows, change by change, what member accounts see: the link
// fields of a tenant (Links) and, for each followed member, why it sees each
// profile and course, as reference counts. Applying a change costs what the
// change touches, not the size of the tenant; NewScope computes the same
// sets from scratch (a property test checks that they agree). A Tracker is
// not safe for concurrent use.
type Tracker struct {
	links    *Links
	members  map[string]*refs          // followed member accounts
	all      map[string]int            // profile → its shares to ShareAll
	byCourse map[string]map[string]int // course → its course_members rows → 1
	// viewers are, by profile and by course, the followed members that see
	// it through their own reasons (not counting shares to all).
	profileViewers map[string]map[string]bool
	courseViewers  map[string]map[string]bool
	// byAccount are, by entity and by the account its row names (owner,
	// share target, therapist), the rows that give that account a reason
	// to see something: Follow reads only those.
	byAccount map[string]map[string]map[string]struct{}

	touched map[sightKey]bool // during Apply: what each touched sight was before
}

type refs struct {
	profiles map[string]int
	courses  map[string]int
}

type sightKey struct {
	member string
	set    Set
	id     string
}

// Shift is how one change moved what a followed member sees.
type Shift struct {
	Member string
	// Profiles and Courses became visible.
	Profiles, Courses []string
	// Shrank is true when a profile or course stopped being visible.
	Shrank bool
}

// NewTracker returns a Tracker over l, which it owns and keeps current.
func NewTracker(l *Links) *Tracker {
	t := &Tracker{links: l, members: map[string]*refs{}, all: map[string]int{}, byCourse: map[string]map[string]int{},
		profileViewers: map[string]map[string]bool{}, courseViewers: map[string]map[string]bool{},
		byAccount: map[string]map[string]map[string]struct{}{}}
	for _, r := range l.rows[ProfileShares] {
		if r.B == ShareAll && r.A != "" {
			t.all[r.A]++
		}
	}
	for id, r := range l.rows[CourseMembers] {
		t.indexMember(id, r, 1)
	}
	for entity := range accountField {
		for id, r := range l.rows[entity] {
			t.indexAccount(entity, id, r, 1)
		}
	}
	return t
}

// accountField says, for the entities whose rows name an account that they
// give reasons to see something, which link field names it.
var accountField = map[string]int{Profiles: 0, ProfileShares: 1, Sessions: 1, Courses: 0}

// indexAccount adds (d 1) or removes (d -1) a row from byAccount.
func (t *Tracker) indexAccount(entity, id string, r LinkRow, d int) {
	which, ok := accountField[entity]
	if !ok {
		return
	}
	account := r.A
	if which == 1 {
		account = r.B
	}
	if account == "" || account == ShareAll {
		return
	}
	byEntity := t.byAccount[entity]
	if byEntity == nil {
		byEntity = map[string]map[string]struct{}{}
		t.byAccount[entity] = byEntity
	}
	if d > 0 {
		if byEntity[account] == nil {
			byEntity[account] = map[string]struct{}{}
		}
		byEntity[account][id] = struct{}{}
		return
	}
	delete(byEntity[account], id)
	if len(byEntity[account]) == 0 {
		delete(byEntity, account)
	}
}

// Links returns the link fields the tracker keeps; callers must not change
// them.
func (t *Tracker) Links() *Links { return t.links }

// Follow starts following member: its reasons are counted from the rows
// that name it (and the members of its courses), not from all rows.
func (t *Tracker) Follow(member string) {
	if t.members[member] != nil {
		return
	}
	t.members[member] = &refs{profiles: map[string]int{}, courses: map[string]int{}}
	for entity := range accountField {
		for id := range t.byAccount[entity][member] {
			r, _ := t.links.Get(entity, id)
			t.count(entity, id, r, 1, member)
			if entity != Courses {
				continue
			}
			for cm := range t.byCourse[id] {
				mr, _ := t.links.Get(CourseMembers, cm)
				t.count(CourseMembers, cm, mr, 1, member)
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
		t.setViewer(t.profileViewers, p, member, false)
	}
	for c := range m.courses {
		t.setViewer(t.courseViewers, c, member, false)
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
		t.indexAccount(c.Entity, c.ID, before, -1)
		t.count(c.Entity, c.ID, before, -1, "")
	}
	t.links.Apply(c)
	if after, ok := t.links.Get(c.Entity, c.ID); ok {
		t.indexAccount(c.Entity, c.ID, after, 1)
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
		case !now:
			s.Shrank = true
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

// SeesRow reports whether the followed member sees the row of entity with
// these link fields, by the rule of RuleFor.
func (t *Tracker) SeesRow(member, entity, id string, r LinkRow) bool {
	return t.SawRow(member, entity, id, r, Shift{})
}

// Viewers calls fn for the followed members that may see the row of entity
// with these link fields (a superset: check with SeesRow), each at most
// once per reason.
func (t *Tracker) Viewers(entity, id string, r LinkRow, fn func(member string)) {
	rule := memberRule(entity)
	every := func() {
		for m := range t.members {
			fn(m)
		}
	}
	if rule.All {
		every()
		return
	}
	names := linkFields[entity]
	for _, c := range rule.Conds {
		v := fieldOf(c.Field, id, names, r)
		switch {
		case v == "":
		case c.Self:
			if t.members[v] != nil {
				fn(v)
			}
		case c.In == SetProfiles:
			if t.all[v] > 0 {
				every()
				return
			}
			for m := range t.profileViewers[v] {
				fn(m)
			}
		case c.In == SetCourses:
			for m := range t.courseViewers[v] {
				fn(m)
			}
		}
	}
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
	for p := range t.all {
		s.Profiles[p] = true
	}
	return s
}

func memberRule(entity string) Rule {
	return (&Scope{Viewer: Viewer{Role: RoleMember}}).RuleFor(entity)
}

func fieldOf(field, id string, names [2]string, r LinkRow) string {
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

// sees reports whether the member sees the profile or course of k now.
func (t *Tracker) sees(k sightKey) bool {
	m := t.members[k.member]
	if m == nil {
		return false
	}
	if k.set == SetProfiles {
		return m.profiles[k.id] > 0 || t.all[k.id] > 0
	}
	return m.courses[k.id] > 0
}

// count adds d to the reasons that the row of entity gives followed members
// (only that member when only is set) to see profiles and courses: DESIGN
// §4, the same reasons as NewScope's.
func (t *Tracker) count(entity, id string, r LinkRow, d int, only string) {
	followed := func(m string) *refs {
		if m == "" || only != "" && m != only {
			return nil
		}
		return t.members[m]
	}
	switch entity {
	case Profiles:
		if m := followed(r.A); m != nil {
			t.add(r.A, m, SetProfiles, id, d)
		}
	case ProfileShares:
		if r.A == "" {
			return
		}
		if r.B == ShareAll {
			if only == "" {
				for member := range t.members {
					t.touch(sightKey{member, SetProfiles, r.A})
				}
				t.all[r.A] += d
				if t.all[r.A] <= 0 {
					delete(t.all, r.A)
				}
			}
			return
		}
		if m := followed(r.B); m != nil {
			t.add(r.B, m, SetProfiles, r.A, d)
		}
	case Sessions:
		if m := followed(r.B); m != nil && r.A != "" {
			t.add(r.B, m, SetProfiles, r.A, d)
		}
	case Courses:
		if m := followed(r.A); m != nil {
			t.add(r.A, m, SetCourses, id, d)
			if only != "" {
				return // Follow counts the course's members itself
			}
			for cm := range t.byCourse[id] {
				if mr, ok := t.links.Get(CourseMembers, cm); ok && mr.B != "" {
					t.add(r.A, m, SetProfiles, mr.B, d)
				}
			}
		}
	case CourseMembers:
		if only == "" {
			t.indexMember(id, r, d)
		}
		if r.B == "" {
			return
		}
		if crs, ok := t.links.Get(Courses, r.A); ok {
			if m := followed(crs.A); m != nil {
				t.add(crs.A, m, SetProfiles, r.B, d)
			}
		}
	}
}

// indexMember adds (d 1) or removes (d -1) a course_members row from its
// course's index.
func (t *Tracker) indexMember(id string, r LinkRow, d int) {
	if r.A == "" {
		return
	}
	if d > 0 {
		if t.byCourse[r.A] == nil {
			t.byCourse[r.A] = map[string]int{}
		}
		t.byCourse[r.A][id] = 1
		return
	}
	delete(t.byCourse[r.A], id)
	if len(t.byCourse[r.A]) == 0 {
		delete(t.byCourse, r.A)
	}
}

func (t *Tracker) add(member string, m *refs, set Set, id string, d int) {
	t.touch(sightKey{member, set, id})
	counts, viewers := m.profiles, t.profileViewers
	if set == SetCourses {
		counts, viewers = m.courses, t.courseViewers
	}
	counts[id] += d
	if counts[id] <= 0 {
		delete(counts, id)
		t.setViewer(viewers, id, member, false)
	} else {
		t.setViewer(viewers, id, member, true)
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

func (t *Tracker) setViewer(viewers map[string]map[string]bool, id, member string, on bool) {
	if on {
		if viewers[id] == nil {
			viewers[id] = map[string]bool{}
		}
		viewers[id][member] = true
		return
	}
	delete(viewers[id], member)
	if len(viewers[id]) == 0 {
		delete(viewers, id)
	}
}

// SawRow reports whether the followed member saw the row before a change
// whose shift is given, for a row whose link fields the change did not
// touch: the rule of RuleFor with the shift's gained profiles and courses
// not counted.
func (t *Tracker) SawRow(member, entity, id string, r LinkRow, shift Shift) bool {
	rule := memberRule(entity)
	if rule.All {
		return true
	}
	names := linkFields[entity]
	for _, c := range rule.Conds {
		v := fieldOf(c.Field, id, names, r)
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
