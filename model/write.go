package model

import "fmt"

// This file is the write half of the access policy (DESIGN §4): which
// changes a device's account may make. Practice PCs write everything and do
// not ask it.

// Rows looks up the current fields of a row, nil when there is none.
type Rows func(entity, id string) map[string]any

// secretarySessionFields are the session fields a secretary may change.
var secretarySessionFields = map[string]bool{"starts_at": true, "duration_min": true, "price_cents": true, "status": true}

// CanWrite decides whether the viewer may make change c, given the row's
// current fields (before, nil when the row does not exist) and a lookup of
// related rows. It returns nil or a *ForbiddenError saying why not (with
// index as the change's position).
func CanWrite(v Viewer, index int, c Change, before map[string]any, rows Rows) error {
	deny := func(format string, args ...any) error {
		return &ForbiddenError{Index: index, Entity: c.Entity, Reason: fmt.Sprintf(format, args...)}
	}
	if c.Entity == ProfileShares && (c.Op == OpDelete || before != nil) {
		return deny("a profile share can never be changed or deleted")
	}
	if v.Role == RoleAdmin {
		return nil
	}
	if !ValidRole(v.Role) {
		return deny("the account has no role")
	}
	if c.Op == OpDelete {
		return deny("a %s deletes nothing", v.Role)
	}
	// after is the value a field will have once the change is applied.
	after := func(f string) string {
		if val, ok := c.Fields[f]; ok {
			s, _ := val.(string)
			return s
		}
		s, _ := before[f].(string)
		return s
	}
	was := func(f string) string { s, _ := before[f].(string); return s }
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
	case RoleMember:
		switch c.Entity {
		case Profiles:
			if before != nil && was("owner_id") != v.ID {
				return deny("a member writes only the profiles it owns")
			}
			if after("owner_id") != v.ID {
				return deny("a member's profile must stay owned by it")
			}
			return nil
		case ProfileShares:
			p := rows(Profiles, after("profile_id"))
			if p == nil {
				return deny("the shared profile does not exist")
			}
			if owner, _ := p["owner_id"].(string); owner != v.ID {
				return deny("a member shares only the profiles it owns")
			}
			if by := after("shared_by"); by != "" && by != v.ID {
				return deny("shared_by must be the member itself")
			}
			return nil
		case Sessions:
			if before != nil && was("therapist_id") != v.ID {
				return deny("a member writes only the sessions it is the therapist of")
			}
			if after("therapist_id") != v.ID {
				return deny("a member's session must keep it as the therapist")
			}
			return nil
		case Attendances:
			for _, course := range []string{was("course_id"), after("course_id")} {
				if course == "" && before == nil {
					continue
				}
				crs := rows(Courses, course)
				if crs == nil {
					return deny("the attendance's course does not exist")
				}
				if th, _ := crs["therapist_id"].(string); th != v.ID {
					return deny("a member writes only the attendances of its own courses")
				}
			}
			if after("course_id") == "" {
				return deny("an attendance needs a course")
			}
			return nil
		case Transactions:
			if before != nil && was("account_id") != v.ID {
				return deny("a member writes only its own transactions")
			}
			if after("account_id") != v.ID {
				return deny("a member's transaction must keep account_id = itself")
			}
			return nil
		}
		return deny("a member does not write %s", c.Entity)
	}
	return deny("not allowed")
}
