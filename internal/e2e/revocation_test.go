package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/internal/testbin"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// startSyncd starts a syncd server with a store of its own over the
// system's data directory and Redis, as a separate syncd process would
// run, and returns its URL.
func (sys *system) startSyncd(tb testing.TB) string {
	tb.Helper()
	st, err := store.Open(sys.data, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	cfg := sys.syncdConfig()
	cfg.Store = st
	srv := syncd.New(cfg)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(hs.Close)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return hs.URL
}

// call sends a JSON request to base with a bearer token.
func call(tb testing.TB, base, method, path, token string, body any) (int, []byte) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// socket is a device's live connection whose frames are read in the
// background, each with the time it arrived.
type socket struct {
	ws     *websocket.Conn
	frames chan liveFrame
	mu     sync.Mutex
	code   int       // the close code, once closed
	closed time.Time // when the close arrived
	done   chan struct{}
}

type liveFrame struct {
	at   time.Time
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
	raw  string
}

// openSocket connects a device to base's live stream at the tenant's head
// and waits for caught_up; it fails the test when refused.
func openSocket(tb testing.TB, base, token string, cursor int64) *socket {
	tb.Helper()
	s, status, body := dialSocket(tb, base, token, cursor)
	if s == nil {
		tb.Fatalf("connect = %d %s", status, body)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case f := <-s.frames:
			if f.Type == "caught_up" {
				return s
			}
		case <-s.done:
			tb.Fatalf("closed before caught_up: %d", s.code)
		case <-deadline:
			tb.Fatal("no caught_up within 5s")
		}
	}
}

// dialSocket connects, or returns the refusal's status and body.
func dialSocket(tb testing.TB, base, token string, cursor int64) (*socket, int, string) {
	tb.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	url := "ws" + strings.TrimPrefix(base, "http") + fmt.Sprintf("/v1/device/sync?cursor=%d", cursor)
	ws, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		if resp == nil {
			tb.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(b)
	}
	s := &socket{ws: ws, frames: make(chan liveFrame, 1024), done: make(chan struct{})}
	tb.Cleanup(func() { ws.Close() })
	go func() {
		defer close(s.done)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				s.mu.Lock()
				s.closed = time.Now()
				if errors.As(err, &ce) {
					s.code = ce.Code
				} else {
					s.code = -1
				}
				s.mu.Unlock()
				return
			}
			f := liveFrame{at: time.Now(), raw: string(b)}
			json.Unmarshal(b, &f)
			s.frames <- f
		}
	}()
	return s, 0, ""
}

// closedWithin waits for the socket to close and returns its code and the
// frames that arrived since.
func (s *socket) closedWithin(tb testing.TB, d time.Duration) (int, time.Time, []liveFrame) {
	tb.Helper()
	var got []liveFrame
	deadline := time.After(d)
	for {
		select {
		case f := <-s.frames:
			got = append(got, f)
		case <-s.done:
			for len(s.frames) > 0 {
				got = append(got, <-s.frames)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.code, s.closed, got
		case <-deadline:
			return 0, time.Time{}, got
		}
	}
}

// TestRevocationMatrix: every way an account's or a device's access ends
// × every writer that can end it × a socket on the same and on another
// syncd process: the socket is closed with the right code within a
// second, nothing is sent over it once the cause is applied, and the next
// connection is refused with the right error.
func TestRevocationMatrix(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	a := sys.startSyncd(t) // where the causes are applied
	b := sys.startSyncd(t) // another syncd process
	cli := testbin.Build(t, "github.com/therasync/therasync/cmd/therasync")
	operator := func(args ...string) {
		t.Helper()
		args = append(args, "--data", sys.data, "--tenant", sys.tenant.ID(), "--redis", "redis://"+sys.redis.Addr)
		if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
			t.Fatalf("therasync %v: %v\n%s", args, err, out)
		}
	}
	ctx := context.Background()
	sys.push(up("accounts", "adm", map[string]any{"name": "Admin", "email": "adm@x.de", "role": "admin", "app_enabled": true}))
	adminToken, _, err := sys.tenant.LoginDevice(ctx, "adm", "adm-phone", "Admin", "test")
	if err != nil {
		t.Fatal(err)
	}
	// adminPush writes one mutation from the admin's phone, over its own
	// live connection to a, and waits for the ack.
	adminPush := func(fields map[string]any, op, account string) {
		t.Helper()
		s := openSocket(t, a, adminToken, sys.seq())
		m := map[string]any{"id": fmt.Sprintf("m-%d", time.Now().UnixNano()), "entity": "accounts", "op": op, "row_id": account}
		if fields != nil {
			m["fields"] = fields
		}
		if err := s.ws.WriteJSON(map[string]any{"type": "push", "mutations": []any{m}}); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case f := <-s.frames:
				if f.Type == "ack" {
					s.ws.Close()
					return
				}
				if f.Type == "reject" {
					t.Fatalf("admin's push refused: %s", f.raw)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no ack of the admin's push")
			}
		}
	}

	const (
		refused = "device_revoked" // 403 on the next connection
		gone    = "unauthorized"   // 401: the token ended
		wiped   = "wipe"           // the wipe frame and 4003 again
	)
	type cause struct {
		name, writer string
		code         int    // the close code
		next         string // what the next connection gets
		apply        func(account, device, token string)
	}
	causes := []cause{
		{"app_enabled false", "practice push", 4003, refused, func(acc, _, _ string) {
			sys.push(up("accounts", acc, map[string]any{"app_enabled": false}))
		}},
		{"app_enabled false", "admin device", 4003, refused, func(acc, _, _ string) {
			adminPush(map[string]any{"app_enabled": false}, "upsert", acc)
		}},
		{"app_enabled false", "operator CLI", 4003, refused, func(acc, _, _ string) {
			operator("account", "disable", "--account", acc)
		}},
		{"app_enabled null", "practice push", 4003, refused, func(acc, _, _ string) {
			sys.push(up("accounts", acc, map[string]any{"app_enabled": nil}))
		}},
		{"app_enabled null", "admin device", 4003, refused, func(acc, _, _ string) {
			adminPush(map[string]any{"app_enabled": nil}, "upsert", acc)
		}},
		{"role removed", "practice push", 4003, refused, func(acc, _, _ string) {
			sys.push(up("accounts", acc, map[string]any{"role": nil}))
		}},
		{"role removed", "admin device", 4003, refused, func(acc, _, _ string) {
			adminPush(map[string]any{"role": nil}, "upsert", acc)
		}},
		{"account deleted", "practice push", 4003, refused, func(acc, _, _ string) {
			sys.push(map[string]any{"entity": "accounts", "op": "delete", "id": acc})
		}},
		{"account deleted", "admin device", 4003, refused, func(acc, _, _ string) {
			adminPush(nil, "delete", acc)
		}},
		{"device revoked", "practice API", 4003, refused, func(_, dev, _ string) {
			if st, body := call(t, a, "POST", "/v1/practice/devices/"+dev+"/revoke", sys.key, nil); st != 200 {
				t.Fatalf("revoke = %d %s", st, body)
			}
		}},
		{"device revoked", "operator CLI", 4003, refused, func(_, dev, _ string) {
			operator("device", "revoke", "--device", dev)
		}},
		{"device revoked with wipe", "practice API", 4003, wiped, func(_, dev, _ string) {
			if st, body := call(t, a, "POST", "/v1/practice/devices/"+dev+"/revoke", sys.key, map[string]bool{"wipe": true}); st != 200 {
				t.Fatalf("revoke = %d %s", st, body)
			}
		}},
		{"device revoked with wipe", "operator CLI", 4003, wiped, func(_, dev, _ string) {
			operator("device", "revoke", "--device", dev, "--wipe")
		}},
		{"logout", "device API", 4001, gone, func(_, _, tok string) {
			if st, body := call(t, a, "POST", "/v1/device/logout", tok, nil); st != 200 {
				t.Fatalf("logout = %d %s", st, body)
			}
		}},
		{"token replaced", "device API", 4001, gone, func(acc, dev, _ string) {
			sys.waitShard(acc, 0, 5*time.Second)
			code, _, err := sys.codes.Issue(ctx, sys.tenant.ID(), acc, acc+"@x.de")
			if err != nil {
				t.Fatal(err)
			}
			st, body := call(t, a, "POST", "/v1/device/login", "", map[string]string{"email": acc + "@x.de", "code": code, "device_id": dev})
			if st != 200 {
				t.Fatalf("login = %d %s", st, body)
			}
		}},
		{"license withdrawn", "operator CLI", 4003, refused, func(_, _, _ string) {
			operator("tenant", "set", "--licenses", "sync")
		}},
	}
	n := 0
	for _, c := range causes {
		for _, where := range []string{"same process", "another process"} {
			base := a
			if where == "another process" {
				base = b
			}
			t.Run(c.name+" by "+c.writer+", socket on "+where, func(t *testing.T) {
				n++
				acc, dev := fmt.Sprintf("v%d", n), fmt.Sprintf("v%d-phone", n)
				sys.push(up("accounts", acc, map[string]any{"name": acc, "email": acc + "@x.de", "role": "member", "app_enabled": true}),
					up("profiles", "p-"+acc, map[string]any{"owner_id": acc, "first_name": "Vor"}))
				tok, _, err := sys.tenant.LoginDevice(ctx, acc, dev, dev, "test")
				if err != nil {
					t.Fatal(err)
				}
				s := openSocket(t, base, tok, sys.seq())
				c.apply(acc, dev, tok)
				applied := time.Now()
				// A change the device would see, pushed once the cause is
				// applied: nothing of it may arrive.
				sys.push(up("profiles", "p-"+acc, map[string]any{"first_name": "Nach"}))
				code, at, frames := s.closedWithin(t, 3*time.Second)
				if code != c.code {
					t.Errorf("close code %d; want %d", code, c.code)
				}
				if code != 0 && at.Sub(applied) > time.Second {
					t.Errorf("closed %v after the cause; want within 1s", at.Sub(applied))
				}
				for _, f := range frames {
					if !(c.next == wiped && f.Type == "wipe") {
						t.Errorf("sent after the cause: %s", f.raw)
					}
				}
				if c.next == wiped && (len(frames) == 0 || frames[len(frames)-1].Type != "wipe") {
					t.Errorf("frames before the close = %v; want the wipe", frames)
				}
				// The next connection, to either process.
				for _, to := range []string{a, b} {
					again, st, body := dialSocket(t, to, tok, sys.seq())
					switch c.next {
					case wiped:
						if again == nil {
							t.Errorf("reconnect = %d %s; want the wipe frame and 4003", st, body)
							continue
						}
						code, _, frames := again.closedWithin(t, 3*time.Second)
						if code != 4003 || len(frames) != 1 || frames[0].Type != "wipe" {
							t.Errorf("reconnect: close %d after %v; want the wipe and 4003", code, frames)
						}
					default:
						if again != nil || errCode([]byte(body)) != c.next {
							t.Errorf("reconnect = %d %s; want %s", st, body, c.next)
						}
					}
				}
			})
			if c.name == "license withdrawn" {
				operator("tenant", "set", "--licenses", "sync,app")
			}
		}
	}
	// The audit log names every cause with its actor.
	_, audit := sys.do("GET", "/v1/practice/audit?limit=1000", nil)
	for _, want := range []string{`"actor":"practice","account_id":"v1","action":"app_disabled","detail":"app_enabled false"`,
		`"actor":"device","account_id":"v3","device_id":"adm-phone","action":"app_disabled"`,
		`"actor":"operator","account_id":"v5","action":"app_disabled"`,
		`"action":"app_disabled","detail":"app_enabled null"`, `"detail":"role removed"`, `"detail":"account deleted"`,
		`"actor":"operator","account_id":"v21","device_id":"v21-phone","action":"device_revoked"`,
		`"actor":"operator","action":"settings_changed","detail":"licenses sync, tz Europe/Berlin"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit lacks %s", want)
		}
	}
}
