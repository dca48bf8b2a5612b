package e2e_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/syncd"
)

// restartable serves syncd on a fixed loopback address that can go down
// and come back, like a server restart seen from a phone.
type restartable struct {
	sys  *system
	addr string
	wrap func(http.Handler) http.Handler // nil: syncd as it is
	srv  *syncd.Server
	http *http.Server
}

// restartable starts syncd on a loopback address, behind wrap if given.
func (sys *system) restartable(wrap ...func(http.Handler) http.Handler) *restartable {
	sys.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		sys.t.Fatal(err)
	}
	r := &restartable{sys: sys, addr: ln.Addr().String()}
	if len(wrap) > 0 {
		r.wrap = wrap[0]
	}
	r.serve(ln)
	sys.url = "http://" + r.addr
	sys.t.Cleanup(r.down)
	return r
}

func (r *restartable) serve(ln net.Listener) {
	r.srv = syncd.New(r.sys.syncdConfig())
	if err := r.srv.Start(); err != nil {
		r.sys.t.Fatal(err)
	}
	var h http.Handler = r.srv
	if r.wrap != nil {
		h = r.wrap(h)
	}
	r.http = &http.Server{Handler: h}
	go r.http.Serve(ln)
}

func (r *restartable) down() {
	if r.http == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.http.Shutdown(ctx)
	r.srv.Close(ctx)
	r.http = nil
	// A client's kept-alive connection to the old server would fail the
	// next POST with EOF, as a phone's would after a server restart.
	http.DefaultClient.CloseIdleConnections()
}

func (r *restartable) up() {
	r.sys.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.sys.t.Fatal(err)
	}
	r.serve(ln)
}

func newDevice(tb testing.TB, sys *system, email, account string) *device.Client {
	tb.Helper()
	c, err := device.Open(tb.TempDir(), sys.url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if err := c.Login(context.Background(), email, sys.sendCode(account), "Testgerät", "go"); err != nil {
		tb.Fatalf("Login = %v", err)
	}
	return c
}

func syncIdle(tb testing.TB, c *device.Client) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Sync(ctx, device.SyncOptions{UntilIdle: true, RevokedRetry: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
}

func queryOne(tb testing.TB, c *device.Client, q string, args ...any) any {
	tb.Helper()
	rows, err := c.Query(context.Background(), q, args...)
	if err != nil {
		tb.Fatalf("Query(%s) = %v", q, err)
	}
	if len(rows) == 0 {
		return nil
	}
	for _, v := range rows[0] {
		return v
	}
	return nil
}

// TestDeviceLibrary drives the client library against real syncd, worker
// and Redis: offline writes survive a server restart and are delivered
// once; a rejected write is reported and the row restored; revocation makes
// the data read-only while reads work; re-enabling resumes; logout leaves
// no database file.
func TestDeviceLibrary(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.resend = 10 * time.Millisecond })
	r := sys.restartable()
	sys.startWorker(time.Hour)
	seedGroup(sys)
	sys.push(up("accounts", "s1", map[string]any{"app_enabled": true}))
	sys.waitShard("s1", sys.seq(), 5*time.Second)
	tablet := newDevice(t, sys, "s@x.de", "s1")
	if err := syncIdle(t, tablet); err != nil {
		t.Fatalf("first sync = %v", err)
	}
	if got := queryOne(t, tablet, `SELECT first_name FROM profiles WHERE id = 'p1'`); got != "Anna" {
		t.Fatalf("local profile p1 = %v; want Anna", got)
	}

	// Offline: the server goes down, the tablet writes, the server comes
	// back, the write is delivered once.
	r.down()
	if _, err := tablet.Write(context.Background(), model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "030 111"}}); err != nil {
		t.Fatalf("offline write = %v", err)
	}
	if got := queryOne(t, tablet, `SELECT phone FROM profiles WHERE id = 'p1'`); got != "030 111" {
		t.Errorf("the offline write is not applied locally: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	tablet.Sync(ctx, device.SyncOptions{UntilIdle: true, MaxBackoff: 50 * time.Millisecond})
	cancel()
	if ps, _ := tablet.Outbox(context.Background()); len(ps) != 1 {
		t.Fatalf("outbox while the server is down = %v; want the write", ps)
	}
	r.up()
	if err := syncIdle(t, tablet); err != nil {
		t.Fatalf("sync after the restart = %v", err)
	}
	if err := syncIdle(t, tablet); err != nil {
		t.Fatalf("second sync = %v", err)
	}
	_, pulled := sys.do("GET", "/v1/practice/changes?since=0&limit=1000", nil)
	if n := strings.Count(string(pulled), `"030 111"`); n != 1 {
		t.Errorf("the offline write is %d times in the log; want once", n)
	}
	if ps, _ := tablet.Outbox(context.Background()); len(ps) != 0 {
		t.Errorf("outbox after the ack = %v; want empty", ps)
	}

	// A rejected write: reported, the row back at the server's state.
	if _, err := tablet.Write(context.Background(), model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: "s-1", Fields: map[string]any{"status": "cancelled", "price_cents": 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tablet.Write(context.Background(), model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: "s-1", Fields: map[string]any{"therapist_id": "m2"}}); err != nil {
		t.Fatal(err)
	}
	if got := queryOne(t, tablet, `SELECT therapist_id FROM sessions WHERE id = 's-1'`); got != "m2" {
		t.Fatalf("local write not applied: %v", got)
	}
	if err := syncIdle(t, tablet); err != nil {
		t.Fatalf("sync = %v", err)
	}
	ps, _ := tablet.Outbox(context.Background())
	if len(ps) != 1 || !ps[0].Rejected || ps[0].Error != "forbidden" {
		t.Errorf("outbox = %+v; want the reassignment rejected as forbidden", ps)
	}
	if got := queryOne(t, tablet, `SELECT therapist_id FROM sessions WHERE id = 's-1'`); got != "m1" {
		t.Errorf("rejected write left therapist_id = %v; want the server's m1", got)
	}
	if got := queryOne(t, tablet, `SELECT status FROM sessions WHERE id = 's-1'`); got != "cancelled" {
		t.Errorf("the accepted write was lost: status %v", got)
	}

	// Revocation: read-only, reads work; re-enabling resumes.
	sys.push(up("accounts", "s1", map[string]any{"app_enabled": false}))
	if err := syncIdle(t, tablet); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("sync of a revoked device = %v; want ErrReadOnly", err)
	}
	if _, err := tablet.Write(context.Background(), model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "x"}}); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("write while revoked = %v; want ErrReadOnly", err)
	}
	if got := queryOne(t, tablet, `SELECT first_name FROM profiles WHERE id = 'p1'`); got != "Anna" {
		t.Errorf("read while revoked = %v", got)
	}
	sys.push(up("accounts", "s1", map[string]any{"app_enabled": true}))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for tablet.State().State != device.StateActive || syncIdle(t, tablet) != nil {
		if ctx.Err() != nil {
			t.Fatalf("the re-enabled device did not resume: %+v", tablet.State())
		}
		tablet.Sync(ctx, device.SyncOptions{UntilIdle: true, RevokedRetry: 20 * time.Millisecond})
	}

	// Logout: nothing left on disk.
	dir := tablet.Dir()
	if err := tablet.Logout(context.Background()); err != nil {
		t.Fatalf("Logout = %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.db*"))
	if len(left) != 0 {
		t.Errorf("files left after logout: %v", left)
	}
	if st := tablet.State(); st.Token != "" || st.State != device.StateLoggedOut {
		t.Errorf("state after logout = %+v", st)
	}
}

// TestDeviceWipe: a device revoked as lost deletes its databases the next
// time it reaches the server.
func TestDeviceWipe(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	readyAccount(sys)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	if code, b := sys.do("POST", "/v1/practice/devices/"+phone.State().DeviceID+"/revoke", map[string]bool{"wipe": true}); code != 200 {
		t.Fatalf("revoke = %d %s", code, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := phone.Sync(ctx, device.SyncOptions{}); !errors.Is(err, device.ErrWiped) {
		t.Fatalf("sync after a revoke as lost = %v; want ErrWiped", err)
	}
	left, _ := filepath.Glob(filepath.Join(phone.Dir(), "*.db*"))
	if len(left) != 0 || phone.State().State != device.StateWiped || phone.State().Token != "" {
		t.Errorf("after the wipe: files %v, state %+v; want no database and no token", left, phone.State())
	}
	if _, err := phone.Query(context.Background(), `SELECT 1`); !errors.Is(err, device.ErrNotLoggedIn) {
		t.Errorf("query after the wipe = %v; want ErrNotLoggedIn", err)
	}
}

// TestDeviceLogoutOffline: a logout while the server is down (its listener
// closed) deletes data.db, the outbox and their -wal and -shm files at
// once and keeps only the token, as a pending logout; once the server is
// back, the next call that reaches it (here Sync, after Open) tells the
// server: the token is refused and the device shows logged out.
func TestDeviceLogoutOffline(t *testing.T) {
	sys := newSystem(t)
	r := sys.restartable()
	sys.startWorker(time.Hour)
	readyAccount(sys)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := phone.Write(ctx, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "0171 333"}}); err != nil {
		t.Fatal(err)
	}
	queryOne(t, phone, `SELECT phone FROM profiles WHERE id = 'p1'`)
	dir, st := phone.Dir(), phone.State()
	for _, f := range []string{"data.db", "data.db-wal", "data.db-shm", "outbox.db", "outbox.db-wal", "outbox.db-shm"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("before the logout: %v", err)
		}
	}

	r.down()
	if err := phone.Logout(ctx); !errors.Is(err, device.ErrLogoutPending) {
		t.Errorf("Logout with the server down = %v; want ErrLogoutPending", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.db*")); len(left) != 0 {
		t.Errorf("files left after an offline logout: %v", left)
	}
	if got := phone.State(); got.Token != "" || got.State != device.StateLoggedOut || len(got.LogoutPending) != 1 || got.LogoutPending[0].Token != st.Token {
		t.Errorf("state after an offline logout = %+v; want logged out, the token only as a pending logout", got)
	}
	if err := syncIdle(t, phone); !errors.Is(err, device.ErrNotLoggedIn) {
		t.Errorf("Sync after logout = %v; want ErrNotLoggedIn", err)
	}
	if _, err := phone.Write(ctx, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "x"}}); !errors.Is(err, device.ErrNotLoggedIn) {
		t.Errorf("Write after logout = %v; want ErrNotLoggedIn", err)
	}
	if _, err := phone.Query(ctx, `SELECT 1`); !errors.Is(err, device.ErrNotLoggedIn) {
		t.Errorf("Query after logout = %v; want ErrNotLoggedIn", err)
	}
	phone.Close()

	r.up()
	if resp, b := sys.req("GET", "/v1/device/shard", st.Token, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the old token before the pending logout is sent: %d %s; want it still valid (the server was down)", resp.StatusCode, b)
	}
	again, err := device.Open(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := syncIdle(t, again); !errors.Is(err, device.ErrNotLoggedIn) {
		t.Errorf("Sync of the logged-out device = %v; want ErrNotLoggedIn", err)
	}
	if got := again.State(); len(got.LogoutPending) != 0 {
		t.Errorf("logout still pending after the server was reached: %+v", got.LogoutPending)
	}
	if resp, _ := sys.req("GET", "/v1/device/shard", st.Token, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old token after the pending logout = %d; want 401", resp.StatusCode)
	}
	ds, err := sys.tenant.Devices(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range ds {
		if d.ID == st.DeviceID {
			found = true
			if d.State != "logged_out" {
				t.Errorf("the server's device %s is %s; want logged_out", d.ID, d.State)
			}
		}
	}
	if !found {
		t.Errorf("the server lists no device %s: %+v", st.DeviceID, ds)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.db*")); len(left) != 0 {
		t.Errorf("files of the logged-out device after Open and Sync: %v", left)
	}
}

// TestDeviceResyncKeepsPendingWrites: when what a member sees shrinks, the
// device downloads a fresh shard and its unacknowledged writes survive on
// top of it, then reach the server.
func TestDeviceResyncKeepsPendingWrites(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	seedGroup(sys)
	sys.push(
		up("courses", "crs", map[string]any{"therapist_id": "m1", "title": "Rücken"}),
		up("course_members", "cm", map[string]any{"course_id": "crs", "profile_id": "p2"}),
		up("accounts", "m1", map[string]any{"app_enabled": true}),
	)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	if queryOne(t, phone, `SELECT first_name FROM profiles WHERE id = 'p2'`) != "Ben" {
		t.Fatalf("m1 does not see p2 through its course")
	}
	if _, err := phone.Write(context.Background(), model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "0171 222"}}); err != nil {
		t.Fatal(err)
	}
	sys.push(map[string]any{"entity": "course_members", "op": "delete", "id": "cm"}) // p2 leaves m1's sight
	if err := syncIdle(t, phone); err != nil {
		t.Fatalf("sync through the resync = %v", err)
	}
	if got := queryOne(t, phone, `SELECT count(*) FROM profiles WHERE id = 'p2'`); got != int64(0) {
		t.Errorf("p2 is still on the device after the resync")
	}
	if got := queryOne(t, phone, `SELECT phone FROM profiles WHERE id = 'p1'`); got != "0171 222" {
		t.Errorf("the pending write was lost in the resync: phone %v", got)
	}
	if ps, _ := phone.Outbox(context.Background()); len(ps) != 0 {
		t.Errorf("outbox = %v; want the write acknowledged", ps)
	}
	row, err := sys.tenant.Row(context.Background(), model.Profiles, "p1")
	if err != nil || row["phone"] != "0171 222" {
		t.Errorf("server row p1 = %v, %v; want the device's phone", row, err)
	}
}
