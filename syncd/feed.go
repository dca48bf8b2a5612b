package syncd

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// feedSize is how many recent changes a tenant's feed keeps in memory;
// connections further behind read the store.
const feedSize = 20000

// Announcing caught_up to views that received nothing (so that their
// devices' cursors move on): once the feed was quiet for announceQuiet, to
// at most announceBudget connections at a time, announcePace apart. Ten
// thousand idle devices woken at once would delay every live delivery.
const (
	announceQuiet  = 20 * time.Millisecond
	announcePace   = 20 * time.Millisecond
	announceBudget = 200
	// announceMax is how long a busy tenant goes without announcing:
	// then it announces, paced, even while changes keep coming.
	announceMax = 10 * time.Second
)

// feed is a tenant's live stream in this process. Its goroutine reads each
// commit once from the store, decides once per view (the practice, admins,
// secretaries, each member account) what that view receives, encodes the
// frame once and hands it to the view's connections: a connection whose
// account sees nothing of a change is not woken. Connections behind the head
// catch up on their own goroutine (from the feed's memory or the store) and
// join a view when they reach the head. The hub owns the goroutine: it runs
// until stop is closed.
type feed struct {
	tenant  *store.Tenant
	log     *slog.Logger
	metrics *metrics
	wake    chan struct{} // capacity 1: new commits may exist
	stop    chan struct{}
	done    chan struct{} // closed when run and guard returned
	// recheck (capacity 1) asks guard to re-read the tenant's access now;
	// it does every recheckEvery anyway.
	recheck      chan struct{}
	recheckEvery time.Duration
	// epoch is the access epoch of the last read (-1 before the first);
	// owned by run.
	epoch int64

	mu sync.Mutex
	// Guarded by mu. While dispatching, the feed's goroutine lets go of mu
	// only to read the store (unlocked): join waits, so that no view is
	// added halfway through a batch; the rest may go on.
	dispatching bool
	ready       bool           // tracker loaded; latest is meaningful
	buf         []model.Change // consecutive seqs from first
	first       int64          // seq of buf[0]
	latest      int64          // the seq the tracker and the views are at
	tracker     *model.Tracker // link fields at latest; follows the members with a view
	// waiting are the connections catching up, woken when changes arrive.
	waiting map[*liveConn]struct{}
	views   map[viewKey]*view
	shared  []*view // the views of the practice, admins and secretaries
	dirty   []*view // views with output in the batch being dispatched
	// byAccount are the live (joined) device connections by account.
	byAccount map[string]map[*liveConn]struct{}
	// all are every connection of the tenant in this process, whose
	// access guard re-reads.
	all map[*liveConn]struct{}
}

// viewKey names a view: a member account, or a role shared by every
// account of it (admin, secretary) or the practice PCs.
type viewKey struct {
	practice bool
	role     string
	account  string // members only
}

// view is what one kind of viewer receives, and its joined connections.
type view struct {
	key       viewKey
	conns     map[*liveConn]struct{}
	out       []model.Change // the frame being built for the current batch
	announced int64          // the seq of the last caught_up sent
}

func newFeed(t *store.Tenant, log *slog.Logger, m *metrics, recheck time.Duration) *feed {
	f := &feed{tenant: t, log: log, metrics: m, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		recheck: make(chan struct{}, 1), recheckEvery: recheck, epoch: -1,
		waiting: map[*liveConn]struct{}{}, views: map[viewKey]*view{}, byAccount: map[string]map[*liveConn]struct{}{},
		all: map[*liveConn]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.run() }()
	go func() { defer wg.Done(); f.guard() }()
	go func() { wg.Wait(); close(f.done) }()
	f.poke()
	return f
}

// attach makes c one of the tenant's connections whose access guard
// re-reads.
func (f *feed) attach(c *liveConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all[c] = struct{}{}
}

// recheckSoon asks guard to re-read the tenant's access now.
func (f *feed) recheckSoon() {
	select {
	case f.recheck <- struct{}{}:
	default:
	}
}

// guard re-reads the tenant's access every recheckEvery, and when asked,
// and ends the connections it no longer grants (checkAccess): a lost
// revocation event delays a closing by at most that. It reads the store
// without holding the feed's lock.
func (f *feed) guard() {
	ctx := context.Background()
	tick := time.NewTicker(f.recheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		case <-f.recheck:
		}
		f.poke()           // and read the store: a commit whose wake-up was lost waits no longer
		conns := f.conns() // before the read: see read
		a, err := f.tenant.Access(ctx)
		if err != nil {
			f.log.Error("live feed: read access", "tenant", f.tenant.ID(), "err", err)
			continue
		}
		checkAccess(a, conns)
	}
}

// conns returns every connection of the tenant in this process.
func (f *feed) conns() []*liveConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*liveConn, 0, len(f.all))
	for c := range f.all {
		out = append(out, c)
	}
	return out
}

func (f *feed) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *feed) run() {
	ctx := context.Background()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	announced := time.Now() // when the last announcement round ended
	announcing := false     // a round is under way: keep its pace
	for {
		select {
		case <-f.stop:
			quiet.Stop()
			return
		case <-f.wake:
			if err := f.read(ctx); err != nil {
				f.log.Error("live feed: read changes", "tenant", f.tenant.ID(), "err", err)
			}
			f.wakeWaiting() // on an error, they fall back to the store and report there
			if !announcing {
				announcing = time.Since(announced) >= announceMax
				if announcing {
					quiet.Reset(announcePace)
				} else {
					quiet.Reset(announceQuiet)
				}
			}
		case <-quiet.C:
			if f.announce(announceBudget) {
				announcing = true
				quiet.Reset(announcePace)
			} else {
				announcing, announced = false, time.Now()
			}
		}
	}
}

func (f *feed) wakeWaiting() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.waiting {
		c.wakeUp()
	}
}

// read loads the tracker on first use, then reads the changes committed
// since latest and dispatches them to the views.
func (f *feed) read(ctx context.Context) error {
	f.mu.Lock()
	ready, after := f.ready, f.latest
	f.mu.Unlock()
	if !ready {
		links, seq, err := f.tenant.Links(ctx)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.tracker, f.first, f.latest, f.ready = model.NewTracker(links), seq+1, seq, true
		f.mu.Unlock()
		after = seq
	}
	for {
		r, err := f.tenant.Read(ctx, after, catchUpBatch)
		if err != nil {
			return err
		}
		if r.AccessEpoch != f.epoch {
			// An access ended outside the change log before these changes
			// committed: nobody whose access it ended gets them. The
			// connections are taken before the access is read: each one's
			// device logged in before it connected, so the read knows it.
			conns := f.conns()
			a, err := f.tenant.Access(ctx)
			if err != nil {
				return err
			}
			checkAccess(a, conns)
			f.epoch = r.AccessEpoch
		}
		cs := r.Changes
		if len(cs) == 0 {
			return nil
		}
		f.mu.Lock()
		f.buf = append(f.buf, cs...)
		f.dispatching = true
		f.dispatchLocked(ctx, cs)
		f.dispatching = false
		after = cs[len(cs)-1].Seq
		f.latest = after
		if over := len(f.buf) - feedSize; over > 0 {
			f.buf = append([]model.Change(nil), f.buf[over:]...)
			f.first += int64(over)
		}
		f.mu.Unlock()
		if len(cs) < catchUpBatch {
			return nil
		}
	}
}

// since returns at most limit changes after cursor from memory, and the
// seq the feed is at; ok is false when the feed is not loaded yet or the
// cursor is older than what it keeps (read the store instead).
func (f *feed) since(cursor int64, limit int) (cs []model.Change, latest int64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready || cursor+1 < f.first {
		return nil, 0, false
	}
	i := int(cursor + 1 - f.first)
	if i > len(f.buf) {
		return nil, f.latest, true
	}
	end := min(len(f.buf), i+limit)
	return f.buf[i:end], f.latest, true
}

// wait registers c, catching up, to be woken when changes arrive.
func (f *feed) wait(c *liveConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting[c] = struct{}{}
}

// join makes c live when its cursor is at the feed's head: it gets
// caught_up, then every later change its view receives. It reports false
// when c is behind (or the feed not loaded yet): catch up further.
func (f *feed) join(c *liveConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready || f.dispatching || c.cursor != f.latest {
		return false
	}
	delete(f.waiting, c)
	k := viewKey{practice: c.practice, role: c.viewer.Role}
	if c.viewer.Role == model.RoleMember && !c.practice {
		k.account = c.accountID
	}
	v := f.views[k]
	if v == nil {
		v = &view{key: k, conns: map[*liveConn]struct{}{}, announced: f.latest}
		f.views[k] = v
		if k.account != "" {
			f.tracker.Follow(k.account)
		} else {
			f.shared = append(f.shared, v)
		}
	}
	v.conns[c] = struct{}{}
	c.view = v
	if !c.practice {
		if f.byAccount[c.accountID] == nil {
			f.byAccount[c.accountID] = map[*liveConn]struct{}{}
		}
		f.byAccount[c.accountID][c] = struct{}{}
	}
	c.enqueue(mustJSON(wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: c.cursor}))
	return true
}

// leave forgets c, live or catching up.
func (f *feed) leave(c *liveConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.waiting, c)
	delete(f.all, c)
	f.dropLocked(c)
}

func (f *feed) dropLocked(c *liveConn) {
	v := c.view
	if v == nil {
		return
	}
	c.view = nil
	delete(v.conns, c)
	if len(v.conns) == 0 && f.views[v.key] == v {
		delete(f.views, v.key)
		if v.key.account != "" {
			f.tracker.Unfollow(v.key.account)
		} else {
			f.shared = slices.DeleteFunc(f.shared, func(o *view) bool { return o == v })
		}
	}
	if m := f.byAccount[c.accountID]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(f.byAccount, c.accountID)
		}
	}
}

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

// announce sends caught_up at the head to views not told yet, to at most
// budget connections; it reports whether views remain to be told.
func (f *feed) announce(budget int) (more bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready {
		return false
	}
	var frame []byte
	for _, v := range f.views {
		if v.announced == f.latest {
			continue
		}
		if budget <= 0 {
			return true
		}
		if frame == nil {
			frame = mustJSON(wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: f.latest})
		}
		for c := range v.conns {
			c.enqueue(frame)
		}
		budget -= len(v.conns)
		v.announced = f.latest
	}
	return false
}

// emptied reports whether projection took every field of the upsert ch
// (pc is its projection): the viewer may see none of what it changed. Such
// a change of a row that existed tells the viewer nothing but that
// something it may not see changed, so it is not sent; an upsert that
// creates the row is sent even without fields (the row is in the viewer's
// shard), and so is one that had no fields to start with.
func emptied(ch, pc model.Change) bool {
	return ch.Op == model.OpUpsert && len(ch.Fields) > 0 && len(pc.Fields) == 0
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

// project returns the change as a viewer may see it: its visible fields
// only (model.Fields: a secretary never sees a protocol, a member only the
// name and role of accounts); practice PCs see everything. Which rows a
// member sees, memberOut decides.
func project(practice bool, role string, ch model.Change) model.Change {
	if practice || ch.Fields == nil {
		return ch
	}
	fields := model.Fields(role, ch.Entity)
	if e, ok := model.Lookup(ch.Entity); ok && len(fields) == len(e.Fields) {
		return ch // the viewer sees every field: nothing to copy
	}
	keep := make(map[string]any, len(ch.Fields))
	for _, f := range fields {
		if v, ok := ch.Fields[f.Name]; ok {
			keep[f.Name] = v
		}
	}
	ch.Fields = keep
	return ch
}
