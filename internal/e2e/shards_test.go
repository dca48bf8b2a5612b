// Package e2e_test drives syncd and the worker together over loopback
// HTTP, against a real Redis and real SQLite files, the way a practice PC
// and a phone would.
package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
	"github.com/therasync/therasync/worker"
)

// system is syncd and a worker over one data directory and a real Redis,
// the way the Procfile runs them, in this process.
type system struct {
	t       testing.TB
	redis   *redistest.Server
	data    string
	store   *store.Store
	tenant  *store.Tenant
	key     string
	url     string
	queue   *worker.Queue
	workers []*worker.Server
	regs    []*prometheus.Registry
	logs    *syncBuffer
	rdb     *redis.Client
	codes   *authcode.Store
	codeTTL time.Duration
	resend  time.Duration
	// activation makes the workers send an enabled account's code mail
	// once its shard is built (as the binaries do); off, the tests send
	// codes themselves (sendCode).
	activation bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// uid returns the UUID a device would give the row it calls name: devices
// create rows only under UUIDs.
func uid(name string) string {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// testSecret is the server secret of the tests.
var testSecret = []byte("e2e-secret-0123456789abcdef-0123456789")

func newSystem(tb testing.TB, opts ...func(*system)) *system {
	tb.Helper()
	sys := &system{t: tb, redis: redistest.Start(tb), data: tb.TempDir(), logs: &syncBuffer{}}
	for _, o := range opts {
		o(sys)
	}
	var err error
	if sys.store, err = store.Open(sys.data, store.Options{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sys.store.Close() })
	st, key, err := sys.store.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatal(err)
	}
	sys.key = key
	if sys.tenant, err = sys.store.Tenant(context.Background(), st.ID); err != nil {
		tb.Fatal(err)
	}
	if sys.queue, err = worker.NewQueue(asynq.RedisClientOpt{Addr: sys.redis.Addr}, testSecret); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sys.queue.Close() })
	sys.rdb = redis.NewClient(&redis.Options{Addr: sys.redis.Addr})
	tb.Cleanup(func() { sys.rdb.Close() })
	if sys.codes, err = authcode.New(authcode.Config{Redis: sys.rdb, Secret: testSecret, TTL: sys.codeTTL, ResendInterval: sys.resend}); err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(syncd.New(sys.syncdConfig()))
	tb.Cleanup(srv.Close)
	sys.url = srv.URL
	return sys
}

// syncdConfig is the configuration of the system's syncd servers.
func (sys *system) syncdConfig() syncd.Config {
	return syncd.Config{Store: sys.store, Builds: sys.queue, Mail: sys.queue, Codes: sys.codes,
		Redis: sys.rdb, Secret: testSecret, Logger: slog.New(slog.NewJSONHandler(sys.logs, nil)),
		AuditFlushInterval: 100 * time.Millisecond} // failed logins' audit lines arrive quickly
}

// startWorker starts a worker process's server, with a store of its own
// like a separate process would have.
func (sys *system) startWorker(tick time.Duration) *worker.Server {
	sys.t.Helper()
	st, err := store.Open(sys.data, store.Options{})
	if err != nil {
		sys.t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := worker.Config{Redis: asynq.RedisClientOpt{Addr: sys.redis.Addr}, Store: st, TickInterval: tick,
		Registry: reg, Logger: slog.New(slog.NewJSONHandler(sys.logs, nil)), Secret: testSecret}
	if sys.activation {
		cfg.Codes = sys.codes
	}
	w, err := worker.New(cfg)
	if err != nil {
		sys.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		sys.t.Fatal(err)
	}
	sys.t.Cleanup(func() {
		w.Shutdown()
		st.Close()
	})
	sys.workers = append(sys.workers, w)
	sys.regs = append(sys.regs, reg)
	return w
}

// builds sums therasync_shard_builds_total{result} over the workers.
func (sys *system) builds(result string) float64 {
	var n float64
	for _, reg := range sys.regs {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "therasync_shard_builds_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if labelIs(m, "result", result) {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func (sys *system) do(method, path string, body any) (int, []byte) {
	sys.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, sys.url+path, r)
	req.Header.Set("Authorization", "Bearer "+sys.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sys.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

var batchN int

func (sys *system) push(changes ...map[string]any) {
	sys.t.Helper()
	batchN++
	code, b := sys.do("POST", "/v1/practice/changes", map[string]any{"batch_id": fmt.Sprint("b", batchN), "changes": changes})
	if code != 200 {
		sys.t.Fatalf("push = %d %s", code, b)
	}
}

func up(entity, id string, f map[string]any) map[string]any {
	return map[string]any{"entity": entity, "op": "upsert", "id": id, "fields": f}
}

type shardInfo struct {
	Seq     int64     `json:"seq"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	BuiltAt time.Time `json:"built_at"`
}

// waitShard polls the practice API until the account's shard is at seq
// minSeq or later.
func (sys *system) waitShard(account string, minSeq int64, within time.Duration) shardInfo {
	sys.t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, b := sys.do("GET", "/v1/practice/accounts/"+account+"/shard", nil)
		var si shardInfo
		if code == 200 && json.Unmarshal(b, &si) == nil && si.Seq >= minSeq {
			return si
		}
		if time.Now().After(deadline) {
			sys.t.Fatalf("no shard of %s at seq ≥ %d within %v (last: %d %s)\nworker log:\n%s", account, minSeq, within, code, b, sys.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (sys *system) seq() int64 {
	sys.t.Helper()
	s, err := sys.tenant.Seq(context.Background())
	if err != nil {
		sys.t.Fatal(err)
	}
	return s
}

func seedGroup(sys *system) {
	sys.push(
		up("accounts", "m1", map[string]any{"name": "Jonas", "email": "j@x.de", "role": "member", "app_enabled": false}),
		up("accounts", "m2", map[string]any{"name": "Lena", "email": "l@x.de", "role": "member", "app_enabled": false}),
		up("accounts", "s1", map[string]any{"name": "Sabine", "email": "s@x.de", "role": "secretary", "app_enabled": false}),
		up("profiles", "p1", map[string]any{"owner_id": "m1", "first_name": "Anna"}),
		up("profiles", "p2", map[string]any{"owner_id": "m2", "first_name": "Ben"}),
		up("sessions", "s-1", map[string]any{"profile_id": "p1", "therapist_id": "m1", "status": "done", "price_cents": 3800, "protocol": "Befund", "starts_at": "2026-11-02T09:00:00+01:00"}),
		up("sessions", "s-2", map[string]any{"profile_id": "p2", "therapist_id": "m2", "status": "done", "price_cents": 4500, "protocol": "Befund", "starts_at": "2026-11-03T09:00:00+01:00"}),
		up("transactions", "x-1", map[string]any{"account_id": "m1", "profile_id": "p1", "session_id": "s-1", "kind": "invoice", "amount_cents": 3800, "status": "paid", "date": "2026-11-05"}),
		up("transactions", "x-2", map[string]any{"account_id": "m1", "kind": "expense", "amount_cents": -1200, "status": "paid", "date": "2026-11-06"}),
	)
}

// TestEnableAppBuildsShard: enabling an account's app by a push enqueues
// its build at once, and its shard appears within seconds, matching its
// recorded size and sha256.
func TestEnableAppBuildsShard(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour) // no tick: the push alone must trigger the build
	seedGroup(sys)
	if code, b := sys.do("GET", "/v1/practice/accounts/m1/shard", nil); code != 404 || !strings.Contains(string(b), "not_found") {
		t.Fatalf("shard before enabling = %d %s; want 404 not_found", code, b)
	}
	start := time.Now()
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	si := sys.waitShard("m1", sys.seq(), 5*time.Second)
	t.Logf("enable → shard recorded in %v", time.Since(start))
	path := filepath.Join(sys.data, shardbuilder.ShardDir(sys.tenant.ID(), "m1"), fmt.Sprintf("%d.db", si.Seq))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("shard file: %v", err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != si.Size || hex.EncodeToString(sum[:]) != si.SHA256 {
		t.Errorf("shard file = %d bytes, sha256 %x; recorded %d, %s", len(b), sum, si.Size, si.SHA256)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var profiles string
	db.QueryRow(`SELECT group_concat(id) FROM profiles`).Scan(&profiles)
	if profiles != "p1" {
		t.Errorf("m1's shard profiles = %q; want p1", profiles)
	}
	// The disabled accounts got no shard.
	if code, _ := sys.do("GET", "/v1/practice/accounts/m2/shard", nil); code != 404 {
		t.Errorf("shard of the disabled m2 = %d; want 404", code)
	}
	if code, b := sys.do("POST", "/v1/practice/shards/build", map[string]any{"account_id": "m2"}); code != 403 || !strings.Contains(string(b), "app_disabled") {
		t.Errorf("build of disabled m2 = %d %s; want 403 app_disabled", code, b)
	}
	if code, b := sys.do("POST", "/v1/practice/shards/build", map[string]any{"account_id": "nobody"}); code != 404 {
		t.Errorf("build of unknown account = %d %s; want 404", code, b)
	}
	if code, b := sys.do("POST", "/v1/practice/shards/build", map[string]any{"acount_id": "m1"}); code != 400 {
		t.Errorf("build with a misspelt field = %d %s; want 400", code, b)
	}
}

// TestConcurrentBuildRequestsRunOneBuild fires 50 build requests for one
// account at once: one build runs.
func TestConcurrentBuildRequestsRunOneBuild(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	seedGroup(sys)
	sys.push(up("accounts", "m2", map[string]any{"app_enabled": true}))
	sys.waitShard("m2", sys.seq(), 5*time.Second)
	sys.push(up("profiles", "p2", map[string]any{"phone": "030 1234"})) // m2's shard is outdated now
	built := sys.builds("built")
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := sys.do("POST", "/v1/practice/shards/build", map[string]any{"account_id": "m2"})
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("build request = %d; want 200", c)
		}
	}
	sys.waitShard("m2", sys.seq(), 5*time.Second)
	time.Sleep(500 * time.Millisecond) // let any surplus task run
	if got := sys.builds("built") - built; got != 1 {
		t.Errorf("50 concurrent build requests ran %v builds; want 1", got)
	}
}

// TestAllDueBuilds: {} requests every missing or outdated shard.
func TestAllDueBuilds(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}), up("accounts", "s1", map[string]any{"app_enabled": true}))
	code, b := sys.do("POST", "/v1/practice/shards/build", map[string]any{})
	if code != 200 || string(b) != "{\"enqueued\":[\"m1\",\"s1\"]}\n" {
		t.Fatalf("build all = %d %s; want m1 and s1", code, b)
	}
	sys.startWorker(time.Hour)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	sys.waitShard("s1", sys.seq(), 5*time.Second)
	code, b = sys.do("POST", "/v1/practice/shards/build", map[string]any{})
	if code != 200 || string(b) != "{\"enqueued\":[]}\n" {
		t.Errorf("build all when up to date = %d %s; want none", code, b)
	}
}

// TestFlushedRedisLosesNoBuild: a build requested while no worker ran, then
// lost with a FLUSHALL, is enqueued again by the reconcile.
func TestFlushedRedisLosesNoBuild(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	if got, err := sys.redis.Do("FLUSHALL"); err != nil || got != "+OK" {
		t.Fatalf("FLUSHALL = %q, %v", got, err)
	}
	sys.startWorker(time.Second)
	sys.waitShard("m1", sys.seq(), 10*time.Second)
}

// TestFailedBuildRetriesAndRunsAtOnceWhenAskedAgain: a failing build is
// retried with backoff; asked for again, it runs at once.
func TestFailedBuildRetriesAndRunsAtOnceWhenAskedAgain(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	seedGroup(sys)
	// A file where the tenant's shard directory belongs makes builds fail.
	block := filepath.Join(sys.data, "shards", sys.tenant.ID())
	os.MkdirAll(filepath.Dir(block), 0o700)
	if err := os.WriteFile(block, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	deadline := time.Now().Add(5 * time.Second)
	for sys.builds("failed") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the build did not fail\n%s", sys.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.Remove(block)
	start := time.Now()
	if code, b := sys.do("POST", "/v1/practice/shards/build", map[string]any{"account_id": "m1"}); code != 200 {
		t.Fatalf("build again = %d %s", code, b)
	}
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("requested again, the build took %v; want it at once, not after the 10s backoff", d)
	}
}

// TestWeeklyRunOncePerWeek runs two workers ticking every second: the
// weekly rebuild of outdated shards runs once.
func TestWeeklyRunOncePerWeek(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	sys.startWorker(time.Second)
	sys.startWorker(time.Second)
	sys.waitShard("m1", sys.seq(), 10*time.Second)
	time.Sleep(3 * time.Second) // several ticks of each worker
	if n := strings.Count(sys.logs.String(), `"msg":"weekly shard rebuild"`); n != 1 {
		t.Errorf("weekly rebuild ran %d times; want 1\n%s", n, sys.logs)
	}
	claimed, err := sys.tenant.ClaimWeekly(context.Background(), worker.WeekStart(time.Now(), mustLoad(t, "Europe/Berlin")).Format(time.RFC3339))
	if err != nil || claimed {
		t.Errorf("ClaimWeekly(this week) = %v, %v; want already claimed", claimed, err)
	}
}

func mustLoad(tb testing.TB, name string) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

func TestWeekStart(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct{ now, want string }{
		{"2026-11-28 02:00", "2026-11-28 02:00"}, // Saturday 02:00 opens the week
		{"2026-11-28 01:59", "2026-11-21 02:00"}, // a minute before: still last week
		{"2026-11-22 12:00", "2026-11-21 02:00"}, // Sunday
		{"2026-11-27 23:59", "2026-11-21 02:00"}, // Friday night
		{"2026-03-28 03:00", "2026-03-28 02:00"}, // the Saturday before DST starts
		{"2026-10-31 02:30", "2026-10-31 02:00"},
	}
	for _, tt := range tests {
		if got := worker.WeekStart(at(tt.now), berlin); !got.Equal(at(tt.want)) {
			t.Errorf("WeekStart(%s) = %s; want %s", tt.now, got.Format("2006-01-02 15:04 Mon"), tt.want)
		}
	}
	// In UTC the Berlin week starts an hour earlier in winter.
	if got := worker.WeekStart(time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC), berlin); !got.Equal(at("2026-11-28 02:00")) {
		t.Errorf("WeekStart(01:30 UTC Saturday) = %v; want Saturday 02:00 Berlin", got)
	}
}

// TestStatsAndBackup: statistics and backups cover exactly what the
// account sees.
func TestStatsAndBackup(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "a1", map[string]any{"name": "Admin", "role": "admin"}))
	type stats struct {
		Revenue  int64 `json:"revenue_cents"`
		Expenses int64 `json:"expenses_cents"`
		Profit   int64 `json:"profit_cents"`
		Unbilled int64 `json:"unbilled_sessions"`
		UnbCents int64 `json:"unbilled_cents"`
	}
	get := func(as string) stats {
		code, b := sys.do("GET", "/v1/practice/stats?as="+as+"&from=2026-11-01&to=2026-11-30", nil)
		if code != 200 {
			t.Fatalf("stats as %s = %d %s", as, code, b)
		}
		var s stats
		json.Unmarshal(b, &s)
		return s
	}
	if got, want := get("a1"), (stats{Revenue: 3800, Expenses: 1200, Profit: 2600, Unbilled: 1, UnbCents: 4500}); got != want {
		t.Errorf("stats as admin = %+v; want %+v", got, want)
	}
	if got, want := get("m2"), (stats{Unbilled: 1, UnbCents: 4500}); got != want {
		t.Errorf("stats as m2 = %+v; want %+v (m2 sees neither m1's invoice nor expense)", got, want)
	}
	if got, want := get("m1"), (stats{Revenue: 3800, Expenses: 1200, Profit: 2600}); got != want {
		t.Errorf("stats as m1 = %+v; want %+v", got, want)
	}
	for _, q := range []string{"as=a1&from=2026-11-30&to=2026-11-01", "as=a1&from=nov&to=2026-11-30", "from=2026-11-01&to=2026-11-30"} {
		if code, b := sys.do("GET", "/v1/practice/stats?"+q, nil); code != 400 {
			t.Errorf("stats?%s = %d %s; want 400", q, code, b)
		}
	}
	// Without from and to: this month up to today, in the tenant's zone.
	berlin, _ := time.LoadLocation("Europe/Berlin")
	before := time.Now().In(berlin)
	code, sb := sys.do("GET", "/v1/practice/stats?as=a1", nil)
	after := time.Now().In(berlin)
	var period struct{ From, To, TZ string }
	json.Unmarshal(sb, &period)
	okDay := func(got, layout, suffix string) bool {
		return got == before.Format(layout)+suffix || got == after.Format(layout)+suffix
	}
	if code != 200 || !okDay(period.From, "2006-01", "-01") || !okDay(period.To, time.DateOnly, "") || period.TZ != "Europe/Berlin" {
		t.Errorf("stats without a period = %d %s; want this month up to today in Europe/Berlin", code, sb)
	}
	if code, _ := sys.do("GET", "/v1/practice/stats?as=ghost&from=2026-11-01&to=2026-11-30", nil); code != 404 {
		t.Errorf("stats as unknown account = %d; want 404", code)
	}

	// A secretary's backup is a SQLite file without protocols.
	code, b := sys.do("GET", "/v1/practice/backup?as=s1", nil)
	if code != 200 {
		t.Fatalf("backup = %d %s", code, b)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	os.WriteFile(path, b, 0o600)
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sessions, protocolCols int
	db.QueryRow(`SELECT count(*) FROM sessions`).Scan(&sessions)
	db.QueryRow(`SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'protocol'`).Scan(&protocolCols)
	if sessions != 2 || protocolCols != 0 {
		t.Errorf("secretary backup: %d sessions, %d protocol columns; want 2 and 0", sessions, protocolCols)
	}
	// The handler removes its file after the body went out: give it a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(sys.data, "tmp"))
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("temporary files left after backup and stats: %v", ents)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}
