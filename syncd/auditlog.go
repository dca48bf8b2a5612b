package syncd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/therasync/therasync/store"
)

// Failed logins and refused device writes are audited through an
// auditWriter, not with a durable write each: a guesser or a device
// sending refused writes must not buy one fsync'd transaction (and one row
// of an append-only table) per request, and a failed login for a known
// email must cost what one for an unknown email costs (DESIGN §5). The
// lines of one account and action (tenant, actor, account, action) gather
// for a window: one line is written for them, dated at the first, whose
// detail counts each reason ("invalid_code ×17, too_many_attempts ×480")
// and, when there were several, the devices and addresses (the line names
// the device and address when there was one of each). So an account's
// failed logins or refused writes cost at most one row per window, however
// many devices or addresses the client makes up. The groups wait in a
// bounded buffer; when it is full a new group is dropped rather than the
// request blocked: the drop is counted in therasync_audit_lines_dropped_total
// and per tenant, and the next write adds one audit_dropped line with that
// count. Close writes what waits: a clean shutdown loses no line. Logins,
// code sends and every other audit line stay synchronous and durable
// before the answer.

// auditKey is what the lines of one group share.
type auditKey struct {
	tenant, actor, account, action string
}

// maxAuditNames bounds the devices and addresses a group names; more are
// only counted.
const maxAuditNames = 16

// auditGroup is the lines of one key gathered in a window.
type auditGroup struct {
	first   time.Time
	details map[string]int
	order   []string // details in arrival order
	devices map[string]bool
	addrs   map[string]bool
	more    int // devices or addresses past maxAuditNames
}

func (g *auditGroup) add(e store.AuditEntry) {
	if g.details[e.Detail] == 0 {
		g.order = append(g.order, e.Detail)
	}
	g.details[e.Detail]++
	for set, v := range map[*map[string]bool]string{&g.devices: e.DeviceID, &g.addrs: e.Addr} {
		if v == "" || (*set)[v] {
			continue
		}
		if len(*set) >= maxAuditNames {
			g.more++
			continue
		}
		(*set)[v] = true
	}
}

// entry renders the group as one audit line.
func (g *auditGroup) entry(k auditKey) store.AuditEntry {
	e := store.AuditEntry{At: g.first, Actor: k.actor, AccountID: k.account, Action: k.action}
	var parts []string
	for _, d := range g.order {
		if n := g.details[d]; n > 1 {
			parts = append(parts, fmt.Sprintf("%s ×%d", d, n))
		} else {
			parts = append(parts, d)
		}
	}
	e.Detail = strings.Join(parts, ", ")
	only := func(set map[string]bool) string {
		for v := range set {
			return v
		}
		return ""
	}
	if len(g.devices) == 1 {
		e.DeviceID = only(g.devices)
	} else if len(g.devices) > 1 {
		e.Detail += fmt.Sprintf("; %d devices", len(g.devices))
	}
	if len(g.addrs) == 1 {
		e.Addr = only(g.addrs)
	} else if len(g.addrs) > 1 {
		e.Detail += fmt.Sprintf("; %d addresses", len(g.addrs))
	}
	if g.more > 0 {
		e.Detail += fmt.Sprintf(" (and %d more)", g.more)
	}
	return e
}

// auditWriter writes audit lines in the background. Its flusher goroutine
// runs only while lines wait: add starts it, and it ends once it wrote
// everything; close stops it and waits for it.
type auditWriter struct {
	// static
	store    *store.Store
	log      *slog.Logger
	dropped  prometheus.Counter
	window   time.Duration
	capacity int
	kick     chan struct{} // capacity 1: write what waits now
	stop     chan struct{} // closed by close
	wg       sync.WaitGroup

	mu sync.Mutex
	// guarded by mu
	pending map[auditKey]*auditGroup
	order   []auditKey     // the pending groups in arrival order
	drops   map[string]int // tenant → groups dropped since the last write
	running bool           // the flusher goroutine runs
	closed  bool
}

func newAuditWriter(st *store.Store, log *slog.Logger, dropped prometheus.Counter, window time.Duration, capacity int) *auditWriter {
	return &auditWriter{store: st, log: log, dropped: dropped, window: window, capacity: capacity,
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
		pending: map[auditKey]*auditGroup{}, drops: map[string]int{}}
}

// add queues a line of the tenant's audit log. It never blocks on the
// store; after close it writes the line at once.
func (a *auditWriter) add(tenant string, e store.AuditEntry) {
	k := auditKey{tenant: tenant, actor: e.Actor, account: e.AccountID, action: e.Action}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.write(tenant, []store.AuditEntry{e})
		return
	}
	if g := a.pending[k]; g != nil {
		g.add(e)
		a.mu.Unlock()
		return
	}
	if len(a.order) >= a.capacity {
		a.drops[tenant]++
		a.mu.Unlock()
		a.dropped.Inc()
		return
	}
	g := &auditGroup{first: time.Now(), details: map[string]int{}, devices: map[string]bool{}, addrs: map[string]bool{}}
	g.add(e)
	a.pending[k] = g
	a.order = append(a.order, k)
	if !a.running {
		a.running = true
		a.wg.Add(1)
		go a.run()
	}
	a.mu.Unlock()
}

// run writes each group once its window ended (all of them when stopped
// or kicked) until nothing waits.
func (a *auditWriter) run() {
	defer a.wg.Done()
	tick := max(a.window/4, 10*time.Millisecond)
	timer := time.NewTimer(tick)
	defer timer.Stop()
	for {
		all := false
		select {
		case <-timer.C:
		case <-a.kick:
			all = true
		case <-a.stop:
			all = true
		}
		a.flush(all)
		a.mu.Lock()
		if len(a.order) == 0 && len(a.drops) == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		timer.Reset(tick)
	}
}

// flush writes the groups whose window ended (every group with all), one
// store write per tenant.
func (a *auditWriter) flush(all bool) {
	a.mu.Lock()
	var due []auditKey
	var groups []*auditGroup
	keep := a.order[:0:0]
	now := time.Now()
	for _, k := range a.order {
		g := a.pending[k]
		if all || now.Sub(g.first) >= a.window {
			due = append(due, k)
			groups = append(groups, g)
			delete(a.pending, k)
		} else {
			keep = append(keep, k)
		}
	}
	a.order = keep
	drops := a.drops
	a.drops = map[string]int{}
	a.mu.Unlock()
	byTenant := map[string][]store.AuditEntry{}
	var tenants []string
	add := func(tenant string, e store.AuditEntry) {
		if byTenant[tenant] == nil {
			tenants = append(tenants, tenant)
		}
		byTenant[tenant] = append(byTenant[tenant], e)
	}
	for i, k := range due {
		add(k.tenant, groups[i].entry(k))
	}
	for tenant, n := range drops {
		add(tenant, store.AuditEntry{Actor: "system", Action: "audit_dropped",
			Detail: fmt.Sprintf("%d groups of audit lines not recorded: the audit buffer was full", n)})
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
