package device

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/therasync/therasync/model"
)

// dbFiles returns the database files in the device directory dir (data.db,
// outbox.db and their -wal, -shm and -journal files).
func dbFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	left, err := filepath.Glob(filepath.Join(dir, "*.db*"))
	if err != nil {
		tb.Fatal(err)
	}
	return left
}

// savedState reads device.json of the device directory dir.
func savedState(tb testing.TB, dir string) State {
	tb.Helper()
	c, err := Open(dir, "")
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	return c.State()
}

// checkLoggedOut checks that c refuses to sync, write and query as
// logged out, and makes no database file doing so.
func checkLoggedOut(tb testing.TB, c *Client) {
	tb.Helper()
	if err := syncIdle(tb, c); !errors.Is(err, ErrNotLoggedIn) {
		tb.Errorf("Sync after logout = %v; want ErrNotLoggedIn", err)
	}
	if _, err := c.Write(context.Background(), model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "X"}}); !errors.Is(err, ErrNotLoggedIn) {
		tb.Errorf("Write after logout = %v; want ErrNotLoggedIn", err)
	}
	if _, err := c.Query(context.Background(), `SELECT * FROM profiles`); !errors.Is(err, ErrNotLoggedIn) {
		tb.Errorf("Query after logout = %v; want ErrNotLoggedIn", err)
	}
	if left := dbFiles(tb, c.Dir()); len(left) != 0 {
		tb.Errorf("database files of a logged-out device: %v", left)
	}
}

// TestLogoutAlwaysWipes: Logout deletes data.db, the outbox and their -wal
// and -shm files whatever the server answers (DESIGN §5). A server that
// cannot be reached (no answer, 5xx) leaves the token as a pending logout
// and Logout says so with ErrLogoutPending; an answer (200, or 401 for a
// token that already ended) leaves nothing. Either way the device refuses
// to sync, write and query.
func TestLogoutAlwaysWipes(t *testing.T) {
	for _, tt := range []struct {
		name        string
		down        bool
		status      int
		wantPending bool
	}{
		{name: "the server answers"},
		{name: "the token had ended", status: http.StatusUnauthorized},
		{name: "no answer", down: true, wantPending: true},
		{name: "server error", status: http.StatusInternalServerError, wantPending: true},
		{name: "server unavailable", status: http.StatusServiceUnavailable, wantPending: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t)
			fs.logoutDown, fs.logoutStatus = tt.down, tt.status
			c := openClient(t, fs.URL, 5, startRows())
			write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"}) // the outbox holds a write
			row(t, c, model.Profiles, "p1")                                                        // Query's handle is open
			for _, f := range []string{"data.db", "data.db-wal", "data.db-shm", "outbox.db", "outbox.db-wal", "outbox.db-shm"} {
				if _, err := os.Stat(c.path(f)); err != nil {
					t.Fatalf("before the logout: %v", err)
				}
			}

			err := c.Logout(context.Background())
			if tt.wantPending != errors.Is(err, ErrLogoutPending) || !tt.wantPending && err != nil {
				t.Errorf("Logout = %v; want ErrLogoutPending: %v", err, tt.wantPending)
			}
			if left := dbFiles(t, c.Dir()); len(left) != 0 {
				t.Errorf("files left after logout: %v", left)
			}
			var want []PendingLogout
			if tt.wantPending {
				want = []PendingLogout{{Server: fs.URL, Token: "t1.secret"}}
			}
			for _, st := range []State{c.State(), savedState(t, c.Dir())} {
				if st.State != StateLoggedOut || st.Token != "" || st.DeviceID == "d1" || !slices.Equal(st.LogoutPending, want) {
					t.Errorf("state after logout = %+v; want logged out, no token, a new device id, logout pending %v", st, want)
				}
			}
			if got := fs.callLog(); !slices.Equal(got, []string{"logout t1.secret"}) {
				t.Errorf("requests = %q; want the logout with the token", got)
			}
			checkLoggedOut(t, c)
			if tt.wantPending {
				if err := c.FinishLogout(context.Background()); !errors.Is(err, ErrLogoutPending) {
					t.Errorf("FinishLogout with the server still away = %v; want ErrLogoutPending", err)
				}
				if st := c.State(); len(st.LogoutPending) != 1 {
					t.Errorf("logout pending = %v; want the one token, once", st.LogoutPending)
				}
			}
		})
	}
}

// TestPendingLogoutIsSentLater: once the server is back, the next call
// that reaches it (FinishLogout, or Sync, Login, UseToken and Logout,
// which call it first) tells the server of the pending logout with the
// old token, before anything else, and forgets the token. A device logged
// in again meanwhile works on, on the same Client or a reopened one.
func TestPendingLogoutIsSentLater(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		reopen bool // Open the directory anew before the call
		call   func(c *Client) error
		want   []string // the requests after the pending logout
		active bool     // the device is logged in after the call
	}{
		{name: "FinishLogout", reopen: true, call: func(c *Client) error { return c.FinishLogout(ctx) }},
		{name: "Sync", reopen: true, call: func(c *Client) error {
			if err := syncIdle(t, c); !errors.Is(err, ErrNotLoggedIn) {
				return err
			}
			return nil
		}},
		{name: "Logout again", call: func(c *Client) error { return c.Logout(ctx) }},
		{name: "UseToken", call: func(c *Client) error { return c.UseToken(ctx, "t1.secret") }, want: []string{"shard"}, active: true},
		{name: "UseToken reopened", reopen: true, call: func(c *Client) error { return c.UseToken(ctx, "t1.secret") }, want: []string{"shard"}, active: true},
		{name: "Login", call: func(c *Client) error { return c.Login(ctx, "m@x.de", "123456", "Phone", "test") }, want: []string{"login", "shard"}, active: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t)
			fs.setShard(7, startRows())
			fs.logoutDown = true
			c := openClient(t, fs.URL, 5, startRows())
			if err := c.Logout(ctx); !errors.Is(err, ErrLogoutPending) {
				t.Fatalf("Logout with the server away = %v; want ErrLogoutPending", err)
			}
			fs.mu.Lock()
			fs.logoutDown, fs.calls = false, nil
			fs.mu.Unlock()
			if tt.reopen {
				c.Close()
				var err error
				if c, err = Open(c.Dir(), ""); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if left := dbFiles(t, c.Dir()); len(left) != 0 {
					t.Errorf("Open of a logged-out device made %v", left)
				}
			}

			if err := tt.call(c); err != nil {
				t.Fatalf("%s = %v", tt.name, err)
			}
			if got, want := fs.callLog(), append([]string{"logout t1.secret"}, tt.want...); !slices.Equal(got, want) {
				t.Errorf("requests = %q; want %q", got, want)
			}
			for _, st := range []State{c.State(), savedState(t, c.Dir())} {
				if len(st.LogoutPending) != 0 {
					t.Errorf("logout pending after it was sent: %v", st.LogoutPending)
				}
			}
			if !tt.active {
				checkLoggedOut(t, c)
				return
			}
			if st := c.State(); st.State != StateActive || st.Token != "t1.secret" {
				t.Errorf("state after %s = %+v; want active", tt.name, st)
			}
			write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
			checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Bea", "last_name": "Alt"}})
			if got := cursor(t, c); got != 7 {
				t.Errorf("cursor = %d; want the new shard's 7", got)
			}
		})
	}
}
