// The figures of a run: latencies, deliveries, errors and syncd's memory.

package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// report prints the figures of the load: changes pushed and delivered,
// errors, latency percentiles and, with a pid, syncd's memory per device.
func (m *Main) report(st *stats, pushed int, elapsed time.Duration, rssBefore, rssAfter int64) {
	ls := st.sortedLatencies()
	pct := func(p float64) time.Duration { return percentile(ls, p) }
	fmt.Printf("\npushed %d changes in %s (%.0f/s); delivered %d (%.0f/s); errors %d\n", pushed, elapsed.Round(time.Millisecond),
		float64(pushed)/elapsed.Seconds(), st.delivered.Load(), float64(st.delivered.Load())/elapsed.Seconds(), st.errors.Load())
	if e := st.firstErr.Load(); e != nil {
		fmt.Printf("first error: %s\n", e)
	}
	fmt.Printf("change → device latency: p50 %s  p90 %s  p99 %s  max %s\n", pct(.5), pct(.9), pct(.99), pct(1))
	if m.PID > 0 {
		fmt.Printf("syncd memory: %.1f MiB before, %.1f MiB with %d devices: %.1f KiB per connected device\n",
			float64(rssBefore)/1024, float64(rssAfter)/1024, m.Devices, float64(rssAfter-rssBefore)/float64(m.Devices))
	}
}

// stats gathers a run's figures from the devices' readers and the pushers.
type stats struct {
	mu        sync.Mutex
	latencies []time.Duration
	delivered atomic.Int64
	errors    atomic.Int64
	firstErr  atomic.Value // string
}

// fail counts an error and keeps the first one's text.
func (s *stats) fail(err error) {
	s.errors.Add(1)
	s.firstErr.CompareAndSwap(nil, err.Error())
}

// deliver records one change delivered with latency d.
func (s *stats) deliver(d time.Duration) {
	s.mu.Lock()
	s.latencies = append(s.latencies, d)
	s.mu.Unlock()
	s.delivered.Add(1)
}

// sortedLatencies returns a sorted copy of the latencies recorded so far.
func (s *stats) sortedLatencies() []time.Duration {
	s.mu.Lock()
	ls := append([]time.Duration(nil), s.latencies...)
	s.mu.Unlock()
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return ls
}

// percentile returns the p-th fraction of the sorted ls (0 when empty).
func percentile(ls []time.Duration, p float64) time.Duration {
	if len(ls) == 0 {
		return 0
	}
	return ls[min(len(ls)-1, int(p*float64(len(ls))))]
}

// rss returns the resident memory of pid in KiB (0 when unknown).
func rss(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
