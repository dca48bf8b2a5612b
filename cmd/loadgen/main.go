// Command loadgen measures a running syncd over loopback: it connects N
// devices, pushes changes from a simulated practice PC at R changes/s, and
// prints the change-to-device latency (p50, p90, p99, max), the changes
// delivered per second, errors, syncd's memory per connected device (from
// its pid) and how long an offline device takes to catch up on K changes.
//
//	loadgen -server http://127.0.0.1:8080 -data ./data -tenant T -key PRACTICE_KEY -pid $(pgrep syncd) \
//	        -devices 1000 -rate 1000 -duration 10s -catchup 10000
//
// It mints its devices' tokens straight into the store (like `therasync
// token issue`), so it runs on the server's machine, against a test tenant.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	err := m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// Main is the load generator.
type Main struct {
	Server   string
	Data     string
	Tenant   string
	Key      string
	PID      int
	Devices  int
	Accounts int
	Rate     int
	Duration time.Duration
	CatchUp  int

	store *store.Store
	conns []*websocket.Conn
}

// NewMain returns a Main with the defaults.
func NewMain() *Main {
	return &Main{Devices: 100, Accounts: 50, Rate: 1000, Duration: 10 * time.Second, CatchUp: 10000}
}

// ParseFlags reads and checks the command line.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&m.Server, "server", "http://127.0.0.1:8080", "syncd's URL (loopback only)")
	fs.StringVar(&m.Data, "data", "", "syncd's data directory (to mint device tokens)")
	fs.StringVar(&m.Tenant, "tenant", "", "the tenant id to load")
	fs.StringVar(&m.Key, "key", "", "the tenant's practice key")
	fs.IntVar(&m.PID, "pid", 0, "syncd's pid, to read its memory (0: not measured)")
	fs.IntVar(&m.Devices, "devices", m.Devices, "devices to connect")
	fs.IntVar(&m.Accounts, "accounts", m.Accounts, "member accounts the devices belong to")
	fs.IntVar(&m.Rate, "rate", m.Rate, "changes pushed per second")
	fs.DurationVar(&m.Duration, "duration", m.Duration, "how long to push")
	fs.IntVar(&m.CatchUp, "catchup", m.CatchUp, "changes an offline device catches up on (0: skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case m.Data == "" || m.Tenant == "" || m.Key == "":
		return errors.New("-data, -tenant and -key are required")
	case !strings.HasPrefix(m.Server, "http://127.") && !strings.HasPrefix(m.Server, "http://localhost"):
		return errors.New("-server must be a loopback address")
	case m.Devices < 1 || m.Accounts < 1 || m.Rate < 1 || m.Duration <= 0:
		return errors.New("-devices, -accounts, -rate and -duration must be positive")
	}
	return nil
}

// Close hangs up the devices and closes the store.
func (m *Main) Close() error {
	for _, c := range m.conns {
		c.Close()
	}
	if m.store != nil {
		return m.store.Close()
	}
	return nil
}

// push sends one batch of changes as the practice PC.
func (m *Main) push(ctx context.Context, id string, changes []map[string]any) (int64, error) {
	body, _ := json.Marshal(map[string]any{"batch_id": id, "changes": changes})
	req, _ := http.NewRequestWithContext(ctx, "POST", m.Server+"/v1/practice/changes", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("push: %s %s", resp.Status, b)
	}
	var r struct{ Seq int64 }
	json.Unmarshal(b, &r)
	return r.Seq, nil
}

// account returns the id of the i-th member account loadgen pushes.
func account(i int) string { return "lg-" + strconv.Itoa(i) }

// Run sets up the accounts and devices, runs the load and prints figures.
func (m *Main) Run(ctx context.Context) error {
	raiseFileLimit()
	t, seq, err := m.setup(ctx)
	if err != nil {
		return err
	}
	rssBefore := rss(m.PID)
	fmt.Printf("connecting %d devices of %d accounts …\n", m.Devices, m.Accounts)
	st := &stats{}
	if err := m.connect(ctx, t, seq, st); err != nil {
		return err
	}
	rssAfter := rss(m.PID)
	fmt.Printf("pushing %d changes/s for %s …\n", m.Rate, m.Duration)
	pushed, elapsed := m.load(ctx, st)
	time.Sleep(time.Second) // the last deliveries
	m.report(st, pushed, elapsed, rssBefore, rssAfter)
	if m.CatchUp > 0 {
		d, err := m.catchUp(ctx, t)
		if err != nil {
			return err
		}
		fmt.Printf("an offline device caught up on %d changes in %s\n", m.CatchUp, d.Round(time.Millisecond))
	}
	return nil
}

// raiseFileLimit lifts the soft limit of open files to the hard one: every
// device holds a connection.
func raiseFileLimit() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// setup opens the store, looks the tenant up and pushes the member
// accounts; it returns the tenant and the cursor after the accounts.
func (m *Main) setup(ctx context.Context) (*store.Tenant, int64, error) {
	var err error
	if m.store, err = store.Open(m.Data, store.Options{}); err != nil {
		return nil, 0, err
	}
	t, err := m.store.Tenant(ctx, m.Tenant)
	if err != nil {
		return nil, 0, fmt.Errorf("tenant %s: %w", m.Tenant, err)
	}
	var accs []map[string]any
	for i := range m.Accounts {
		accs = append(accs, map[string]any{"entity": "accounts", "op": "upsert", "id": account(i), "fields": map[string]any{"name": "Loadgen " + strconv.Itoa(i), "role": "member", "app_enabled": true}})
	}
	seq, err := m.push(ctx, "loadgen-accounts-"+strconv.FormatInt(time.Now().UnixNano(), 36), accs)
	if err != nil {
		return nil, 0, err
	}
	return t, seq, nil
}

// connect logs the devices in, connects them from cursor seq and waits
// until each has caught up; their readers record into st.
func (m *Main) connect(ctx context.Context, t *store.Tenant, seq int64, st *stats) error {
	ready := make(chan struct{}, m.Devices)
	for i := range m.Devices {
		tok, _, err := t.LoginDevice(ctx, account(i%m.Accounts), fmt.Sprintf("loadgen-%d", i), "loadgen", "loadgen")
		if err != nil {
			return err
		}
		c, err := dial(ctx, m.Server, tok, seq)
		if err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		m.conns = append(m.conns, c)
		go read(ctx, c, st, ready)
	}
	for range m.Devices {
		select {
		case <-ready:
		case <-time.After(time.Minute):
			first, _ := st.firstErr.Load().(string)
			return fmt.Errorf("devices did not catch up within a minute (%d errors, the first: %s)", st.errors.Load(), first)
		}
	}
	return nil
}

// read receives one device's frames until its connection ends: it signals
// ready on the first caught_up and records each change's latency in st.
func read(ctx context.Context, c *websocket.Conn, st *stats, ready chan<- struct{}) {
	first := true
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				st.fail(err)
			}
			return
		}
		now := time.Now()
		var f struct {
			Type    string `json:"type"`
			Changes []struct {
				Fields map[string]any `json:"fields"`
			} `json:"changes"`
		}
		json.Unmarshal(b, &f)
		if f.Type == "caught_up" && first {
			first = false
			ready <- struct{}{}
		}
		for _, ch := range f.Changes {
			sent, _ := ch.Fields["protocol"].(string)
			if ns, err := strconv.ParseInt(sent, 10, 64); err == nil {
				st.deliver(now.Sub(time.Unix(0, ns)))
			}
		}
	}
}

// load pushes Rate changes/s for Duration and returns how many changes it
// pushed and how long that took. A practice PC pushes a batch every 10 ms;
// a batch does not wait for the one before (at most 16 in flight), as
// pushes from several PCs.
func (m *Main) load(ctx context.Context, st *stats) (int, time.Duration) {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(1, m.Rate/100)
	pushed, batch := 0, 0
	inflight := make(chan struct{}, 16)
	var pushers sync.WaitGroup
	for time.Since(start) < m.Duration && ctx.Err() == nil {
		<-tick.C
		cs := m.sessionBatch(pushed, perTick)
		pushed += perTick
		batch++
		inflight <- struct{}{}
		pushers.Add(1)
		go func(id string) {
			defer pushers.Done()
			defer func() { <-inflight }()
			if _, err := m.push(ctx, id, cs); err != nil {
				st.fail(err)
			}
		}(fmt.Sprintf("lg-%d-%d", start.UnixNano(), batch))
	}
	pushers.Wait()
	return pushed, time.Since(start)
}

// sessionBatch returns n session upserts, changes from to from+n-1 of the
// load, each stamped with its time of sending in its "protocol" field.
func (m *Main) sessionBatch(from, n int) []map[string]any {
	var cs []map[string]any
	for i := from; i < from+n; i++ {
		cs = append(cs, map[string]any{"entity": "sessions", "op": "upsert", "id": fmt.Sprintf("lg-s-%d", i%(5*m.Accounts)),
			"fields": map[string]any{"therapist_id": account(i % m.Accounts), "protocol": strconv.FormatInt(time.Now().UnixNano(), 10)}})
	}
	return cs
}

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

// catchUp pushes CatchUp changes the offline device sees, then times its
// catch-up from its old cursor.
func (m *Main) catchUp(ctx context.Context, t *store.Tenant) (time.Duration, error) {
	from, err := t.Seq(ctx)
	if err != nil {
		return 0, err
	}
	tok, _, err := t.LoginDevice(ctx, account(0), "loadgen-offline", "loadgen", "loadgen")
	if err != nil {
		return 0, err
	}
	for i := 0; i < m.CatchUp; i += 1000 {
		var cs []map[string]any
		for j := i; j < min(i+1000, m.CatchUp); j++ {
			cs = append(cs, map[string]any{"entity": "sessions", "op": "upsert", "id": fmt.Sprintf("lg-c-%d", j), "fields": map[string]any{"therapist_id": account(0), "status": "planned"}})
		}
		if _, err := m.push(ctx, fmt.Sprintf("lg-c-%d-%d", time.Now().UnixNano(), i), cs); err != nil {
			return 0, err
		}
	}
	to, _ := t.Seq(ctx)
	start := time.Now()
	c, err := dial(ctx, m.Server, tok, from)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return 0, err
		}
		var f struct {
			Type string `json:"type"`
			Seq  int64  `json:"seq"`
		}
		json.Unmarshal(b, &f)
		if f.Type == "caught_up" && f.Seq >= to {
			return time.Since(start), nil
		}
	}
}

// dial connects a device with token to the sync socket from cursor.
func dial(ctx context.Context, server, token string, cursor int64) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	url := "ws" + strings.TrimPrefix(server, "http") + "/v1/device/sync?cursor=" + strconv.FormatInt(cursor, 10)
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, h)
	if err != nil && resp != nil {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%w: %s", err, b)
	}
	return c, err
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
