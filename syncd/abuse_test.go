package syncd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
	"github.com/therasync/therasync/wire"
)

func countAudit(tb testing.TB, tn *store.Tenant, action string) int {
	tb.Helper()
	n := 0
	var since int64
	for {
		es, err := tn.AuditLog(context.Background(), since, 1000)
		if err != nil {
			tb.Fatal(err)
		}
		if len(es) == 0 {
			return n
		}
		for _, e := range es {
			if e.Action == action {
				n++
			}
			since = e.ID
		}
	}
}

// TestFailedLoginAuditBounded: failed logins of an email that holds a live
// code, with a device id made up for each and past the account's lock
// (429), write a bounded number of audit rows: an unauthenticated client
// cannot grow the append-only audit table at will.
func TestFailedLoginAuditBounded(t *testing.T) {
	e := newOpenEnv(t, syncd.Config{})
	if st, b := e.do(t, "POST", "/v1/practice/accounts/m1/access-code", e.Key, nil); st != 200 {
		t.Fatalf("send code = %d %s", st, b)
	}
	const n = 1500
	statuses := map[int]int{}
	for i := range n {
		body := fmt.Sprintf(`{"email":"j@x.de","code":"0000000","device_id":"dev-%d"}`, i)
		st, _ := e.do(t, "POST", "/v1/device/login", "", []byte(body))
		statuses[st]++
	}
	e.close(t) // flushes the audit writer
	got := countAudit(t, e.T, "login_failed")
	t.Logf("answers %v; login_failed rows %d", statuses, got)
	if got > 200 {
		t.Errorf("%d failed logins (most refused with 429 as locked) wrote %d durable audit rows; want them bounded per account/address", n, got)
	}
}

// TestRejectedWritesAuditBounded: a device sending frame after frame of
// refused mutations buys no audit row per mutation.
func TestRejectedWritesAuditBounded(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m1", "phone"))
	until(t, ws, "caught_up")
	const frames = 10
	for f := range frames {
		var ms []wire.Mutation
		for i := range 500 {
			ms = append(ms, wire.Mutation{ID: fmt.Sprint("bad-", f, "-", i), Entity: "courses", Op: "upsert", RowID: "c1", Fields: map[string]json.RawMessage{"title": json.RawMessage(`"x"`)}})
		}
		push, _ := json.Marshal(wire.Push{Type: wire.TypePush, Mutations: ms})
		if err := ws.WriteMessage(websocket.TextMessage, push); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 500; {
			if fr := next(t, ws, 10*time.Second); fr.Type == "reject" {
				got++
			}
		}
	}
	got := countAudit(t, e.T, "write_rejected")
	t.Logf("write_rejected rows: %d", got)
	if got >= frames*500 {
		t.Errorf("%d refused mutations from one device wrote %d durable audit rows; want coalesced/rate-limited", frames*500, got)
	}
}

// TestSocketCapsUnderStuckEviction: the per-device and per-account caps
// hold while the device's oldest socket is stuck closing (it stopped
// reading during a catch-up): newer sockets past the cap are closed too.
func TestSocketCapsUnderStuckEviction(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{MaxSocketsPerDevice: 2, MaxSocketsPerAccount: 3, UpgradesPerMinute: 1000})
	// A log big enough that a catch-up from 0 fills the socket buffers.
	var b bytes.Buffer
	b.WriteString("[")
	for i := range 3000 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"entity":"practices","op":"upsert","id":"pr%d","fields":{"name":"%0500d"}}`, i, i)
	}
	b.WriteString("]")
	e.push(t, "big", b.String())
	head := e.seq(t)
	tok := e.token(t, "m1", "phone")
	// The oldest socket: catch-up from 0, never read.
	stuck, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", tok)
	defer stuck.Close()
	time.Sleep(300 * time.Millisecond)
	var open []*websocket.Conn
	for i := range 8 {
		ws, st, code := dial(t, e.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", head), tok)
		if ws == nil {
			t.Logf("upgrade %d refused: %d %s", i, st, code)
			continue
		}
		open = append(open, ws)
	}
	// Every socket that is still open after a while and got caught_up is live.
	live := 0
	for _, ws := range open {
		ws.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				break
			}
			var f struct{ Type string }
			json.Unmarshal(data, &f)
			if f.Type == "caught_up" {
				live++
				break
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	still := 0
	for _, ws := range open {
		ws.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err := ws.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); ok {
			t.Logf("closed: %d %s", ce.Code, ce.Text)
			continue
		}
		still++
	}
	t.Logf("%d sockets caught up, %d still open", live, still)
	if still > 2 {
		t.Errorf("one device holds %d live sockets; MaxSocketsPerDevice 2, MaxSocketsPerAccount 3", still)
	}
	for _, ws := range open {
		ws.Close()
	}
}

// TestBackupStepUpUnderRoleFlips: the step-up of a full backup holds while
// the practice key flips an account between secretary and admin during
// "backup?as=s1" without X-TOTP: the role of the build's own snapshot
// decides, never the whole tenant (session protocols included) goes out.
func TestBackupStepUpUnderRoleFlips(t *testing.T) {
	e := newStepUpEnv(t, 0)
	e.enrol(t, "a1", "")
	if st, code, body, _ := e.stepUp(t, "GET", "/v1/practice/backup?as=a1", ""); st != 403 || code != "totp_required" {
		t.Fatalf("admin backup without code = %d %s", st, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			role := []string{model.RoleAdmin, model.RoleSecretary}[i%2]
			e.T.Apply(ctx, store.Batch{ID: fmt.Sprint("flip-", i), Origin: store.OriginPractice, Changes: []model.Change{
				{Entity: model.Accounts, Op: model.OpUpsert, ID: "s1", Fields: map[string]any{"role": role}}}})
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(3 * time.Second) // the code before the fix gave it away within a few tries
	tries := 0
	for time.Now().Before(deadline) {
		tries++
		req, _ := http.NewRequest("GET", e.URL+"/v1/practice/backup?as=s1", nil)
		req.Header.Set("Authorization", "Bearer "+e.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && bytes.Contains(body, []byte("Befund geheim")) {
			t.Errorf("after %d tries: a full-tenant backup (session protocol included) without X-TOTP", tries)
			return
		}
	}
	t.Logf("no hit in %d tries", tries)
}

// TestLockoutTellsNothingOfEmails: an unknown email and a wrong code answer
// the same (DESIGN §5), also past the account's limit of wrong codes.
func TestLockoutTellsNothingOfEmails(t *testing.T) {
	e := newOpenEnv(t, syncd.Config{})
	if st, b := e.do(t, "POST", "/v1/practice/accounts/m1/access-code", e.Key, nil); st != 200 {
		t.Fatalf("send code = %d %s", st, b)
	}
	last := func(email string) int {
		st := 0
		for range 22 {
			st, _ = e.do(t, "POST", "/v1/device/login", "", []byte(fmt.Sprintf(`{"email":%q,"code":"0000000","device_id":"d"}`, email)))
		}
		return st
	}
	known, unknown := last("j@x.de"), last("nobody@x.de")
	if known != unknown {
		t.Errorf("after 22 wrong codes: known email %d, unknown email %d; want the same answer", known, unknown)
	}
}
