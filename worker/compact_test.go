package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/worker"
)

// TestPeriodicCompaction: with a retention, the periodic tick compacts
// every tenant's log, at most once per CompactEvery; without one (0), no
// log is compacted.
func TestPeriodicCompaction(t *testing.T) {
	for _, tt := range []struct {
		name      string
		retention time.Duration
		compacts  bool
	}{
		{"a retention of an hour", time.Hour, true},
		{"no retention keeps every change", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			// The store's clock jumps two hours ahead once the changes are
			// written: they are older than the retention then.
			var ahead atomic.Int64
			st, err := store.Open(t.TempDir(), store.Options{Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			var tenants []*store.Tenant
			for i := range 2 {
				s, _, err := st.CreateTenant(ctx, store.NewTenant{Name: fmt.Sprint("P", i)})
				if err != nil {
					t.Fatal(err)
				}
				tn, err := st.Tenant(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				for j := range 3 {
					c := model.Change{Entity: model.Practices, Op: model.OpUpsert, ID: "pr1", Fields: map[string]any{"name": fmt.Sprint("N", j)}}
					if _, err := tn.Apply(ctx, store.Batch{Origin: store.OriginPractice, Changes: []model.Change{c}}); err != nil {
						t.Fatal(err)
					}
				}
				tenants = append(tenants, tn)
			}
			ahead.Store(int64(2 * time.Hour))
			w, err := worker.New(worker.Config{Redis: asynq.RedisClientOpt{Addr: redistest.Start(t).Addr}, Store: st,
				TickInterval: time.Second, Secret: []byte("worker-test-secret-0123456789abcdef"), ChangeRetention: tt.retention})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Shutdown() })
			deadline := time.Now().Add(8 * time.Second)
			if !tt.compacts {
				deadline = time.Now().Add(2500 * time.Millisecond) // two ticks at least
			}
			for _, tn := range tenants {
				for {
					l, err := tn.Log(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if l.CompactedTo != 0 || time.Now().After(deadline) {
						if want := int64(0); tt.compacts {
							want = 2
							if l.CompactedTo != want {
								t.Errorf("tenant %s: compacted_to %d; want %d", tn.ID(), l.CompactedTo, want)
							}
						} else if l.CompactedTo != want {
							t.Errorf("tenant %s: compacted_to %d; want %d (no retention)", tn.ID(), l.CompactedTo, want)
						}
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			if !tt.compacts {
				return
			}
			// Claimed by this worker's runs: no other run is due within the
			// hour.
			if claimed, err := tenants[0].ClaimCompaction(ctx, time.Hour); err != nil || claimed {
				t.Errorf("ClaimCompaction right after the periodic run = %v, %v; want false", claimed, err)
			}
		})
	}
}
