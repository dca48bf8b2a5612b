package syncd

// This file is how the feed decides what each view receives of a batch
// of changes: under its lock, letting go of it only to read the store.

import (
	"context"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// dispatchLocked decides what every view receives of cs, in seq order, and
// sends each view's frame to its connections.
func (f *feed) dispatchLocked(ctx context.Context, cs []model.Change) {
	for _, ch := range cs {
		if endsAccess(ch) {
			for c := range f.byAccount[ch.ID] {
				if ch.Seq > c.startSeq.Load() {
					c.s.metrics.revocationCloses.Inc()
					c.stop(wire.CloseRevoked, "device revoked", nil)
					f.dropLocked(c)
				}
			}
		}
		if ch.Entity == model.Accounts && ch.Fields["role"] != nil {
			// The device's data is what its old role saw: it needs a shard.
			for c := range f.byAccount[ch.ID] {
				if c.viewer.Role != ch.Fields["role"] {
					f.resyncLocked(c, "the account's role changed")
				}
			}
		}
		ex := &existence{} // asked at most once per change
		// Whether the row existed is asked before the views are walked: the
		// question may let go of the lock, and views may leave meanwhile.
		for _, v := range f.shared {
			if emptied(ch, project(v.key.practice, v.key.role, ch)) {
				f.existedLocked(ctx, ch, ex)
				break
			}
		}
		for _, v := range f.shared {
			if pc := project(v.key.practice, v.key.role, ch); !emptied(ch, pc) || !ex.existed {
				f.emitLocked(v, pc)
			}
		}
		f.dispatchMembersLocked(ctx, ch, ex)
	}
	for _, v := range f.dirty {
		f.flushLocked(v)
	}
	clear(f.dirty)
	f.dirty = f.dirty[:0]
}

// endsAccess reports whether ch ends the app access of the account it
// changes (DESIGN §5): the account deleted, app_enabled set to anything
// but true (false or null), or its role removed.
func endsAccess(ch model.Change) bool {
	if ch.Entity != model.Accounts {
		return false
	}
	if ch.Op == model.OpDelete {
		return true
	}
	if v, ok := ch.Fields["app_enabled"]; ok && v != true {
		return true
	}
	if v, ok := ch.Fields["role"]; ok {
		r, _ := v.(string)
		return !model.ValidRole(r)
	}
	return false
}

// emitLocked adds changes to what the view receives in this batch.
func (f *feed) emitLocked(v *view, cs ...model.Change) {
	if len(cs) == 0 {
		return
	}
	if len(v.out) == 0 {
		f.dirty = append(f.dirty, v)
	}
	v.out = append(v.out, cs...)
}

// dispatchMembersLocked decides what each member view receives of ch and
// applies ch to the tracker.
func (f *feed) dispatchMembersLocked(ctx context.Context, ch model.Change, ex *existence) {
	tr := f.tracker
	if !model.HasLinks(ch.Entity) { // accounts and practices: every member sees them
		pc := project(false, model.RoleMember, ch)
		if emptied(ch, pc) && f.hasMemberViewLocked() && f.existedLocked(ctx, ch, ex) { // asks the store once, and only with a member view
			tr.Apply(ch)
			return
		}
		tr.Apply(ch)
		for _, v := range f.views {
			if v.key.account != "" {
				f.emitLocked(v, pc)
			}
		}
		return
	}
	// The members who may see the row before or after, or whose sight the
	// change moves: nobody else needs a look.
	saw := map[string]bool{}
	if prev, ok := tr.Links().Get(ch.Entity, ch.ID); ok {
		tr.Viewers(ch.Entity, ch.ID, prev, func(m string) { saw[m] = tr.SeesRow(m, ch.Entity, ch.ID, prev) })
	}
	_, existed, shifts := tr.Apply(ch)
	cands := map[string]model.Shift{}
	for m := range saw {
		cands[m] = model.Shift{Member: m}
	}
	if after, ok := tr.Links().Get(ch.Entity, ch.ID); ok {
		tr.Viewers(ch.Entity, ch.ID, after, func(m string) { cands[m] = model.Shift{Member: m} })
	}
	for _, s := range shifts {
		cands[s.Member] = s
	}
	for m, shift := range cands {
		v := f.views[viewKey{role: model.RoleMember, account: m}]
		if v == nil {
			continue
		}
		if shift.Shrank && f.fadeLocked(v, shift) {
			shift.Shrank = false
		}
		out, err := memberOut(ctx, unlocked{f}, tr, m, ch, existed, saw[m], shift)
		if rs, ok := err.(*errResync); ok {
			for c := range v.conns {
				f.resyncLocked(c, rs.reason)
			}
			continue
		}
		if err != nil {
			f.log.Error("live feed: rows that became visible", "tenant", f.tenant.ID(), "err", err)
			for c := range v.conns {
				c.stop(wire.CloseInternalServerErr, "internal error", nil)
				f.dropLocked(c)
			}
			continue
		}
		f.emitLocked(v, out...)
	}
	if ch.Op == model.OpDelete {
		f.fadedLocked(ch, saw)
	}
}

// fadeLocked, during an erasure's read (erasing), takes a member view's
// loss of sight of profiles (shift) as the start of their deletes: the
// rows it saw through them and sees no more are noted (fading) to have
// their deletes sent to it. It reports false when the loss cannot wait
// for its deletes: outside an erasure, or a course lost.
func (f *feed) fadeLocked(v *view, shift model.Shift) bool {
	if !f.erasing || len(shift.LostCourses) > 0 {
		return false
	}
	tr := f.tracker
	for _, p := range shift.LostProfiles {
		for _, r := range tr.Hanging(model.SetProfiles, p) {
			link, _ := tr.Links().Get(r.Entity, r.ID)
			if tr.SeesRow(v.key.account, r.Entity, r.ID, link) {
				continue // still in sight by another reason
			}
			if f.fading[r] == nil {
				f.fading[r] = map[*view]struct{}{}
			}
			f.fading[r][v] = struct{}{}
		}
	}
	return true
}

// fadedLocked sends the delete ch of a fading row to the views that saw it
// through a profile they lost in this read, unless they got it anyway
// (saw, by member).
func (f *feed) fadedLocked(ch model.Change, saw map[string]bool) {
	r := model.RowRef{Entity: ch.Entity, ID: ch.ID}
	for v := range f.fading[r] {
		if f.views[v.key] == v && !saw[v.key.account] {
			f.emitLocked(v, ch)
		}
	}
	delete(f.fading, r)
}

// finishErasureLocked ends an erasure's read: joins may go on, and a
// member view for which a row it saw through a lost profile is left (not
// deleted, and out of its sight) gets resync, as for any loss of sight.
func (f *feed) finishErasureLocked() {
	if !f.erasing {
		return
	}
	f.erasing, f.dispatching = false, false
	for r, vs := range f.fading {
		link, exists := f.tracker.Links().Get(r.Entity, r.ID)
		for v := range vs {
			if !exists || f.views[v.key] != v || f.tracker.SeesRow(v.key.account, r.Entity, r.ID, link) {
				continue
			}
			for c := range v.conns {
				f.resyncLocked(c, "visibility shrank")
			}
		}
	}
	clear(f.fading)
}

// resyncLocked ends c's stream with resync (see liveConn.resync) and takes
// it out of its view.
func (f *feed) resyncLocked(c *liveConn, reason string) {
	c.resync(reason)
	f.dropLocked(c)
}

// flushLocked sends the view's frame, encoded once, to its connections.
func (f *feed) flushLocked(v *view) {
	if len(v.out) == 0 {
		return
	}
	frame := mustJSON(wire.Changes{Type: wire.TypeChanges, Changes: v.out})
	for c := range v.conns {
		c.enqueue(frame)
	}
	f.metrics.changesSent.Add(float64(len(v.out) * len(v.conns)))
	v.out = v.out[:0]
}

// hasMemberViewLocked reports whether a member account has a view.
func (f *feed) hasMemberViewLocked() bool {
	for k := range f.views {
		if k.account != "" {
			return true
		}
	}
	return false
}

// existence is whether a change's row existed before it, once asked.
type existence struct {
	known, existed bool
}

// existedLocked reports whether ch's row existed before ch, which the
// tracker has not applied yet: from the tracker's link fields for a linked
// entity, else from the store. When the store cannot tell, the row counts
// as new, so that the change is sent.
func (f *feed) existedLocked(ctx context.Context, ch model.Change, ex *existence) bool {
	if ex.known {
		return ex.existed
	}
	ex.known = true
	if model.HasLinks(ch.Entity) {
		_, ex.existed = f.tracker.Links().Get(ch.Entity, ch.ID)
		return ex.existed
	}
	existed, err := unlocked{f}.ExistedBefore(ctx, ch.Entity, ch.ID, ch.Seq)
	if err != nil {
		f.log.Error("live feed: did the row exist", "tenant", f.tenant.ID(), "seq", ch.Seq, "err", err)
	}
	ex.existed = existed
	return existed
}

// unlocked reads the tenant's store for the feed's goroutine while it
// dispatches: it lets go of the feed's lock during the read (no lock is
// held during I/O), and join waits meanwhile (dispatching). The tracker
// and the views stay the dispatcher's: others only leave.
type unlocked struct{ f *feed }

func (u unlocked) Row(ctx context.Context, entity, id string) (map[string]any, error) {
	u.f.mu.Unlock()
	defer u.f.mu.Lock()
	return u.f.tenant.Row(ctx, entity, id)
}

func (u unlocked) RowsBy(ctx context.Context, entity, field, value string) (map[string]map[string]any, error) {
	u.f.mu.Unlock()
	defer u.f.mu.Lock()
	return u.f.tenant.RowsBy(ctx, entity, field, value)
}

func (u unlocked) ExistedBefore(ctx context.Context, entity, id string, seq int64) (bool, error) {
	u.f.mu.Unlock()
	defer u.f.mu.Lock()
	return u.f.tenant.ExistedBefore(ctx, entity, id, seq)
}
