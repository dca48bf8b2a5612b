package syncd

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/therasync/therasync/store"
)

// TestAuditWriterFull: lines of one account and action gather into one
// (whatever their devices and addresses); with the buffer full, new groups
// are dropped and counted (lines of a waiting group still join it), and the
// next write adds one audit_dropped line with the count; close writes what
// waits.
func TestAuditWriterFull(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	ts, _, err := st.CreateTenant(ctx, store.NewTenant{Name: "P"})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := st.Tenant(ctx, ts.ID)
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	a := newAuditWriter(st, slog.New(slog.DiscardHandler), dropped, time.Hour, 4)
	a.running = true // hold the flusher: only the test flushes
	line := func(account, device string) store.AuditEntry {
		return store.AuditEntry{Actor: "device", AccountID: account, DeviceID: device, Action: "login_failed", Detail: "invalid_code", Addr: "10.0.0.1"}
	}
	for i := range 6 {
		a.add(ts.ID, line(fmt.Sprint("m", i), "d"))
	}
	a.add(ts.ID, line("m0", "d"))
	a.add(ts.ID, line("m1", "other"))
	a.add(ts.ID, store.AuditEntry{Actor: "device", AccountID: "m1", DeviceID: "d", Action: "login_failed", Detail: "too_many_attempts", Addr: "10.0.0.2"})
	var m dto.Metric
	dropped.Write(&m)
	if n := m.GetCounter().GetValue(); n != 2 {
		t.Errorf("dropped = %v; want 2", n)
	}
	a.flush(true)
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	a.add(ts.ID, line("m9", "d9"))
	a.close()
	got, err := tn.AuditLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range got {
		lines = append(lines, e.AccountID+" "+e.DeviceID+" "+e.Action+" "+e.Detail)
	}
	want := []string{
		"m0 d login_failed invalid_code ×2",
		"m1  login_failed invalid_code ×2, too_many_attempts; 2 devices; 2 addresses",
		"m2 d login_failed invalid_code", "m3 d login_failed invalid_code",
		"  audit_dropped 2 groups of audit lines not recorded: the audit buffer was full",
		"m9 d9 login_failed invalid_code",
	}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("audit log:\n%q\nwant:\n%q", lines, want)
	}
}
