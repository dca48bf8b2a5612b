package syncd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// nopMailer sends nothing.
type nopMailer struct{}

func (nopMailer) SendCode(context.Context, string, string, string, time.Time) error { return nil }
func (nopMailer) SendLoginNotice(context.Context, string, string, string, time.Time) error {
	return nil
}

// openEnv is a syncd serving with Open (its own http.Server, with the
// configured read timeouts) over a real store and Redis, with access codes
// and a tenant whose m1 may use the app.
type openEnv struct {
	*env
	srv       *syncd.Server
	codes     *authcode.Store
	closeOnce sync.Once
}

// close shuts the server down (once; also at the test's end).
func (e *openEnv) close(tb testing.TB) {
	tb.Helper()
	e.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Close(ctx); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
}

func newOpenEnv(tb testing.TB, cfg syncd.Config) *openEnv {
	tb.Helper()
	rs := redistest.Start(tb)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	tb.Cleanup(func() { rdb.Close() })
	s, err := store.Open(tb.TempDir(), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	codes, err := authcode.New(authcode.Config{Redis: rdb, Secret: totpSecret})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Store, cfg.Redis, cfg.Codes, cfg.Mail = s, rdb, codes, nopMailer{}
	srv := syncd.New(cfg)
	if err := srv.Open("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	st, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatal(err)
	}
	tn, _ := s.Tenant(context.Background(), st.ID)
	e := &openEnv{env: &env{URL: "http://" + srv.Addr(), Key: key, Store: s, T: tn}, srv: srv, codes: codes}
	tb.Cleanup(func() { e.close(tb) })
	e.push(tb, "seed", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"name":"Jonas","email":"j@x.de","role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"Admin","role":"admin","app_enabled":true}}
	]`)
	return e
}

// trickle sends a request's head announcing a body of n bytes, then the
// body a byte every gap, and returns the status line the server answered
// with ("" when it hung up without one) and when.
func trickle(tb testing.TB, addr, path, key, body string, gap time.Duration) (string, time.Duration) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, len(body))
	if key != "" {
		head += "Authorization: Bearer " + key + "\r\n"
	}
	start := time.Now()
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		tb.Fatal(err)
	}
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	for i := 0; i < len(body); i++ {
		select {
		case line := <-answered:
			return line, time.Since(start)
		case <-time.After(gap):
		}
		if _, err := c.Write([]byte{body[i]}); err != nil {
			break // hung up
		}
	}
	select {
	case line := <-answered:
		return line, time.Since(start)
	case <-time.After(10 * time.Second):
		tb.Fatalf("no answer to %s", path)
		return "", 0
	}
}

// TestSlowBodies: a small body (a login) must arrive within
// BodyReadTimeout, a practice push within ReadTimeout; past it the request
// is cut off with 408.
func TestSlowBodies(t *testing.T) {
	const small, whole = 300 * time.Millisecond, 3 * time.Second
	e := newOpenEnv(t, syncd.Config{BodyReadTimeout: small, ReadTimeout: whole})
	addr := strings.TrimPrefix(e.URL, "http://")
	login := `{"email":"j@x.de","code":"123456","device_id":"d1"}`
	push := `{"batch_id":"slow","changes":[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]}`
	for _, tc := range []struct {
		name, path, key, body string
		gap                   time.Duration
		want                  string
		within                time.Duration
	}{
		// 20 bytes a second would hold the connection for seconds.
		{"login trickled", "/v1/device/login", "", login, 50 * time.Millisecond, "HTTP/1.1 408 Request Timeout", small + time.Second},
		{"login in time", "/v1/device/login", "", login, time.Millisecond, "HTTP/1.1 401 Unauthorized", time.Second},
		{"push slower than a small body", "/v1/practice/changes", e.Key, push, 5 * time.Millisecond, "HTTP/1.1 200 OK", whole},
		{"push trickled", "/v1/practice/changes", e.Key, push, 100 * time.Millisecond, "HTTP/1.1 408 Request Timeout", whole + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, took := trickle(t, addr, tc.path, tc.key, tc.body, tc.gap)
			if line != tc.want || took > tc.within {
				t.Errorf("answer %q after %s; want %q within %s", line, took, tc.want, tc.within)
			}
		})
	}
}

// TestLoginBodyLimit: a login body past 4 KiB is refused with 413.
func TestLoginBodyLimit(t *testing.T) {
	e := newOpenEnv(t, syncd.Config{})
	for _, tc := range []struct {
		name string
		pad  int
		want int
	}{
		{"small", 3000, http.StatusUnauthorized},
		{"oversized", 5000, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"email":"j@x.de",%s"code":"123456","device_id":"d1"}`, strings.Repeat(" ", tc.pad))
			st, b := e.do(t, "POST", "/v1/device/login", "", []byte(body))
			var eb struct{ Error string }
			json.Unmarshal(b, &eb)
			if st != tc.want || (tc.want == 413 && eb.Error != "too_large") {
				t.Errorf("login with %d bytes = %d %s; want %d", len(body), st, b, tc.want)
			}
		})
	}
}

// TestLiveSocketsOutliveReadTimeouts: a live connection stays open, and
// answers pings, long past ReadTimeout and BodyReadTimeout.
func TestLiveSocketsOutliveReadTimeouts(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newOpenEnv(t, syncd.Config{ReadTimeout: timeout, BodyReadTimeout: timeout / 2})
	for _, tc := range []struct{ name, path, token string }{
		{"device", "/v1/device/sync?cursor=0", e.token(t, "a1", "phone-1")},
		{"practice", "/v1/practice/sync?cursor=0", e.Key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, st, code := dial(t, e.URL, tc.path, tc.token)
			if st != 101 {
				t.Fatalf("dial = %d %s", st, code)
			}
			until(t, ws, "caught_up")
			time.Sleep(5 * timeout)
			pong := make(chan struct{}, 1)
			ws.SetPongHandler(func(string) error {
				pong <- struct{}{}
				return nil
			})
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
				t.Fatalf("ping after %s: %v", 5*timeout, err)
			}
			e.push(t, tc.name, `[{"entity":"practices","op":"upsert","id":"`+tc.name+`","fields":{"name":"Neu"}}]`)
			f, _ := until(t, ws, "changes") // reading also takes the pong
			if len(f.Changes) != 1 || f.Changes[0]["id"] != tc.name {
				t.Errorf("changes after the timeouts = %+v", f.Changes)
			}
			select {
			case <-pong:
			case <-time.After(time.Second):
				t.Errorf("no pong after %s", 5*timeout)
			}
		})
	}
}

// TestFailedLoginAuditLines: failed logins are audited in the background,
// identical lines coalesced into one that counts them, and a clean
// shutdown writes what still waits.
func TestFailedLoginAuditLines(t *testing.T) {
	e := newOpenEnv(t, syncd.Config{AuditFlushInterval: time.Hour}) // only Close flushes
	if st, b := e.do(t, "POST", "/v1/practice/accounts/m1/access-code", e.Key, nil); st != 200 {
		t.Fatalf("send code = %d %s", st, b)
	}
	login := func(email, device string) {
		t.Helper()
		body := fmt.Sprintf(`{"email":%q,"code":"0000000","device_id":%q}`, email, device)
		if st, b := e.do(t, "POST", "/v1/device/login", "", []byte(body)); st != 401 {
			t.Fatalf("wrong code = %d %s; want 401", st, b)
		}
	}
	for range 17 {
		login("j@x.de", "phone-1")
	}
	login("j@x.de", "phone-2")
	login("nobody@x.de", "phone-3")
	failed := func() []store.AuditEntry {
		t.Helper()
		all, err := e.T.AuditLog(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var out []store.AuditEntry
		for _, a := range all {
			if a.Action == "login_failed" {
				out = append(out, a)
			}
		}
		return out
	}
	if got := failed(); len(got) != 0 {
		t.Fatalf("failed logins written before the flush: %+v", got)
	}
	e.close(t)
	got := failed()
	// One line for the account, whatever the devices; none for the
	// unknown email.
	if len(got) != 1 || got[0].AccountID != "m1" || got[0].Detail != "invalid_code ×18; 2 devices" || got[0].DeviceID != "" || got[0].Addr != "127.0.0.1" {
		t.Fatalf("failed-login lines after Close = %+v; want one of m1: invalid_code ×18; 2 devices, from 127.0.0.1", got)
	}
}
