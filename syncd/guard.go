package syncd

// This file is the feed's guard: it re-reads the tenant's access and ends
// the connections it no longer grants.

import (
	"context"
	"time"
)

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
