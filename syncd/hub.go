package syncd

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/therasync/therasync/wire"
)

// hub knows the live connections of this process, and limits how many a
// device and an account may hold and how often a device may open one.
type hub struct {
	mu    sync.Mutex
	conns map[string]map[*liveConn]struct{} // tenant → connections
	feeds map[string]*feed                  // tenant → its feed, while it has connections
	// byDevice are the devices' connections, oldest first; byAccount the
	// accounts' (deviceKey with device ""). Both hold connections that are
	// closing until they are gone; the caps count the others.
	byDevice  map[deviceKey][]*liveConn
	byAccount map[deviceKey]map[*liveConn]struct{}
	upgrades  map[deviceKey]*bucket
	closed    bool
	wg        sync.WaitGroup // one per connection, done when both its goroutines ended
}

// deviceKey names a device (or, with device "", an account) of a tenant.
type deviceKey struct{ tenant, account, device string }

// limits are the caps of Config on live connections.
type limits struct {
	perDevice, perAccount int
	upgradesPerMinute     float64
	recheck               time.Duration
}

func (s *Server) limits() limits {
	return limits{perDevice: s.cfg.MaxSocketsPerDevice, perAccount: s.cfg.MaxSocketsPerAccount,
		upgradesPerMinute: float64(s.cfg.UpgradesPerMinute), recheck: s.cfg.AccessRecheck}
}

// bucket is a token bucket of one device's upgrades.
type bucket struct {
	tokens float64
	at     time.Time
}

// upgradeBurst is how many connections a device may open at once before
// its rate applies.
const upgradeBurst = 10

func newHub() *hub {
	return &hub{conns: map[string]map[*liveConn]struct{}{}, feeds: map[string]*feed{},
		byDevice: map[deviceKey][]*liveConn{}, byAccount: map[deviceKey]map[*liveConn]struct{}{}, upgrades: map[deviceKey]*bucket{}}
}

// admit decides, before the upgrade, whether c may open: its device has
// not opened too many connections lately and its account holds fewer than
// its cap. A device at its own cap is admitted: add replaces its oldest
// connection.
func (h *hub) admit(c *liveConn, l limits) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	dk := c.key()
	now := time.Now()
	b := h.upgrades[dk]
	if b == nil {
		if len(h.upgrades) > 100000 {
			h.pruneUpgradesLocked(now, l)
		}
		b = &bucket{tokens: upgradeBurst, at: now}
		h.upgrades[dk] = b
	}
	b.tokens = math.Min(upgradeBurst, b.tokens+now.Sub(b.at).Minutes()*l.upgradesPerMinute)
	b.at = now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.upgradesPerMinute * float64(time.Minute))
		return &tooManyError{msg: "this device opens live connections too often", retryAfter: wait}
	}
	b.tokens--
	// A device at its own cap replaces its oldest connection: the
	// account's count stays.
	replaces := !c.practice && open(h.byDevice[dk]) >= l.perDevice
	if !replaces && openOf(h.byAccount[deviceKey{tenant: dk.tenant, account: dk.account}]) >= l.perAccount {
		return &tooManyError{msg: fmt.Sprintf("the account holds %d live connections, the most it may", l.perAccount), retryAfter: time.Minute}
	}
	return nil
}

// open counts the connections that are not closing.
func open(cs []*liveConn) int {
	n := 0
	for _, c := range cs {
		if !c.closing() {
			n++
		}
	}
	return n
}

func openOf(cs map[*liveConn]struct{}) int {
	n := 0
	for c := range cs {
		if !c.closing() {
			n++
		}
	}
	return n
}

// practiceAccount stands for the practice PCs in the per-account counts:
// their sockets are capped and rated like one account's.
const practiceAccount = "\x00practice"

// key names c's device (the practice PCs share one).
func (c *liveConn) key() deviceKey {
	if c.practice {
		return deviceKey{c.tenant.ID(), practiceAccount, ""}
	}
	return deviceKey{c.tenant.ID(), c.accountID, c.deviceID}
}

// pruneUpgradesLocked forgets the devices whose buckets are full again.
func (h *hub) pruneUpgradesLocked(now time.Time, l limits) {
	for k, b := range h.upgrades {
		if b.tokens+now.Sub(b.at).Minutes()*l.upgradesPerMinute >= upgradeBurst {
			delete(h.upgrades, k)
		}
	}
}

// add registers c; it returns false when the hub is closed, and the
// device's oldest connections that c takes past its cap (the caller stops
// them).
func (h *hub) add(c *liveConn, l limits) (evicted []*liveConn, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	id := c.tenant.ID()
	if h.conns[id] == nil {
		h.conns[id] = map[*liveConn]struct{}{}
	}
	h.conns[id][c] = struct{}{}
	if h.feeds[id] == nil {
		h.feeds[id] = newFeed(c.tenant, c.s.log, c.s.metrics, l.recheck)
	}
	c.feed = h.feeds[id]
	c.feed.attach(c)
	dk := c.key()
	ak := deviceKey{tenant: id, account: dk.account}
	if h.byAccount[ak] == nil {
		h.byAccount[ak] = map[*liveConn]struct{}{}
	}
	h.byAccount[ak][c] = struct{}{}
	if !c.practice {
		h.byDevice[dk] = append(h.byDevice[dk], c)
		over := open(h.byDevice[dk]) - l.perDevice
		for _, o := range h.byDevice[dk] {
			if over <= 0 {
				break
			}
			if o != c && !o.closing() {
				evicted = append(evicted, o)
				over--
			}
		}
	}
	h.wg.Add(1)
	return evicted, true
}

func (h *hub) remove(c *liveConn) {
	c.feed.leave(c)
	h.mu.Lock()
	id := c.tenant.ID()
	delete(h.conns[id], c)
	dk := c.key()
	if !c.practice {
		cs := h.byDevice[dk]
		for i, o := range cs {
			if o == c {
				cs = append(cs[:i:i], cs[i+1:]...)
				break
			}
		}
		if len(cs) == 0 {
			delete(h.byDevice, dk)
		} else {
			h.byDevice[dk] = cs
		}
	}
	ak := deviceKey{tenant: id, account: dk.account}
	delete(h.byAccount[ak], c)
	if len(h.byAccount[ak]) == 0 {
		delete(h.byAccount, ak)
	}
	var stopped *feed
	if len(h.conns[id]) == 0 && h.feeds[id] != nil {
		stopped = h.feeds[id]
		delete(h.feeds, id)
		delete(h.conns, id)
	}
	h.mu.Unlock()
	if stopped != nil {
		close(stopped.stop)
		<-stopped.done
	}
	h.wg.Done()
}

// committed tells the tenant's feed, if this process has one, that its seq
// moved.
func (h *hub) committed(tenant string) {
	h.mu.Lock()
	f := h.feeds[tenant]
	h.mu.Unlock()
	if f != nil {
		f.poke()
	}
}

// recheck has the tenant's feed (all tenants' for "") re-read the access
// of its connections.
func (h *hub) recheck(tenant string) {
	h.mu.Lock()
	var fs []*feed
	for t, f := range h.feeds {
		if tenant == "" || t == tenant {
			fs = append(fs, f)
		}
	}
	h.mu.Unlock()
	for _, f := range fs {
		f.recheckSoon()
	}
}

// each calls fn for the tenant's connections (all tenants for ""), outside
// the lock.
func (h *hub) each(tenant string, fn func(*liveConn)) {
	h.mu.Lock()
	var cs []*liveConn
	for t, m := range h.conns {
		if tenant != "" && t != tenant {
			continue
		}
		for c := range m {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	for _, c := range cs {
		fn(c)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.conns {
		n += len(m)
	}
	return n
}

// tooManyError refuses a connection past a limit: 429 too_many_attempts
// with Retry-After.
type tooManyError struct {
	msg        string
	retryAfter time.Duration
}

func (e *tooManyError) Error() string { return e.msg }

// closeLive ends every live connection with 1001 and waits, until ctx is
// done, for their goroutines.
func (s *Server) closeLive(ctx context.Context) error {
	s.hub.mu.Lock()
	s.hub.closed = true
	s.hub.mu.Unlock()
	s.hub.each("", func(c *liveConn) { c.stop(wire.CloseGoingAway, "server shutting down", nil) })
	done := make(chan struct{})
	go func() {
		s.hub.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close live connections: %w", ctx.Err())
	}
}
