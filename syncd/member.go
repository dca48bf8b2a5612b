package syncd

import (
	"context"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// rowReader reads a tenant's current rows for the stream's decisions: the
// store itself on a catch-up's goroutine, or the feed's reader, which lets
// go of the feed's lock while it reads (feed.unlocked).
type rowReader interface {
	Row(ctx context.Context, entity, id string) (map[string]any, error)
	RowsBy(ctx context.Context, entity, field, value string) (map[string]map[string]any, error)
	ExistedBefore(ctx context.Context, entity, id string, seq int64) (bool, error)
}

// errResync ends a member's stream: what it sees shrank (or its role
// changed), so its local data must be replaced by a fresh shard.
type errResync struct{ reason string }

func (e *errResync) Error() string { return e.reason }

// loadTracker rebuilds the tenant's link fields as of seq (the current ones,
// with the rows changed since rebuilt from their own history) and follows
// the member on them: what a member's connection catching up from seq
// needs.
func loadTracker(ctx context.Context, t *store.Tenant, member string, seq int64) (*model.Tracker, error) {
	l, err := t.LinksAt(ctx, seq)
	if err != nil {
		return nil, err
	}
	tr := model.NewTracker(l)
	tr.Follow(member)
	return tr, nil
}

// memberStep applies ch to tr, which follows member, and returns what the
// member's device receives.
func memberStep(ctx context.Context, t rowReader, tr *model.Tracker, member string, ch model.Change) ([]model.Change, error) {
	if !model.HasLinks(ch.Entity) {
		tr.Apply(ch)
		pc := project(false, model.RoleMember, ch)
		if emptied(ch, pc) {
			if existed, err := t.ExistedBefore(ctx, ch.Entity, ch.ID, ch.Seq); err != nil || existed {
				return nil, err // nothing the member may see changed
			}
		}
		return []model.Change{pc}, nil
	}
	prev, existed := tr.Links().Get(ch.Entity, ch.ID)
	saw := existed && tr.SeesRow(member, ch.Entity, ch.ID, prev)
	_, _, shifts := tr.Apply(ch)
	shift := model.Shift{Member: member}
	for _, s := range shifts {
		if s.Member == member {
			shift = s
		}
	}
	return memberOut(ctx, t, tr, member, ch, existed, saw, shift)
}

// memberOut returns what member m's devices receive for ch, which tr has
// just applied: nothing, the change, or full rows that just became
// visible. existed and saw tell whether ch's row existed and whether m saw
// it before ch; shift is how ch moved what m sees. It returns an *errResync
// when m's sight shrank.
func memberOut(ctx context.Context, t rowReader, tr *model.Tracker, m string, ch model.Change, existed, saw bool, shift model.Shift) ([]model.Change, error) {
	if shift.Shrank {
		return nil, &errResync{reason: "visibility shrank"}
	}
	after, exists := tr.Links().Get(ch.Entity, ch.ID)
	sees := exists && tr.SeesRow(m, ch.Entity, ch.ID, after)
	if saw && !sees && ch.Op == model.OpUpsert {
		return nil, &errResync{reason: "a row moved out of sight"}
	}
	var out []model.Change
	sent := map[[2]string]bool{}
	if len(shift.Profiles)+len(shift.Courses) > 0 {
		grown, err := grownRows(ctx, t, tr, m, ch, shift, sent)
		if err != nil {
			return nil, err
		}
		out = append(out, grown...)
	}
	switch {
	case sent[[2]string{ch.Entity, ch.ID}]:
	case ch.Op == model.OpDelete:
		if saw {
			out = append(out, ch)
		}
	case saw && sees:
		out = append(out, project(false, model.RoleMember, ch))
	case sees && !existed:
		// A new row: the change holds all of it.
		out = append(out, project(false, model.RoleMember, ch))
	case sees:
		// An existing row came into sight: the device needs all of it.
		row, err := t.Row(ctx, ch.Entity, ch.ID)
		if errors.Is(err, store.ErrNotFound) {
			break // deleted later; that change comes in its turn
		}
		if err != nil {
			return nil, err
		}
		out = append(out, project(false, model.RoleMember, model.Change{Seq: ch.Seq, Entity: ch.Entity, Op: model.OpUpsert, ID: ch.ID, Fields: row}))
	}
	return out, nil
}

// grownRows returns, as full upserts, the rows that hang on the profiles
// and courses member m gained with ch and that m did not see before: the
// profiles, their sessions, shares and transactions, the courses, their
// members and attendances.
func grownRows(ctx context.Context, t rowReader, tr *model.Tracker, m string, ch model.Change, shift model.Shift, sent map[[2]string]bool) ([]model.Change, error) {
	// What hangs on a profile or a course (model.Dependents), found by the
	// field naming it ("id" for the row itself).
	type lookup struct{ entity, field, value string }
	var lookups []lookup
	for _, g := range []struct {
		set model.Set
		ids []string
	}{{model.SetProfiles, shift.Profiles}, {model.SetCourses, shift.Courses}} {
		for _, id := range g.ids {
			for _, d := range model.Dependents(g.set) {
				lookups = append(lookups, lookup{d.Entity, d.Field, id})
			}
		}
	}
	var out []model.Change
	for _, lk := range lookups {
		var rows map[string]map[string]any
		if lk.field == "id" {
			row, err := t.Row(ctx, lk.entity, lk.value)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("rows that became visible: %w", err)
			}
			rows = map[string]map[string]any{lk.value: row}
		} else {
			var err error
			if rows, err = t.RowsBy(ctx, lk.entity, lk.field, lk.value); err != nil {
				return nil, fmt.Errorf("rows that became visible: %w", err)
			}
		}
		for id, fields := range rows {
			key := [2]string{lk.entity, id}
			link, ok := tr.Links().Get(lk.entity, id)
			if sent[key] || !ok { // created after ch: its own change comes in its turn
				continue
			}
			// ch's own row is decided by memberOut; any other was seen
			// before if it was visible without what ch added.
			if key != [2]string{ch.Entity, ch.ID} && tr.SawRow(m, lk.entity, id, link, shift) || !tr.SeesRow(m, lk.entity, id, link) {
				continue
			}
			sent[key] = true
			out = append(out, project(false, model.RoleMember, model.Change{Seq: ch.Seq, Entity: lk.entity, Op: model.OpUpsert, ID: id, Fields: fields}))
		}
	}
	return out, nil
}
