package model

import (
	"maps"
	"net/mail"
	"strings"
)

// This file is DESIGN §3's default role: "an account pushed without a role
// is a member" (the seed product adds every account as a group member).

// DefaultRole gives a new account (before is its row before the change:
// nil when there is none) that the upsert c creates without a role, or
// with a null one, the member role. An existing account keeps its role
// when a change leaves it out; a null written to an existing account's
// role removes it (and so its access, DESIGN §5). It returns c, with a
// copy of its fields when it adds the role.
func DefaultRole(c Change, before map[string]any) Change {
	if c.Entity != Accounts || c.Op != OpUpsert || before != nil || c.Fields["role"] != nil {
		return c
	}
	c.Fields = maps.Clone(c.Fields)
	if c.Fields == nil {
		c.Fields = map[string]any{}
	}
	c.Fields["role"] = RoleMember
	return c
}

// ValidEmail reports whether s is one plain, syntactically valid address
// (a precondition of the app, DESIGN §5).
func ValidEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && strings.Contains(s, "@")
}
