package syncd

import (
	"context"
	"sync"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// feedSize is how many recent changes a tenant's feed keeps in memory;
// connections further behind read the store.
const feedSize = 20000

// feed reads a tenant's new changes once for all of this process's live
// connections of the tenant and keeps the recent ones in memory. Its
// goroutine is owned by the hub: it runs until stop is closed.
type feed struct {
	tenant *store.Tenant
	wake   chan struct{} // capacity 1: new commits may exist
	stop   chan struct{}
	done   chan struct{}
	notify func() // wakes the tenant's connections

	mu     sync.Mutex
	buf    []model.Change // consecutive seqs from first
	first  int64          // seq of buf[0]
	latest int64          // the newest seq read; 0 until the first read
}

func newFeed(t *store.Tenant, notify func()) *feed {
	f := &feed{tenant: t, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), notify: notify}
	go f.run()
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
	defer close(f.done)
	ctx := context.Background()
	for {
		select {
		case <-f.stop:
			return
		case <-f.wake:
		}
		if err := f.read(ctx); err != nil {
			f.notify() // connections fall back to the store and report there
			continue
		}
		f.notify()
	}
}

// read appends the changes committed since the last read.
func (f *feed) read(ctx context.Context) error {
	f.mu.Lock()
	after := f.latest
	f.mu.Unlock()
	for {
		cs, latest, err := f.tenant.Changes(ctx, after, catchUpBatch)
		if err != nil {
			return err
		}
		f.mu.Lock()
		if f.latest == 0 && len(f.buf) == 0 {
			f.first = after + 1
		}
		f.buf = append(f.buf, cs...)
		if len(cs) > 0 {
			after = cs[len(cs)-1].Seq
		}
		f.latest = max(after, f.latest)
		if f.latest == 0 {
			f.latest = latest
		}
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
// newest seq read; ok is false when cursor is older than what the feed
// keeps (read the store instead).
func (f *feed) since(cursor int64, limit int) (cs []model.Change, latest int64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.latest == 0 || cursor+1 < f.first {
		return nil, 0, false
	}
	i := int(cursor + 1 - f.first)
	if i > len(f.buf) {
		return nil, f.latest, true
	}
	end := min(len(f.buf), i+limit)
	return f.buf[i:end], f.latest, true
}
