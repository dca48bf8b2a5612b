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
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/store"
)

// main runs the load generator with the command line, until done or
// interrupted.
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
