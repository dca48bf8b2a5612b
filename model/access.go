package model

// This file is the app access rule of DESIGN §5 for an account: whether it
// may use the app, and what a change of its fields does to that
// (AppAccessChange): an access started or ended, a shard to build. The
// store reads the facts and acts on the answer.

// AppAccess is what of an account decides its app access: whether the
// account exists, its app_enabled and its role.
type AppAccess struct {
	Exists  bool
	Enabled bool
	Role    string
}

// On reports whether the account's app access is on: it exists, is
// app-enabled and has a role.
func (a AppAccess) On() bool { return a.Exists && AppAccessOn(a.Enabled, a.Role) }

// AppAccessOn reports whether an account with app_enabled enabled and role
// role may use the app.
func AppAccessOn(enabled bool, role string) bool { return enabled && ValidRole(role) }

// SetsAppAccess reports whether change c may start or end an account's app
// access: it deletes an account or sets its app_enabled or role (to null
// included).
func SetsAppAccess(c Change) bool {
	if c.Entity != Accounts {
		return false
	}
	if c.Op == OpDelete {
		return true
	}
	_, enabled := c.Fields["app_enabled"]
	_, role := c.Fields["role"]
	return enabled || role
}

// AccessChange is what an applied change did to an account's app access.
type AccessChange struct {
	// Changed is true when the access started or ended; Enabled says which.
	Changed bool
	Enabled bool
	// Reason says what changed it: "app_enabled true", "app_enabled false",
	// "app_enabled null", "role removed", "account deleted", "role set".
	Reason string
	// Build is true when the account's shard is to be built: its access
	// started, or its role changed while it stayed on.
	Build bool
}

// AppAccessChange decides what change c of an account (one SetsAppAccess
// reports, and that changed the row) did to its app access, from the
// access before and after it.
func AppAccessChange(c Change, before, after AppAccess) AccessChange {
	var out AccessChange
	if after.On() != before.On() {
		out = AccessChange{Changed: true, Enabled: after.On(), Reason: accessReason(c, after)}
	}
	out.Build = after.On() && !(before.On() && before.Role == after.Role)
	return out
}

// accessReason says which of an account's fields started or ended its app
// access.
func accessReason(c Change, after AppAccess) string {
	if c.Op == OpDelete {
		return "account deleted"
	}
	v, setsEnabled := c.Fields["app_enabled"]
	switch {
	case after.On():
		if setsEnabled {
			return "app_enabled true"
		}
		return "role set"
	case setsEnabled && v == nil:
		return "app_enabled null"
	case setsEnabled && v == false:
		return "app_enabled false"
	}
	return "role removed"
}
