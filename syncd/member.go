package syncd

import (
	"context"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// memberView follows what a member sees as the stream advances: the link
// fields of the tenant at the connection's cursor and the member's scope.
type memberView struct {
	links *model.Links
	scope *model.Scope
}

// errResync ends a member's stream: what it sees shrank (or its role
// changed), so its local data must be replaced by a fresh shard.
type errResync struct{ reason string }

func (e *errResync) Error() string { return e.reason }

// loadMemberView rebuilds the tenant's link fields as of seq by replaying
// the change log up to it (every row entered through the log), and the
// member's scope on them.
func loadMemberView(ctx context.Context, t *store.Tenant, v model.Viewer, seq int64) (*memberView, error) {
	l := model.NewLinks()
	var at int64
	for at < seq {
		cs, _, err := t.Changes(ctx, at, 5000)
		if err != nil {
			return nil, err
		}
		if len(cs) == 0 {
			break
		}
		for _, c := range cs {
			if c.Seq > seq {
				at = seq
				break
			}
			l.Apply(c)
			at = c.Seq
		}
	}
	return &memberView{links: l, scope: model.NewScope(v, l)}, nil
}

// memberChanges turns one change of the log into what the member's device
// receives: nothing, the change, or full rows that just became visible. It
// returns an *errResync when visibility shrank.
func (c *liveConn) memberChanges(ctx context.Context, ch model.Change) ([]model.Change, error) {
	mv := c.member
	if !model.HasLinks(ch.Entity) { // accounts and practices: every member sees them
		return []model.Change{c.project(ch)}, nil
	}
	before, existed := mv.links.Get(ch.Entity, ch.ID)
	visBefore := existed && mv.scope.SeesRow(ch.Entity, ch.ID, before)
	affects := mv.links.Affects(c.viewer, ch)
	mv.links.Apply(ch)
	old := mv.scope
	if affects {
		mv.scope = model.NewScope(c.viewer, mv.links)
		if !subset(old.Profiles, mv.scope.Profiles) || !subset(old.Courses, mv.scope.Courses) {
			return nil, &errResync{reason: "visibility shrank"}
		}
	}
	after, exists := mv.links.Get(ch.Entity, ch.ID)
	visAfter := exists && mv.scope.SeesRow(ch.Entity, ch.ID, after)
	if visBefore && !visAfter && ch.Op == model.OpUpsert {
		return nil, &errResync{reason: "a row moved out of sight"}
	}
	var out []model.Change
	sent := map[[2]string]bool{}
	if affects {
		grown, err := c.grownRows(ctx, old, ch, sent)
		if err != nil {
			return nil, err
		}
		out = append(out, grown...)
	}
	key := [2]string{ch.Entity, ch.ID}
	switch {
	case sent[key]:
	case ch.Op == model.OpDelete && visBefore:
		out = append(out, ch)
	case visAfter && visBefore:
		out = append(out, c.project(ch))
	case visAfter:
		// Visible now, not before: the device needs the whole row.
		row, err := c.tenant.Row(ctx, ch.Entity, ch.ID)
		if errors.Is(err, store.ErrNotFound) {
			break // deleted later; that change comes in its turn
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c.project(model.Change{Seq: ch.Seq, Entity: ch.Entity, Op: model.OpUpsert, ID: ch.ID, Fields: row}))
	}
	return out, nil
}

// grownRows returns, as full upserts, the rows that hang on profiles and
// courses the member sees since ch and did not see before: the profiles,
// their sessions, shares and transactions, the courses, their members and
// attendances.
func (c *liveConn) grownRows(ctx context.Context, old *model.Scope, ch model.Change, sent map[[2]string]bool) ([]model.Change, error) {
	mv := c.member
	// What hangs on a profile or a course, found by the field naming it
	// ("" for the row itself).
	type lookup struct{ entity, field, value string }
	var lookups []lookup
	for p := range mv.scope.Profiles {
		if !old.Profiles[p] {
			for _, by := range [][2]string{{model.Profiles, ""}, {model.Sessions, "profile_id"}, {model.ProfileShares, "profile_id"}, {model.Transactions, "profile_id"}} {
				lookups = append(lookups, lookup{by[0], by[1], p})
			}
		}
	}
	for crs := range mv.scope.Courses {
		if !old.Courses[crs] {
			for _, by := range [][2]string{{model.Courses, ""}, {model.CourseMembers, "course_id"}, {model.Attendances, "course_id"}} {
				lookups = append(lookups, lookup{by[0], by[1], crs})
			}
		}
	}
	var out []model.Change
	for _, lk := range lookups {
		var rows map[string]map[string]any
		if lk.field == "" {
			row, err := c.tenant.Row(ctx, lk.entity, lk.value)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("rows that became visible: %w", err)
			}
			rows = map[string]map[string]any{lk.value: row}
		} else {
			var err error
			if rows, err = c.tenant.RowsBy(ctx, lk.entity, lk.field, lk.value); err != nil {
				return nil, fmt.Errorf("rows that became visible: %w", err)
			}
		}
		for id, fields := range rows {
			key := [2]string{lk.entity, id}
			link, ok := mv.links.Get(lk.entity, id)
			if sent[key] || !ok { // created after ch: its own change comes in its turn
				continue
			}
			wasVisible := old.SeesRow(lk.entity, id, link)
			if key == [2]string{ch.Entity, ch.ID} {
				wasVisible = false // decided by memberChanges for ch's own row
			}
			if wasVisible || !mv.scope.SeesRow(lk.entity, id, link) {
				continue
			}
			sent[key] = true
			out = append(out, c.project(model.Change{Seq: ch.Seq, Entity: lk.entity, Op: model.OpUpsert, ID: id, Fields: fields}))
		}
	}
	return out, nil
}

func subset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
