package syncd

import (
	"context"
	"fmt"
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
	head        store.Log      // the log's history and horizon at latest
	tracker     *model.Tracker // link fields at latest; follows the members with a view
	// waiting are the connections catching up, woken when changes arrive.
	waiting map[*liveConn]struct{}
	views   map[viewKey]*view
	shared  []*view // the views of the practice, admins and secretaries
	dirty   []*view // views with output in the batch being dispatched
	// erasing is set while a read that found the log's history changed (an
	// erasure) dispatches: joins wait until the read is done, and a member
	// view that loses sight of a profile gets the deletes of the rows it
	// saw through it (fading) instead of a resync, which only a row left
	// at the read's end brings (finishErasureLocked).
	erasing bool
	fading  map[model.RowRef]map[*view]struct{}
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
		all: map[*liveConn]struct{}{}, fading: map[model.RowRef]map[*view]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.run() }()
	go func() { defer wg.Done(); f.guard() }()
	go func() { wg.Wait(); close(f.done) }()
	f.poke()
	return f
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
	defer func() {
		f.mu.Lock()
		f.finishErasureLocked()
		f.mu.Unlock()
	}()
	for {
		restart, err := f.readOnce(ctx)
		if err != nil || !restart {
			return err
		}
	}
}

// readOnce is read until a compaction passed the feed's position: then
// the feed has started again (restart) and is to be loaded anew.
func (f *feed) readOnce(ctx context.Context) (restart bool, err error) {
	f.mu.Lock()
	ready, after := f.ready, f.latest
	f.mu.Unlock()
	if !ready {
		links, seq, err := f.tenant.Links(ctx)
		if err != nil {
			return false, err
		}
		f.mu.Lock()
		f.tracker, f.first, f.latest, f.ready = model.NewTracker(links), seq+1, seq, true
		f.mu.Unlock()
		after = seq
	}
	for {
		r, err := f.tenant.Read(ctx, after, catchUpBatch)
		if err != nil {
			return false, err
		}
		if r.CompactedTo > after {
			// Compaction folded changes after the feed's position (only
			// with a retention shorter than the feed's lag): a delete it
			// has not dispatched may be gone.
			f.mu.Lock()
			f.restartLocked(fmt.Sprintf("changes after cursor %d were compacted away (compacted to %d)", after, r.CompactedTo))
			f.mu.Unlock()
			return true, nil
		}
		if r.AccessEpoch != f.epoch {
			// An access ended outside the change log before these changes
			// committed: nobody whose access it ended gets them. The
			// connections are taken before the access is read: each one's
			// device logged in before it connected, so the read knows it.
			conns := f.conns()
			a, err := f.tenant.Access(ctx)
			if err != nil {
				return false, err
			}
			checkAccess(a, conns)
			f.epoch = r.AccessEpoch
		}
		cs := r.Changes
		f.mu.Lock()
		if r.History != f.head.History && f.head.History != "" {
			// The log was rewritten (an erasure): what the feed kept is not
			// the log any more, and may hold erased values. Its deletes
			// follow in this read, maybe in several batches: no connection
			// joins at the new history before they are all dispatched.
			f.buf, f.first = nil, after+1
			f.erasing = true
			for _, v := range f.views {
				v.announced = -1 // every view learns the new history
			}
		}
		f.head = r.Log()
		if len(cs) == 0 {
			f.mu.Unlock()
			return false, nil
		}
		f.buf = append(f.buf, cs...)
		f.dispatching = true
		f.dispatchLocked(ctx, cs)
		f.dispatching = f.erasing
		after = cs[len(cs)-1].Seq
		f.latest = after
		if over := len(f.buf) - feedSize; over > 0 {
			f.buf = append([]model.Change(nil), f.buf[over:]...)
			f.first += int64(over)
		}
		f.mu.Unlock()
		if len(cs) < catchUpBatch {
			return false, nil
		}
	}
}

// restartLocked ends every live connection with resync (they are at the
// feed's position, which the log no longer continues) and forgets what the
// feed kept: its next read loads it anew from the current rows.
// Connections catching up find out on their own (their reads carry
// compacted_to).
func (f *feed) restartLocked(reason string) {
	for _, v := range f.views {
		for c := range v.conns {
			f.resyncLocked(c, reason)
		}
	}
	f.ready, f.buf, f.tracker = false, nil, nil
}

// since returns at most limit changes after cursor of history from
// memory, and where the log stood when the feed read them; ok is false
// when the feed is not loaded yet, is at another history or the cursor is
// older than what it keeps (read the store instead).
func (f *feed) since(cursor int64, history string, limit int) (cs []model.Change, log store.Log, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready || cursor+1 < f.first || f.head.History != history {
		return nil, store.Log{}, false
	}
	i := int(cursor + 1 - f.first)
	if i > len(f.buf) {
		return nil, f.head, true
	}
	end := min(len(f.buf), i+limit)
	return f.buf[i:end], f.head, true
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
	if !f.ready || f.head.History == "" || f.dispatching || c.cursor != f.latest {
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
	c.enqueue(mustJSON(wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: c.cursor, History: f.head.History}))
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
			frame = mustJSON(wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: f.latest, History: f.head.History})
		}
		for c := range v.conns {
			c.enqueue(frame)
		}
		budget -= len(v.conns)
		v.announced = f.latest
	}
	return false
}
