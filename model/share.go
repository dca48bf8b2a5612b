package model

import (
	"maps"
	"time"
)

// This file is DESIGN §4's "sharing is irreversible", written once: a
// profile share, once made, is never changed or deleted by any writer.
// ShareWrite judges every writer's change of a share (the store calls it
// for practice PCs and devices alike); CanWrite refuses a device's write
// to an existing share before that (shareFixed): a device may not even
// repeat one.

// shareFixedReason is the refusal of a device's write to an existing share.
const shareFixedReason = "a profile share can never be changed or deleted"

// shareFixed reports whether a device's change c would touch a profile
// share that exists (before is its row, nil when there is none) or delete
// one.
func shareFixed(c Change, before map[string]any) bool {
	return c.Entity == ProfileShares && (c.Op == OpDelete || before != nil)
}

// sharedProfileReason is the refusal of deleting a profile that is shared.
const sharedProfileReason = "a shared profile is removed only by erasure (a practice push of {\"entity\": \"profiles\", \"op\": \"erase\", \"id\": …})"

// SharedProfileDelete refuses change c, index being its position in its
// batch, when it deletes a profile that has a share: its shares can never
// be deleted, and they would be left naming no profile. Erasure removes
// both. It returns a *ForbiddenError, look's error, or nil.
func SharedProfileDelete(index int, c Change, look Rows) error {
	if c.Entity != Profiles || c.Op != OpDelete {
		return nil
	}
	shares, err := look.Find(ProfileShares, map[string]string{"profile_id": c.ID})
	if err != nil {
		return err
	}
	if len(shares) > 0 {
		return &ForbiddenError{Index: index, Entity: Profiles, Reason: sharedProfileReason}
	}
	return nil
}

// StampShare gives a device's new profile share (c, before being the row
// before it: nil for a new one) its writer's account as shared_by when
// the change leaves it out: the server knows who shared. It returns c,
// with a copy of its fields when it adds one.
func StampShare(c Change, before map[string]any, by string) Change {
	if c.Entity != ProfileShares || c.Op != OpUpsert || before != nil || c.Fields["shared_by"] != nil {
		return c
	}
	c.Fields = maps.Clone(c.Fields)
	if c.Fields == nil {
		c.Fields = map[string]any{}
	}
	c.Fields["shared_by"] = by
	return c
}

// ShareWrite decides change c of a profile share for any writer, index
// being the change's position in its batch: a delete is refused, and so is
// an upsert that gives an existing share another value; an upsert that
// repeats an existing share's values changes nothing (skip). A new share
// needs profile_id and account_id and is stamped with shared_at = now
// unless it carries one. It returns c with the fields to write (a copy of
// c's when it adds one), or a *ForbiddenError or *ValidationError, or
// look's error. c.Entity must be ProfileShares.
func ShareWrite(index int, c Change, look Rows, now time.Time) (write Change, skip bool, err error) {
	if c.Op == OpDelete {
		return c, false, &ForbiddenError{Index: index, Entity: ProfileShares, Reason: "a profile share can never be deleted"}
	}
	before, err := look.Row(ProfileShares, c.ID)
	if err != nil {
		return c, false, err
	}
	if before == nil {
		for _, req := range []string{"profile_id", "account_id"} {
			if s, _ := c.Fields[req].(string); s == "" {
				return c, false, &ValidationError{Index: index, Entity: ProfileShares, Field: req, Reason: "is required when a share is created"}
			}
		}
		if c.Fields["shared_at"] == nil {
			c.Fields = maps.Clone(c.Fields)
			c.Fields["shared_at"] = now.UTC().Format(time.RFC3339)
		}
		return c, false, nil
	}
	e, _ := Lookup(ProfileShares)
	for _, f := range e.Fields {
		if v, ok := c.Fields[f.Name]; ok && v != before[f.Name] {
			return c, false, &ForbiddenError{Index: index, Entity: ProfileShares, Reason: "a profile share can never be changed"}
		}
	}
	return c, true, nil
}
