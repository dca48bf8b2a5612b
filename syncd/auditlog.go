package syncd

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/therasync/therasync/store"
)

// Failed logins are audited through an auditWriter, not with a durable
// write each: a guesser must not buy one fsync'd transaction per request,
// and a failed login for a known email must cost what one for an unknown
// email costs (DESIGN §5). The lines wait in a bounded buffer; identical
// lines (same tenant, account, device, action, detail and address) waiting
// together are coalesced into one whose detail counts them ("invalid_code
// ×17", dated at the first); every flush interval (or sooner when the buffer
// is half full) each tenant's lines are written in one store write. When the
// buffer is full, a new line is dropped rather than the login blocked: the
// drop is counted in therasync_audit_lines_dropped_total and per tenant, and
// the next flush writes one audit_dropped line with that count, so the log
// still shows that something happened. Close writes what waits: a clean
// shutdown loses no line. Logins, code sends and every other audit line stay
// synchronous and durable before the answer.

// auditKey is what makes two failed-login lines identical.
type auditKey struct {
	tenant, actor, account, device, action, detail, addr string
}

// auditGroup is one line waiting, with how often it came and when first.
type auditGroup struct {
	first time.Time
	n     int
}

// auditWriter writes audit lines in the background. Its flusher goroutine
// runs only while lines wait: add starts it, and it ends once it flushed
// everything; close stops it and waits for it.
type auditWriter struct {
	// static
	store    *store.Store
	log      *slog.Logger
	dropped  prometheus.Counter
	interval time.Duration
	capacity int
	kick     chan struct{} // capacity 1: flush now
	stop     chan struct{} // closed by close
	wg       sync.WaitGroup

	mu sync.Mutex
	// guarded by mu
	pending map[auditKey]*auditGroup
	order   []auditKey     // the pending lines in arrival order
	drops   map[string]int // tenant → lines dropped since the last flush
	running bool           // the flusher goroutine runs
	closed  bool
}

func newAuditWriter(st *store.Store, log *slog.Logger, dropped prometheus.Counter, interval time.Duration, capacity int) *auditWriter {
	return &auditWriter{store: st, log: log, dropped: dropped, interval: interval, capacity: capacity,
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
		pending: map[auditKey]*auditGroup{}, drops: map[string]int{}}
}

// add queues a line of the tenant's audit log. It never blocks on the
// store; after close it writes the line at once.
func (a *auditWriter) add(tenant string, e store.AuditEntry) {
	k := auditKey{tenant: tenant, actor: e.Actor, account: e.AccountID, device: e.DeviceID, action: e.Action, detail: e.Detail, addr: e.Addr}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.write(tenant, []store.AuditEntry{e})
		return
	}
	if g := a.pending[k]; g != nil {
		g.n++
		a.mu.Unlock()
		return
	}
	if len(a.order) >= a.capacity {
		a.drops[tenant]++
		a.mu.Unlock()
		a.dropped.Inc()
		return
	}
	a.pending[k] = &auditGroup{first: time.Now(), n: 1}
	a.order = append(a.order, k)
	soon := len(a.order) >= (a.capacity+1)/2
	if !a.running {
		a.running = true
		a.wg.Add(1)
		go a.run()
	}
	a.mu.Unlock()
	if soon {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// run flushes every interval (sooner when kicked or stopped) until nothing
// waits.
func (a *auditWriter) run() {
	defer a.wg.Done()
	timer := time.NewTimer(a.interval)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-a.kick:
		case <-a.stop:
		}
		a.flush()
		a.mu.Lock()
		if len(a.order) == 0 && len(a.drops) == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		timer.Reset(a.interval)
	}
}

// flush writes the waiting lines, one store write per tenant.
func (a *auditWriter) flush() {
	a.mu.Lock()
	order, pending, drops := a.order, a.pending, a.drops
	a.order, a.pending, a.drops = nil, map[auditKey]*auditGroup{}, map[string]int{}
	a.mu.Unlock()
	byTenant := map[string][]store.AuditEntry{}
	var tenants []string
	add := func(tenant string, e store.AuditEntry) {
		if byTenant[tenant] == nil {
			tenants = append(tenants, tenant)
		}
		byTenant[tenant] = append(byTenant[tenant], e)
	}
	for _, k := range order {
		g := pending[k]
		detail := k.detail
		if g.n > 1 {
			detail = fmt.Sprintf("%s ×%d", detail, g.n)
		}
		add(k.tenant, store.AuditEntry{At: g.first, Actor: k.actor, AccountID: k.account, DeviceID: k.device, Action: k.action, Detail: detail, Addr: k.addr})
	}
	for tenant, n := range drops {
		add(tenant, store.AuditEntry{Actor: "system", Action: "audit_dropped",
			Detail: fmt.Sprintf("%d failed-login lines not recorded: the audit buffer was full", n)})
	}
	for _, tenant := range tenants {
		a.write(tenant, byTenant[tenant])
	}
}

// write appends the lines to the tenant's audit log in one store write; a
// failure is logged, there is nobody to answer.
func (a *auditWriter) write(tenant string, es []store.AuditEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, err := a.store.Tenant(ctx, tenant)
	if err == nil {
		err = t.AuditBatch(ctx, es)
	}
	if err != nil {
		a.log.Error("write audit lines", "component", "audit", "tenant", tenant, "rows", len(es), "err", err)
	}
}

// close writes the waiting lines and stops the flusher; later lines are
// written at once.
func (a *auditWriter) close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	a.wg.Wait()
}
