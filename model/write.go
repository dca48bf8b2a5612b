package model

import (
	"errors"
	"fmt"
)

// This file is the write half of the access policy (DESIGN §4): which
// changes a device's account may make. Practice PCs write everything and do
// not ask it.

// secretarySessionFields are the session fields a secretary may change.
var secretarySessionFields = map[string]bool{"starts_at": true, "duration_min": true, "price_cents": true, "status": true}

// CanWrite decides whether the viewer may make change c, given the row's
// current fields (before, nil when the row does not exist) and the tenant's
// other rows as look reads them. It returns nil, a *ForbiddenError saying
// why not (with index as the change's position), or look's error.
//
// A write never widens what its writer sees (DESIGN §4): a member's write
// may name, in a field that gives it a reason to see rows, only a profile
// or course it sees already. A device creates rows only under UUIDs
// (DESIGN §3), so that it cannot take an id the practice PC will use for
// its own rows (they would merge into the device's). A refusal's reason
// never tells whether a row the writer cannot see exists.
func CanWrite(v Viewer, index int, c Change, before map[string]any, look Rows) error {
	deny := func(format string, args ...any) error {
		return &ForbiddenError{Index: index, Entity: c.Entity, Reason: fmt.Sprintf(format, args...)}
	}
	if !ValidRole(v.Role) {
		return deny("the account has no role")
	}
	if c.Op == OpErase {
		return deny("only the practice erases a profile (POST /v1/practice/changes)")
	}
	if v.Role == RoleMember {
		return memberCanWrite(v.ID, c, before, look, deny)
	}
	if before == nil && c.Op == OpUpsert && !IsUUID(c.ID) {
		return deny("a device creates rows only with a UUID as id, not %q", c.ID)
	}
	if shareFixed(c, before) {
		return deny(shareFixedReason)
	}
	if err := SharedProfileDelete(index, c, look); err != nil {
		return err
	}
	if v.Role == RoleAdmin {
		return nil
	}
	if c.Op == OpDelete {
		return deny("a %s deletes nothing", v.Role)
	}
	switch v.Role {
	case RoleSecretary:
		switch c.Entity {
		case Profiles, Transactions, Attendances:
			return nil
		case Sessions:
			if before == nil {
				return deny("a secretary never creates a session")
			}
			for f := range c.Fields {
				if !secretarySessionFields[f] {
					return deny("a secretary changes only starts_at, duration_min, price_cents and status of a session, not %s", f)
				}
			}
			return nil
		}
		return deny("a secretary does not write %s", c.Entity)
	}
	return deny("not allowed")
}

// memberCanWrite is CanWrite for a member me. Whatever a member may not
// write of a row it does not see, or of a row that does not exist, reads
// the same (notWritable): a delete, a write to an unseen row, a create
// under an id that is not a UUID or that other rows name, one naming rows
// it does not see. Only for a row it sees does it learn why.
func memberCanWrite(me string, c Change, before map[string]any, look Rows, deny func(string, ...any) error) error {
	if c.Op == OpDelete {
		return notWritable(c, deny) // a member deletes nothing
	}
	if err := memberSeesTarget(me, c, before, look, deny); err != nil {
		return err
	}
	if shareFixed(c, before) {
		return deny(shareFixedReason)
	}
	err := memberWrite(me, c, before, look, deny)
	var fe *ForbiddenError
	if before == nil && errors.As(err, &fe) {
		return notWritable(c, deny)
	}
	return err
}

// notWritable is the refusal of a member's write to a row it does not see
// or that does not exist (and may not be created under that id): the
// same words either way.
func notWritable(c Change, deny func(string, ...any) error) error {
	return deny("%s is not a row this account may write, or it names a row this account does not see", c.ID)
}

// memberSeesTarget refuses a member's write to an existing row it does not
// see, and its creation of a row under an id that is not a UUID, with the
// same words.
func memberSeesTarget(me string, c Change, before map[string]any, look Rows, deny func(string, ...any) error) error {
	if before == nil {
		if c.Op == OpUpsert && !IsUUID(c.ID) {
			return notWritable(c, deny)
		}
		return nil
	}
	ok, err := SeesRow(me, c.Entity, c.ID, before, look)
	if err != nil {
		return err
	}
	if !ok {
		return notWritable(c, deny)
	}
	return nil
}

// memberWrite is CanWrite for a member me: the rows of the write table,
// and no field naming a profile, course or session it does not see.
func memberWrite(me string, c Change, before map[string]any, look Rows, deny func(string, ...any) error) error {
	w := memberChange{me: me, c: c, before: before, look: look, deny: deny}
	switch c.Entity {
	case Profiles:
		return w.profile()
	case ProfileShares:
		return w.share()
	case Sessions:
		return w.session()
	case Attendances:
		return w.attendance()
	case Transactions:
		return w.transaction()
	}
	return deny("a member does not write %s", c.Entity)
}

// memberChange is a member's change c with its row's fields before it
// (nil for a new row), what memberWrite's rules for each entity read.
type memberChange struct {
	me     string
	c      Change
	before map[string]any
	look   Rows
	deny   func(string, ...any) error
}

// after is the value field f will have once the change is applied.
func (w memberChange) after(f string) string {
	if val, ok := w.c.Fields[f]; ok {
		s, _ := val.(string)
		return s
	}
	s, _ := w.before[f].(string)
	return s
}

// was is the value of field f before the change.
func (w memberChange) was(f string) string { s, _ := w.before[f].(string); return s }

// changed is true when the write sets field f to a new value (or creates
// the row).
func (w memberChange) changed(f string) bool {
	return w.after(f) != "" && (w.before == nil || w.was(f) != w.after(f))
}

// notYours refuses a write to a row that exists: every such refusal reads
// the same, whether the member sees the row or not.
func (w memberChange) notYours() error { return notWritable(w.c, w.deny) }

// seesProfile refuses a change that sets field f to a profile the member
// does not see.
func (w memberChange) seesProfile(f string) error {
	if !w.changed(f) {
		return nil
	}
	ok, err := SeesProfile(w.me, w.after(f), w.look)
	if err != nil {
		return err
	}
	if !ok {
		return w.deny("%s does not name a profile this account sees", f)
	}
	return nil
}

// profile is memberWrite for a profile: the member's own, and a new one
// only under an id no other row names.
func (w memberChange) profile() error {
	if w.before != nil && w.was("owner_id") != w.me {
		return w.notYours()
	}
	if w.after("owner_id") != w.me {
		return w.deny("a member's profile must stay owned by it")
	}
	if w.before != nil {
		return nil
	}
	return w.unclaimedProfile()
}

// unclaimedProfile refuses a new profile whose id rows the member does not
// see already name: a new profile is the member's own row, and rows that
// name its id (left by the practice) would come into sight with it.
func (w memberChange) unclaimedProfile() error {
	ok, err := SeesProfile(w.me, w.c.ID, w.look)
	if err != nil || ok {
		return err
	}
	for _, e := range []string{Sessions, ProfileShares, Transactions} {
		rows, err := w.look.Find(e, map[string]string{"profile_id": w.c.ID})
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			return notWritable(w.c, w.deny)
		}
	}
	return nil
}

// share is memberWrite for a profile share: of a profile the member owns,
// shared by the member itself.
func (w memberChange) share() error {
	p, err := w.look.Row(Profiles, w.after("profile_id"))
	if err != nil {
		return err
	}
	if owner, _ := p["owner_id"].(string); p == nil || owner != w.me {
		return w.deny("profile_id does not name a profile this account owns")
	}
	if by := w.after("shared_by"); by != "" && by != w.me {
		return w.deny("shared_by must be the member itself")
	}
	return nil
}

// session is memberWrite for a session: the member stays its therapist,
// and it names only a profile the member sees.
func (w memberChange) session() error {
	if w.before != nil && w.was("therapist_id") != w.me {
		return w.notYours()
	}
	if w.after("therapist_id") != w.me {
		return w.deny("a member's session must keep it as the therapist")
	}
	return w.seesProfile("profile_id")
}

// attendance is memberWrite for an attendance: in a course of the member
// (before and after), not of a Springer, of a profile the member sees.
func (w memberChange) attendance() error {
	for _, course := range []string{w.was("course_id"), w.after("course_id")} {
		if course == "" && w.before == nil {
			continue
		}
		ok, err := SeesCourse(w.me, course, w.look)
		if err != nil {
			return err
		}
		if !ok {
			if w.before != nil {
				return w.notYours()
			}
			return w.deny("course_id does not name a course of this account")
		}
	}
	if w.after("course_id") == "" {
		return w.deny("an attendance needs a course")
	}
	// A Springer is a regular of another course, whose membership (and
	// units) the member does not see: an account that sees every course
	// (a secretary's tablet) checks Springer in.
	if sp, ok := w.c.Fields["springer"]; ok && sp == true || !ok && w.before["springer"] == true {
		return w.deny("a member checks in only the regulars of its own courses, not a Springer")
	}
	return w.seesProfile("profile_id")
}

// transaction is memberWrite for a transaction: the member's own, naming
// only a profile and a session it sees.
func (w memberChange) transaction() error {
	if w.before != nil && w.was("account_id") != w.me {
		return w.notYours()
	}
	if w.after("account_id") != w.me {
		return w.deny("a member's transaction must keep account_id = itself")
	}
	if err := w.seesProfile("profile_id"); err != nil {
		return err
	}
	if !w.changed("session_id") {
		return nil
	}
	return w.seesSession(w.after("session_id"))
}

// seesSession refuses a transaction naming a session the member does not
// see: one it is not the therapist of, of a profile it does not see.
func (w memberChange) seesSession(id string) error {
	ses, err := w.look.Row(Sessions, id)
	if err != nil {
		return err
	}
	if ses != nil {
		th, _ := ses["therapist_id"].(string)
		p, _ := ses["profile_id"].(string)
		ok := th == w.me
		if !ok {
			if ok, err = SeesProfile(w.me, p, w.look); err != nil {
				return err
			}
		}
		if ok {
			return nil
		}
	}
	return w.deny("session_id does not name a session this account sees")
}
