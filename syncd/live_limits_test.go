package syncd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/syncd"
	"github.com/therasync/therasync/wire"
)

// TestManyRejectsDuringCatchUp: a push of 200 refused mutations while the
// device is still catching up gets 200 rejects and keeps the connection:
// control frames are never a reason to drop a device as too slow.
func TestManyRejectsDuringCatchUp(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	var b strings.Builder
	b.WriteString("[")
	for i := range 4000 { // a long catch-up: 8 MB in eight batches
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"entity":"practices","op":"upsert","id":"pr%d","fields":{"name":"Praxis %d %s"}}`, i, i, strings.Repeat("x", 2000))
	}
	b.WriteString("]")
	e.push(t, "many", b.String())
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", "phone"))
	var ms []wire.Mutation
	for i := range 200 { // a member writes no course: every one is refused
		ms = append(ms, wire.Mutation{ID: fmt.Sprint("bad-", i), Entity: "courses", Op: "upsert", RowID: fmt.Sprint("c", i), Fields: map[string]json.RawMessage{"title": json.RawMessage(`"x"`)}})
	}
	push, _ := json.Marshal(wire.Push{Type: wire.TypePush, Mutations: ms})
	if err := ws.WriteMessage(websocket.TextMessage, push); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the device reads nothing for a while: the catch-up stalls on a full socket
	rejects, caughtUp := 0, false
	for rejects < 200 || !caughtUp {
		f := next(t, ws, 5*time.Second)
		switch f.Type {
		case "reject":
			rejects++
			if f.Error != "forbidden" {
				t.Fatalf("reject %+v; want forbidden", f)
			}
		case "caught_up":
			caughtUp = true
		}
	}
}

// TestSocketLimits: a device holds at most MaxSocketsPerDevice live
// connections (a new one replaces the oldest), an account at most
// MaxSocketsPerAccount (more are refused with 429), and a device opens
// them at most UpgradesPerMinute (after a burst).
func TestSocketLimits(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{MaxSocketsPerDevice: 2, MaxSocketsPerAccount: 3, UpgradesPerMinute: 1})
	tok := e.token(t, "m1", "phone")
	first, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
	until(t, first, "caught_up")
	second, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
	until(t, second, "caught_up")
	third, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
	until(t, third, "caught_up")
	if code, _ := closeCode(t, first, 2*time.Second); code != websocket.ClosePolicyViolation {
		t.Errorf("the oldest of three connections of one device closed with %d; want %d", code, websocket.ClosePolicyViolation)
	}
	tablet := e.token(t, "m1", "tablet")
	if ws, st, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tablet); st != 101 {
		t.Fatalf("a third connection of the account = %d; want 101", st)
	} else {
		until(t, ws, "caught_up")
	}
	if _, st, code := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", "laptop")); st != 429 || code != "too_many_attempts" {
		t.Errorf("a fourth connection of the account = %d %s; want 429 too_many_attempts", st, code)
	}
	if ws, st, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "admin")); st != 101 {
		t.Errorf("another account's connection = %d; want 101", st)
	} else {
		ws.Close()
	}
	// The burst of 10 upgrades of one device, then one a minute.
	n := 3
	for ; n < 20; n++ {
		ws, st, code := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
		if st == 429 {
			if code != "too_many_attempts" {
				t.Errorf("refused upgrade: %d %s", st, code)
			}
			break
		}
		ws.Close()
	}
	if n != 10 {
		t.Errorf("the device opened %d connections before 429; want a burst of 10", n)
	}
}

// TestAccessReadBack: a revocation whose event never came (here: made
// straight in the store) still closes the device's socket, on the feed's
// next re-read of the tenant's access.
func TestAccessReadBack(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{AccessRecheck: 100 * time.Millisecond})
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(device string)
		code int
	}{
		{"revoked", func(d string) { e.T.RevokeDevice(ctx, d, false, "operator", "") }, 4003},
		{"logged out", func(d string) { e.T.LogoutDevice(ctx, d) }, 4001},
		{"token replaced", func(d string) { e.token(t, "m1", d) }, 4001},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", c.name))
			until(t, ws, "caught_up")
			start := time.Now()
			c.end(c.name)
			if code, _ := closeCode(t, ws, 3*time.Second); code != c.code {
				t.Errorf("close %d; want %d", code, c.code)
			}
			t.Logf("closed %v after the store's change", time.Since(start))
		})
	}
	t.Run("practice key replaced", func(t *testing.T) {
		ws, _, _ := dial(t, e.URL, "/v1/practice/sync?cursor=0", e.Key)
		until(t, ws, "caught_up")
		if _, err := e.T.RotateKey(ctx); err != nil {
			t.Fatal(err)
		}
		if code, _ := closeCode(t, ws, 3*time.Second); code != 4001 {
			t.Errorf("practice socket closed with %d; want 4001", code)
		}
	})
}
