package syncd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// liveEnv is a syncd over a real store and a real Redis, served over
// loopback.
type liveEnv struct {
	*env
	srv   *syncd.Server
	http  *httptest.Server
	redis *redistest.Server
}

func newLiveEnv(tb testing.TB, rs *redistest.Server, data string, cfg syncd.Config) *liveEnv {
	tb.Helper()
	s, err := store.Open(data, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	tb.Cleanup(func() { rdb.Close() })
	cfg.Store, cfg.Redis = s, rdb
	srv := syncd.New(cfg)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
		hs.Close()
	})
	return &liveEnv{env: &env{URL: hs.URL, Store: s}, srv: srv, http: hs, redis: rs}
}

// newTenantEnv makes a live env with a fresh tenant and a seeded group.
func newTenantEnv(tb testing.TB, cfg syncd.Config) *liveEnv {
	tb.Helper()
	return newTenantEnvAt(tb, tb.TempDir(), cfg)
}

// newTenantEnvAt is newTenantEnv over the data directory data.
func newTenantEnvAt(tb testing.TB, data string, cfg syncd.Config) *liveEnv {
	tb.Helper()
	e := newLiveEnv(tb, redistest.Start(tb), data, cfg)
	st, key, err := e.Store.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatal(err)
	}
	e.Key = key
	e.T, _ = e.Store.Tenant(context.Background(), st.ID)
	e.push(tb, "seed", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"Admin","role":"admin","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"a2","fields":{"name":"Admin 2","role":"admin","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"name":"Sabine","role":"secretary","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"name":"Jonas","role":"member","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"m1","first_name":"Anna"}},
		{"entity":"sessions","op":"upsert","id":"ses1","fields":{"profile_id":"p1","therapist_id":"m1","protocol":"Befund geheim","status":"done"}}
	]`)
	return e
}

func (e *env) push(tb testing.TB, batch, changes string) int64 {
	tb.Helper()
	code, body := e.do(tb, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"`+batch+`","changes":`+changes+`}`))
	if code != 200 {
		tb.Fatalf("push = %d %s", code, body)
	}
	var r struct{ Seq int64 }
	json.Unmarshal(body, &r)
	return r.Seq
}

// token logs a device of account in straight through the store.
func (e *env) token(tb testing.TB, account, device string) string {
	tb.Helper()
	tok, _, err := e.T.LoginDevice(context.Background(), account, device, device, "test")
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// dial opens a live connection; on refusal it returns the HTTP status and
// error code.
func dial(tb testing.TB, base, path, token string) (*websocket.Conn, int, string) {
	tb.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+path, h)
	if err != nil {
		if resp == nil {
			tb.Fatalf("dial %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		json.Unmarshal(b, &e)
		return nil, resp.StatusCode, e.Error
	}
	tb.Cleanup(func() { ws.Close() })
	return ws, 101, ""
}

type frame struct {
	Type        string           `json:"type"`
	Changes     []map[string]any `json:"changes"`
	Seq         int64            `json:"seq"`
	MutationIDs []string         `json:"mutation_ids"`
	MutationID  string           `json:"mutation_id"`
	Error       string           `json:"error"`
	Message     string           `json:"message"`
	Reason      string           `json:"reason"`
	History     string           `json:"history"`
}

// next reads the next frame, failing after d.
func next(tb testing.TB, ws *websocket.Conn, d time.Duration) frame {
	tb.Helper()
	ws.SetReadDeadline(time.Now().Add(d))
	_, b, err := ws.ReadMessage()
	if err != nil {
		tb.Fatalf("read frame: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		tb.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// until reads frames until one of type typ, returning the changes seen.
func until(tb testing.TB, ws *websocket.Conn, typ string) (frame, []map[string]any) {
	tb.Helper()
	var seen []map[string]any
	for {
		f := next(tb, ws, 3*time.Second)
		seen = append(seen, f.Changes...)
		if f.Type == typ {
			return f, seen
		}
	}
}

// closeCode reads until the connection closes and returns its close code.
func closeCode(tb testing.TB, ws *websocket.Conn, d time.Duration) (int, []frame) {
	tb.Helper()
	var frames []frame
	ws.SetReadDeadline(time.Now().Add(d))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, frames
			}
			tb.Fatalf("connection ended without a close frame: %v", err)
		}
		var f frame
		json.Unmarshal(b, &f)
		frames = append(frames, f)
	}
}

func TestStreamCatchUpThenLive(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	seq, _ := e.T.Seq(context.Background())
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "s1", "tablet"))
	f, seen := until(t, ws, "caught_up")
	if f.Seq != seq || int64(len(seen)) != seq {
		t.Fatalf("catch-up: %d changes, caught_up %d; want %d of each", len(seen), f.Seq, seq)
	}
	for i, c := range seen {
		if c["seq"] != float64(i+1) {
			t.Errorf("change %d has seq %v; want in order without gaps", i, c["seq"])
		}
	}
	start := time.Now()
	e.push(t, "live", `[{"entity":"sessions","op":"upsert","id":"ses2","fields":{"therapist_id":"m1","protocol":"neu","status":"planned"}}]`)
	f, live := until(t, ws, "caught_up")
	if len(live) != 1 || live[0]["id"] != "ses2" || f.Seq != seq+1 {
		t.Fatalf("live: %v, caught_up %d; want ses2 at seq %d", live, f.Seq, seq+1)
	}
	t.Logf("push → device: %v", time.Since(start))
	for _, c := range append(seen, live...) {
		if fields, _ := c["fields"].(map[string]any); fields != nil && fields["protocol"] != nil {
			t.Errorf("a secretary's stream carries a protocol: %v", c)
		}
	}
	// An admin's stream has the protocols.
	ws2, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "admin-phone"))
	_, all := until(t, ws2, "caught_up")
	found := false
	for _, c := range all {
		if f, _ := c["fields"].(map[string]any); f != nil && f["protocol"] == "Befund geheim" {
			found = true
		}
	}
	if !found {
		t.Errorf("an admin's stream lacks the protocol")
	}
}

func TestStreamRefusals(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	tok := e.token(t, "a1", "p1")
	for _, tt := range []struct {
		path, token string
		status      int
		code        string
	}{
		{"/v1/device/sync", "nope", 401, "unauthorized"},
		{"/v1/device/sync?cursor=-1", tok, 400, "bad_request"},
		{"/v1/device/sync?cursor=x", tok, 400, "bad_request"},
		{"/v1/practice/sync", "wrong.key", 401, "unauthorized"},
	} {
		if _, st, code := dial(t, e.URL, tt.path, tt.token); st != tt.status || code != tt.code {
			t.Errorf("dial %s = %d %s; want %d %s", tt.path, st, code, tt.status, tt.code)
		}
	}
	// A frame over the read limit ends the connection with 1009.
	big, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
	until(t, big, "caught_up")
	big.WriteMessage(websocket.TextMessage, []byte(`{"type":"push","mutations":[{"id":"x","entity":"profiles","op":"upsert","row_id":"p","fields":{"address":"`+strings.Repeat("x", 5<<20)+`"}}]}`))
	if code, _ := closeCode(t, big, 3*time.Second); code != websocket.CloseMessageTooBig {
		t.Errorf("oversize frame: close %d; want 1009", code)
	}
	// A cursor ahead of the server: resync.
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=999", tok)
	code, frames := closeCode(t, ws, 3*time.Second)
	if len(frames) != 1 || frames[0].Type != "resync" || code != websocket.CloseNormalClosure {
		t.Errorf("cursor ahead: frames %v, close %d; want resync then 1000", frames, code)
	}
}

func TestDeviceWrites(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	sec, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "s1", "tablet"))
	until(t, sec, "caught_up")
	adm, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a2", "admin-phone"))
	until(t, adm, "caught_up")
	send := func(ws *websocket.Conn, js string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(js)); err != nil {
			t.Fatal(err)
		}
	}
	send(sec, `{"type":"push","mutations":[
		{"id":"m-1","entity":"sessions","op":"upsert","row_id":"ses1","fields":{"protocol":"vom Empfang"}},
		{"id":"m-2","entity":"sessions","op":"upsert","row_id":"ses1","fields":{"status":"cancelled"}},
		{"id":"m-3","entity":"profiles","op":"upsert","row_id":"p1","fields":{"diagnose":"x"}},
		{"id":"m-4","entity":"transactions","op":"upsert","row_id":"ffff0138-2e19-b5ce-0b71-9e221c7d6533","fields":{"account_id":"m1","kind":"invoice","amount_cents":3800}}
	]}`)
	var acks []string
	rejects := map[string]string{}
	var streamed []map[string]any
	for len(acks)+len(rejects) < 4 {
		f := next(t, sec, 3*time.Second)
		switch f.Type {
		case "ack":
			acks = append(acks, f.MutationIDs...)
		case "reject":
			rejects[f.MutationID] = f.Error
			// A reject names the device's mutation, never an index of a
			// batch the device did not send.
			if strings.Contains(f.Message, "changes[") || !strings.Contains(f.Message, "mutation "+f.MutationID) {
				t.Errorf("reject of %s says %q; want it to name mutation %s", f.MutationID, f.Message, f.MutationID)
			}
		case "changes":
			streamed = append(streamed, f.Changes...)
		}
	}
	if strings.Join(acks, ",") != "m-2,m-4" || rejects["m-1"] != "forbidden" || rejects["m-3"] != "bad_request" {
		t.Fatalf("acks %v, rejects %v; want m-2 and m-4 acked, m-1 forbidden, m-3 bad_request", acks, rejects)
	}
	// The writes reach the other device, and the practice pull, with the
	// server-assigned reference.
	_, got := until(t, adm, "caught_up")
	for len(got) < 2 {
		_, more := until(t, adm, "caught_up")
		got = append(got, more...)
	}
	ref := ""
	for _, c := range got {
		if c["id"] == "ffff0138-2e19-b5ce-0b71-9e221c7d6533" {
			ref, _ = c["fields"].(map[string]any)["reference"].(string)
		}
	}
	if !strings.HasSuffix(ref, "-1-m1") {
		t.Errorf("the other device got %v; want the transaction with its reference", got)
	}
	p := e.pull(t, 0, 1000)
	last := p.Changes[len(p.Changes)-1]
	if last["id"] != "ffff0138-2e19-b5ce-0b71-9e221c7d6533" {
		t.Errorf("practice pull ends with %v; want the device's transaction", last)
	}
	// The same mutation again: acknowledged, applied once.
	seq := p.Seq
	send(sec, `{"type":"push","mutations":[{"id":"m-2","entity":"sessions","op":"upsert","row_id":"ses1","fields":{"status":"cancelled"}}]}`)
	for {
		f := next(t, sec, 3*time.Second)
		if f.Type == "ack" {
			if len(f.MutationIDs) != 1 || f.MutationIDs[0] != "m-2" {
				t.Errorf("repeated mutation ack = %+v", f)
			}
			break
		}
	}
	if got := e.pull(t, 0, 1000).Seq; got != seq {
		t.Errorf("seq after a repeated mutation = %d; want %d", got, seq)
	}
	// A malformed frame gets a reject and the connection goes on.
	send(sec, `{"type":"pull"}`)
	if f := next(t, sec, 3*time.Second); f.Type != "reject" || f.Error != "bad_request" {
		t.Errorf("malformed frame → %+v; want a bad_request reject", f)
	}
	send(sec, `{"type":"push","mutations":[{"id":"m-5","entity":"profiles","op":"upsert","row_id":"p1","fields":{"phone":"030"}}]}`)
	for {
		if f := next(t, sec, 3*time.Second); f.Type == "ack" {
			break
		}
	}
}

func TestRevocationClosesLiveConnections(t *testing.T) {
	rs := redistest.Start(t)
	data := t.TempDir()
	a := newLiveEnv(t, rs, data, syncd.Config{})
	b := newLiveEnv(t, rs, data, syncd.Config{}) // a second syncd on the same data and Redis
	st, key, _ := a.Store.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	a.Key, b.Key = key, key
	a.T, _ = a.Store.Tenant(context.Background(), st.ID)
	b.T, _ = b.Store.Tenant(context.Background(), st.ID)
	a.push(t, "seed", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"role":"secretary","app_enabled":true}}]`)
	tokA, tokB, tokC := a.token(t, "a1", "phone-a"), a.token(t, "a1", "phone-b"), a.token(t, "s1", "tablet")

	// A push through one syncd reaches a device on the other.
	onB, _, _ := dial(t, b.URL, "/v1/device/sync?cursor=0", tokB)
	until(t, onB, "caught_up")
	start := time.Now()
	a.push(t, "x", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`)
	if _, got := until(t, onB, "caught_up"); len(got) != 1 || got[0]["id"] != "pr1" {
		t.Fatalf("device on B got %v; want pr1", got)
	}
	t.Logf("push on A → device on B: %v", time.Since(start))

	// A revocation through A closes the socket on B with 4003, the wipe first.
	start = time.Now()
	if code, body := a.do(t, "POST", "/v1/practice/devices/phone-b/revoke", key, []byte(`{"wipe":true}`)); code != 200 {
		t.Fatalf("revoke = %d %s", code, body)
	}
	code, frames := closeCode(t, onB, time.Second)
	if code != 4003 || len(frames) == 0 || frames[len(frames)-1].Type != "wipe" {
		t.Errorf("revoked socket: close %d after %v; want the wipe frame, then 4003", code, frames)
	}
	t.Logf("revoke on A → 4003 on B: %v", time.Since(start))
	// Its next connection is told again to wipe; its other requests are
	// refused.
	if again, _, _ := dial(t, b.URL, "/v1/device/sync", tokB); again != nil {
		if code, frames := closeCode(t, again, time.Second); code != 4003 || len(frames) != 1 || frames[0].Type != "wipe" {
			t.Errorf("reconnect of the device revoked as lost: %v, close %d; want wipe then 4003", frames, code)
		}
	} else {
		t.Errorf("reconnect of the device revoked as lost was refused; want the wipe frame")
	}
	if code, body := b.do(t, "GET", "/v1/device/shard", tokB, nil); code != 403 || !strings.Contains(string(body), "device_revoked") {
		t.Errorf("shard download of the revoked device = %d %s; want 403 device_revoked", code, body)
	}

	// Disabling the account closes its other devices; re-enabling lets the
	// same token sync again. The secretary's tablet is not affected.
	onA, _, _ := dial(t, a.URL, "/v1/device/sync?cursor=0", tokA)
	until(t, onA, "caught_up")
	tablet, _, _ := dial(t, b.URL, "/v1/device/sync?cursor=0", tokC)
	until(t, tablet, "caught_up")
	b.push(t, "off", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"app_enabled":false}}]`)
	if code, _ := closeCode(t, onA, time.Second); code != 4003 {
		t.Errorf("disabled account's socket closed with %d; want 4003", code)
	}
	if _, status, c := dial(t, a.URL, "/v1/device/sync", tokA); status != 403 || c != "device_revoked" {
		t.Errorf("reconnect while disabled = %d %s; want 403 device_revoked", status, c)
	}
	if f, _ := until(t, tablet, "caught_up"); f.Type != "caught_up" {
		t.Errorf("the tablet lost its stream")
	}
	b.push(t, "on", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"app_enabled":true}}]`)
	again, status, _ := dial(t, a.URL, "/v1/device/sync?cursor=0", tokA)
	if status != 101 {
		t.Fatalf("reconnect after re-enabling = %d; want the stream", status)
	}
	until(t, again, "caught_up")
}

// TestSlowDeviceIsDropped: a device that stops reading is disconnected,
// while another device keeps getting changes promptly.
func TestSlowDeviceIsDropped(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{LiveWriteTimeout: 300 * time.Millisecond})
	slow, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "slow"))
	fast, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a2", "fast"))
	until(t, fast, "caught_up")
	big := strings.Repeat("x", 200<<10)
	var worst time.Duration
	for i := range 40 { // ~8 MB for the slow device, which never reads
		start := time.Now()
		e.push(t, fmt.Sprint("big-", i), fmt.Sprintf(`[{"entity":"profiles","op":"upsert","id":"big-%d","fields":{"address":"%s"}}]`, i, big))
		for {
			f, got := until(t, fast, "caught_up")
			if f.Seq > 0 && len(got) > 0 && got[len(got)-1]["id"] == fmt.Sprint("big-", i) {
				break
			}
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("worst push → fast device latency while the slow one stalls: %v", worst)
	if worst > 2*time.Second {
		t.Errorf("the fast device waited %v for a change", worst)
	}
	// The slow device was dropped: its connection ends.
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			continue // frames buffered before the server gave up
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("the slow device is still connected after 5s")
		}
		break
	}
}

func TestPracticeStreamAndShutdown(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	ws, st, _ := dial(t, e.URL, "/v1/practice/sync?cursor=0", e.Key)
	if st != 101 {
		t.Fatalf("practice sync = %d", st)
	}
	_, all := until(t, ws, "caught_up")
	protocol := false
	for _, c := range all {
		if f, _ := c["fields"].(map[string]any); f != nil && f["protocol"] != nil {
			protocol = true
		}
	}
	if !protocol {
		t.Errorf("the practice stream lacks fields")
	}
	// Another tenant's practice sees nothing of this one.
	_, key2, _ := e.Store.CreateTenant(context.Background(), store.NewTenant{Name: "Q", Licenses: []string{"sync"}})
	ws2, _, _ := dial(t, e.URL, "/v1/practice/sync?cursor=0", key2)
	if f, got := until(t, ws2, "caught_up"); len(got) != 0 || f.Seq != 0 {
		t.Errorf("the other tenant's stream: %v, seq %d; want nothing", got, f.Seq)
	}
	// Shutdown closes live connections with 1001.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go e.srv.Close(ctx)
	if code, _ := closeCode(t, ws, 3*time.Second); code != websocket.CloseGoingAway {
		t.Errorf("close on shutdown = %d; want 1001", code)
	}
}
