package syncd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// TestAccessEndsDuringHandshake: access that ends after a connection's
// access check and before it is registered (no revocation event finds it
// yet; a cursor at or past a disabling change skips it in the catch-up)
// still ends the connection before it sends anything, and not only at the
// next periodic re-read (a minute away here).
func TestAccessEndsDuringHandshake(t *testing.T) {
	for _, cause := range []string{"device revoked", "app disabled, cursor past it", "logout", "license withdrawn"} {
		t.Run(cause, func(t *testing.T) { handshakeRace(t, cause) })
	}
}

func handshakeRace(t *testing.T, cause string) {
	ctx := context.Background()
	rs := redistest.Start(t)
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	srv := New(Config{Store: st, Redis: rdb, AccessRecheck: time.Minute})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		srv.Close(c)
		hs.Close()
	})
	ts, key, err := st.CreateTenant(ctx, store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := st.Tenant(ctx, ts.ID)
	push := func(id, changes string) int64 {
		req, _ := http.NewRequest("POST", hs.URL+"/v1/practice/changes", bytes.NewReader([]byte(`{"batch_id":"`+id+`","changes":`+changes+`}`)))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Seq int64 }
		json.NewDecoder(resp.Body).Decode(&r)
		if resp.StatusCode != 200 {
			t.Fatalf("push %s = %d", id, resp.StatusCode)
		}
		return r.Seq
	}
	seq := push("seed", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"name":"Jonas","role":"member","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"m1","first_name":"Anna"}}
	]`)
	tok, _, err := tn.LoginDevice(ctx, "m1", "phone", "phone", "test")
	if err != nil {
		t.Fatal(err)
	}
	// Another device keeps the tenant's feed running.
	tok2, _, _ := tn.LoginDevice(ctx, "m1", "tablet", "tablet", "test")
	dialWS(t, hs.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", seq), tok2)

	var once sync.Once
	srv.upgrader.CheckOrigin = func(r *http.Request) bool {
		// Runs after the access check, before the registration.
		if strings.Contains(r.Header.Get("Authorization"), tok) {
			once.Do(func() {
				switch cause {
				case "device revoked":
					d, _ := tn.RevokeDevice(ctx, "phone", false, "practice", "")
					srv.publishRevocation(ctx, Revocation{Tenant: tn.ID(), AccountID: d.AccountID, DeviceID: d.ID})
				case "app disabled, cursor past it":
					push("disable", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"app_enabled":false}}]`)
				case "logout":
					tn.LogoutDevice(ctx, "phone")
					srv.publishRevocation(ctx, Revocation{Tenant: tn.ID(), DeviceID: "phone", TokenEnded: true})
				case "license withdrawn":
					tn.SetSettings(ctx, store.SettingsChange{Licenses: []string{"sync"}}, "operator", "")
					srv.publishRevocation(ctx, Revocation{Tenant: tn.ID()})
				}
				time.Sleep(200 * time.Millisecond) // the event reached every process
			})
		}
		return true
	}
	cursor := seq
	if cause == "app disabled, cursor past it" {
		cursor = seq + 1 // the seq the disable gets: the device names it
	}
	ws := dialWS(t, hs.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", cursor), tok)
	push("after", `[{"entity":"sessions","op":"upsert","id":"ses-after","fields":{"profile_id":"p1","therapist_id":"m1","protocol":"nach dem Ende"}}]`)
	ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != wire.CloseRevoked && ce.Code != wire.CloseTokenGone {
				t.Errorf("%s: the connection ended with %v; want 4003 or 4001 at once", cause, err)
			}
			return
		}
		t.Errorf("%s: sent after the access ended: %s", cause, b)
	}
}

func dialWS(t *testing.T, base, path, token string) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+path, h)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (%d)", path, err, code)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}
