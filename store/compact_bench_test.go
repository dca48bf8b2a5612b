package store_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/therasync/therasync/internal/seedlog"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// BenchmarkCompact compacts a tenant whose log holds 1,000,000 changes
// (COMPACT_BENCH_CHANGES to change it) over 100,000 rows, spread over 100
// days, with a retention of 10 days: it reports the time, the peak Go heap
// while compacting (sampled), the database before and after, and what it
// dropped, and the latency of a one-change push every 10ms meanwhile
// (COMPACT_BENCH_AGAIN=1 also logs the next day's run). Run it with
// scripts/bench-compact, or:
//
//	go test -run '^$' -bench Compact -benchtime 1x ./store/
func BenchmarkCompact(b *testing.B) {
	n := 1000000
	if v, err := strconv.Atoi(os.Getenv("COMPACT_BENCH_CHANGES")); err == nil && v > 0 {
		n = v
	}
	b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
		ctx := context.Background()
		var (
			res    store.CompactResult
			peak   uint64
			pushes []time.Duration
			again  = os.Getenv("COMPACT_BENCH_AGAIN") != ""
		)
		for range b.N {
			b.StopTimer()
			batch, _ := strconv.Atoi(os.Getenv("COMPACT_BENCH_BATCH")) // 0: the default
			s, err := store.Open(b.TempDir(), store.Options{CompactBatch: batch})
			if err != nil {
				b.Fatal(err)
			}
			st, _, err := s.CreateTenant(ctx, store.NewTenant{Name: "Big"})
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			if _, err := seedlog.Write(ctx, s.Dir()+"/tenants/"+st.ID+"/central.db", seedlog.Options{Changes: n, Rows: 100000,
				From: now.Add(-100 * 24 * time.Hour), To: now, BatchEvery: 100, Seed: 1}); err != nil {
				b.Fatal(err)
			}
			tn, err := s.Tenant(ctx, st.ID)
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			stop := sampleHeap(&peak)
			stopPushes := probePushes(b, tn, &pushes)
			b.StartTimer()
			res, err = tn.Compact(ctx, 10*24*time.Hour)
			b.StopTimer()
			stopPushes()
			stop()
			if err != nil {
				b.Fatal(err)
			}
			if again {
				begin := time.Now()
				next, err := tn.Compact(ctx, 9*24*time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("the next day's compaction: %s, %+v", time.Since(begin).Round(time.Millisecond), next)
			}
			s.Close()
			b.StartTimer()
		}
		sort.Slice(pushes, func(i, j int) bool { return pushes[i] < pushes[j] })
		if len(pushes) > 0 {
			b.ReportMetric(float64(pushes[len(pushes)/2].Microseconds())/1000, "push-p50-ms")
			b.ReportMetric(float64(pushes[len(pushes)*99/100].Microseconds())/1000, "push-p99-ms")
			b.ReportMetric(float64(pushes[len(pushes)-1].Microseconds())/1000, "push-max-ms")
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(res.BytesBefore)/(1<<20), "MiB-before")
		b.ReportMetric(float64(res.BytesAfter)/(1<<20), "MiB-after")
		b.ReportMetric(float64(res.Dropped), "dropped")
		b.ReportMetric(float64(res.Rewritten), "rewritten")
		b.Logf("%+v", res)
	})
}

// probePushes applies a one-change batch to tn every 10ms until stopped,
// as a practice PC would meanwhile, and appends each one's latency.
func probePushes(tb testing.TB, tn *store.Tenant, lat *[]time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			begin := time.Now()
			_, err := tn.Apply(context.Background(), store.Batch{Origin: store.OriginPractice, Changes: []model.Change{
				{Entity: model.Practices, Op: model.OpUpsert, ID: "probe", Fields: map[string]any{"name": strconv.Itoa(i)}}}})
			if err != nil {
				tb.Error(err)
				return
			}
			*lat = append(*lat, time.Since(begin))
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// sampleHeap records the highest HeapInuse it sees in *peak, every 10ms
// until stopped.
func sampleHeap(peak *uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			*peak = max(*peak, m.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
