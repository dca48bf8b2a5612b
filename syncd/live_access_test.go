package syncd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/syncd"
	"github.com/therasync/therasync/wire"
)

// TestAccessEndsBeforeLaterChanges: a device revoked, logged out or whose
// token was replaced (straight in the store: no event reaches this syncd,
// and its re-read is far off) gets none of the changes committed after
// that, because the stream reads the access epoch in the snapshot it reads
// the changes from, and checks its connections' access first.
func TestAccessEndsBeforeLaterChanges(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{AccessRecheck: time.Minute})
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(device string)
		code int
	}{
		{"revoked", func(d string) { e.T.RevokeDevice(ctx, d, false, "operator", "") }, 4003},
		{"revoked with wipe", func(d string) { e.T.RevokeDevice(ctx, d, true, "operator", "") }, 4003},
		{"logged out", func(d string) { e.T.LogoutDevice(ctx, d) }, 4001},
		{"token replaced", func(d string) { e.token(t, "m1", d) }, 4001},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			device := fmt.Sprint("phone-", i)
			ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", device))
			until(t, ws, "caught_up")
			c.end(device)
			e.push(t, fmt.Sprint("after-", i), `[{"entity":"sessions","op":"upsert","id":"ses1","fields":{"protocol":"nach dem Ende"}}]`)
			start := time.Now()
			code, frames := closeCode(t, ws, 3*time.Second)
			if code != c.code {
				t.Errorf("close %d; want %d", code, c.code)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("closed after %v; want at once", d)
			}
			for _, f := range frames {
				if f.Type != "wipe" {
					t.Errorf("sent after the end of access: %+v", f)
				}
			}
		})
	}
}

// TestRejectsDuringLongCatchUp: a device that reads steadily but slowly
// while a long catch-up runs, and pushes three frames of refused mutations
// meanwhile (the device library sends all pending writes at connect), gets
// every reject and is not dropped.
func TestRejectsDuringLongCatchUp(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{LiveWriteTimeout: 300 * time.Millisecond})
	var b strings.Builder
	b.WriteString("[")
	for i := range 6000 { // twelve batches of 1 MB
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"entity":"practices","op":"upsert","id":"pr%d","fields":{"name":"Praxis %d %s"}}`, i, i, strings.Repeat("x", 2000))
	}
	b.WriteString("]")
	e.push(t, "many", b.String())
	// A phone's small receive window: the catch-up waits on the socket.
	dialer := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(16 << 10)
		}
		return c, err
	}}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(t, "m1", "phone"))
	ws, _, err := dialer.Dial("ws"+strings.TrimPrefix(e.URL, "http")+"/v1/device/sync?cursor=0", h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for p := range 3 {
		var ms []wire.Mutation
		for i := range 500 {
			ms = append(ms, wire.Mutation{ID: fmt.Sprint("bad-", p, "-", i), Entity: "courses", Op: "upsert", RowID: "c", Fields: map[string]json.RawMessage{"title": json.RawMessage(`"x"`)}})
		}
		push, _ := json.Marshal(wire.Push{Type: wire.TypePush, Mutations: ms})
		if err := ws.WriteMessage(websocket.TextMessage, push); err != nil {
			t.Fatal(err)
		}
	}
	rejects := 0
	for rejects < 1500 {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				t.Fatalf("dropped with %d %q after %d rejects, while reading steadily", ce.Code, ce.Text, rejects)
			}
			t.Fatal(err)
		}
		var f struct{ Type string }
		json.Unmarshal(data, &f)
		switch f.Type {
		case "reject":
			rejects++
		case "changes":
			time.Sleep(100 * time.Millisecond) // a slow phone
		}
	}
}

// TestNewDevicesStayWhileAccessIsReread: devices that log in and connect
// while the tenant's access is re-read all the time keep their sockets:
// a re-read that began before a device logged in must not take it for an
// unknown device.
func TestNewDevicesStayWhileAccessIsReread(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{AccessRecheck: 100 * time.Millisecond, MaxSocketsPerAccount: 1000})
	// Many devices (not connected) make each re-read take a while.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				e.token(t, "m1", fmt.Sprint("idle-", w, "-", i))
			}
		}()
	}
	wg.Wait()
	// Another device keeps the feed (and its guard) running throughout.
	keep, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "keeper"))
	until(t, keep, "caught_up")
	var wss []*websocket.Conn
	for i := range 150 {
		ws, st, code := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", fmt.Sprint("new-", i)))
		if ws == nil {
			t.Fatalf("device %d refused: %d %s", i, st, code)
		}
		wss = append(wss, ws)
	}
	for _, ws := range wss {
		until(t, ws, "caught_up")
	}
	time.Sleep(300 * time.Millisecond) // a few more re-reads
	for i, ws := range wss {
		ws.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			t.Errorf("device %d was closed with %d %q", i, ce.Code, ce.Text)
		}
	}
}
