package device

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// syncIdle syncs c until it is caught up with nothing left to send.
func syncIdle(tb testing.TB, c *Client) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Sync(ctx, SyncOptions{UntilIdle: true, RevokedRetry: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
}

// TestSyncSendsTheOutbox: the pending writes go out as push frames of at
// most MaxMutationsPerPush mutations, each as DESIGN §7 spells it (a
// delete without fields); the streamed changes and the acks that follow
// leave the device caught up with an empty outbox.
func TestSyncSendsTheOutbox(t *testing.T) {
	fs := newFakeServer(t)
	c := openClient(t, fs.URL, 5, startRows())
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	w2 := write(t, c, model.Sessions, model.OpDelete, "s1", nil)
	ids := []string{w1, w2}
	for i := range wire.MaxMutationsPerPush {
		ids = append(ids, write(t, c, model.Profiles, model.OpUpsert, fmt.Sprint("n", i), map[string]any{"first_name": "N"}))
	}
	fs.play(func(ws *websocket.Conn, cursor int64) {
		if cursor != 5 {
			t.Errorf("connected at cursor %d; want the shard's 5", cursor)
		}
		first, raw := readPush(t, ws)
		second, _ := readPush(t, ws)
		if len(first.Mutations) != wire.MaxMutationsPerPush || len(second.Mutations) != 2 {
			t.Errorf("pushes of %d and %d mutations; want %d and 2", len(first.Mutations), len(second.Mutations), wire.MaxMutationsPerPush)
		}
		for i, want := range []string{
			`{"id":"` + w1 + `","entity":"profiles","op":"upsert","row_id":"p1","fields":{"first_name":"Bea"}}`,
			`{"id":"` + w2 + `","entity":"sessions","op":"delete","row_id":"s1"}`,
		} {
			if i >= len(raw) || raw[i] != want {
				t.Errorf("mutation %d = %v; want %s", i, raw, want)
			}
		}
		for i, m := range append(first.Mutations, second.Mutations...) {
			if i >= len(ids) || m.ID != ids[i] {
				t.Errorf("mutation %d is %s; want the outbox's order", i, m.ID)
				break
			}
		}
		send(t, ws,
			wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{
				{Seq: 6, Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"last_name": "Meier"}},
				{Seq: 7, Entity: model.Sessions, Op: model.OpUpsert, ID: "s2", Fields: map[string]any{"profile_id": "p1", "status": "done"}},
			}},
			wire.Ack{Type: wire.TypeAck, MutationIDs: ids, Seq: 8},
			wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 8}, // idle from here
		)
	})
	if err := syncIdle(t, c); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if got := cursor(t, c); got != 8 {
		t.Errorf("cursor = %d; want 8", got)
	}
	if ps, b := outbox(t, c), bases(t, c); len(ps) != 0 || len(b) != 0 {
		t.Errorf("outbox %d writes, %d server states; want none once acknowledged", len(ps), len(b))
	}
	checkRows(t, c, map[string]map[string]any{
		"profiles/p1":  {"first_name": "Bea", "last_name": "Meier"},
		"sessions/s1":  nil,
		"sessions/s2":  {"status": "done"},
		"profiles/n42": {"first_name": "N"},
	})
}

// TestSyncResyncRebasesPendingWrites: on resync the device downloads the
// new shard, applies its unacknowledged writes on top of it, reconnects
// at the new shard's seq and sends them again.
func TestSyncResyncRebasesPendingWrites(t *testing.T) {
	fs := newFakeServer(t)
	c := openClient(t, fs.URL, 5, startRows())
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "030"})
	newer := rows{
		model.Profiles: {
			{"id": "p1", "owner_id": "m1", "first_name": "Anna", "last_name": "Neu"},
			{"id": "p2", "owner_id": "m1", "first_name": "Ben"},
		},
	}
	fs.setShard(9, newer)
	fs.play(
		func(ws *websocket.Conn, cursor int64) {
			readPush(t, ws) // not acknowledged
			send(t, ws, wire.Resync{Type: wire.TypeResync, Reason: "what the account sees shrank"})
			closeWith(ws, wire.CloseNormalClosure)
		},
		func(ws *websocket.Conn, cursor int64) {
			if cursor != 9 {
				t.Errorf("reconnected at cursor %d; want the new shard's 9", cursor)
			}
			p, _ := readPush(t, ws)
			if len(p.Mutations) != 1 || p.Mutations[0].ID != w1 {
				t.Errorf("push after the resync = %+v; want %s again", p, w1)
			}
			// Before the answer: the write is on top of the new shard.
			got, err := c.Query(context.Background(), `SELECT id, phone, last_name FROM profiles ORDER BY id`)
			if want := `[{"id":"p1","last_name":"Neu","phone":"030"},{"id":"p2","last_name":null,"phone":null}]`; err != nil || !equalJSON(t, got, json.RawMessage(want)) {
				t.Errorf("profiles after the resync = %v, %v; want %s", got, err, want)
			}
			if s1, err := c.Query(context.Background(), `SELECT id FROM sessions`); err != nil || len(s1) != 0 {
				t.Errorf("sessions after the resync = %v, %v; want none (the new shard has none)", s1, err)
			}
			send(t, ws, wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 9}, wire.Reject{Type: wire.TypeReject, MutationID: w1, Error: wire.CodeForbidden, Message: "no"})
		},
	)
	if err := syncIdle(t, c); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	// The reject puts back the new shard's row, not the old one.
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"phone": nil, "last_name": "Neu"}})
	if got := cursor(t, c); got != 9 {
		t.Errorf("cursor = %d; want 9", got)
	}
}

// TestSyncEnds: how a connection ends decides the device's state and what
// Sync returns: revoked (close 4003, or a refused upgrade) keeps the data
// read-only; a token that ended (close 4001, or 401) logs out; the wipe
// frame deletes the data; too slow (1013) or a server going away (1001)
// reconnect and carry on.
func TestSyncEnds(t *testing.T) {
	caughtUp := func(ws *websocket.Conn, cursor int64) {
		send(t, ws, wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: cursor})
	}
	closing := func(code int, frames ...any) script {
		return func(ws *websocket.Conn, cursor int64) {
			send(t, ws, frames...)
			closeWith(ws, code)
		}
	}
	for _, tt := range []struct {
		name      string
		refuse    []refusal
		scripts   []script
		wantState string
		wantErr   error
	}{
		{name: "close 4003", scripts: []script{closing(wire.CloseRevoked)}, wantState: StateRevoked, wantErr: ErrReadOnly},
		{name: "close 4001", scripts: []script{closing(wire.CloseTokenGone)}, wantState: StateLoggedOut, wantErr: ErrNotLoggedIn},
		{name: "wipe", scripts: []script{closing(wire.CloseRevoked, wire.Wipe{Type: wire.TypeWipe})}, wantState: StateWiped, wantErr: ErrWiped},
		{name: "refused as revoked", refuse: []refusal{{http.StatusForbidden, wire.CodeDeviceRevoked}}, wantState: StateRevoked, wantErr: ErrReadOnly},
		{name: "refused as unauthorized", refuse: []refusal{{http.StatusUnauthorized, wire.CodeUnauthorized}}, wantState: StateLoggedOut, wantErr: ErrNotLoggedIn},
		{name: "too slow", scripts: []script{closing(wire.CloseTryAgainLater), caughtUp}, wantState: StateActive},
		{name: "server going away", scripts: []script{closing(wire.CloseGoingAway), caughtUp}, wantState: StateActive},
		{name: "server busy", refuse: []refusal{{http.StatusTooManyRequests, wire.CodeTooManyAttempts}}, scripts: []script{caughtUp}, wantState: StateActive},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t)
			fs.refuse = tt.refuse
			fs.play(tt.scripts...)
			c := openClient(t, fs.URL, 5, startRows())
			err := syncIdle(t, c)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Sync = %v; want %v", err, tt.wantErr)
			}
			if st := c.State(); st.State != tt.wantState {
				t.Errorf("state = %s; want %s", st.State, tt.wantState)
			}
			if tt.wantState == StateRevoked {
				if got := row(t, c, model.Profiles, "p1"); got == nil {
					t.Errorf("a revoked device lost its data")
				}
			}
			fs.mu.Lock()
			left := len(fs.scripts) + len(fs.refuse)
			fs.mu.Unlock()
			if left != 0 {
				t.Errorf("%d connections the device did not make", left)
			}
		})
	}
}

// TestSyncSendsTheHistory: the device connects with the history id of its
// data (DESIGN §2): the shard's sync_meta.history, then the one of the
// last caught_up that carried one, kept with the cursor; with none known
// it sends none.
func TestSyncSendsTheHistory(t *testing.T) {
	caughtUp := func(seq int64, history string) script {
		return func(ws *websocket.Conn, cursor int64) {
			send(t, ws, wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: seq, History: history})
		}
	}
	goingAway := func(s script) script {
		return func(ws *websocket.Conn, cursor int64) {
			s(ws, cursor)
			closeWith(ws, wire.CloseGoingAway)
		}
	}
	for _, tt := range []struct {
		name        string
		meta        [][2]string // of the device's shard
		scripts     []script
		wantQueries []string
		wantHistory string
	}{
		{name: "none known", scripts: []script{caughtUp(5, "")}, wantQueries: []string{"cursor=5"}},
		{name: "the shard's", meta: [][2]string{{"history", "h1"}}, scripts: []script{caughtUp(5, "h1")},
			wantQueries: []string{"cursor=5&history=h1"}, wantHistory: "h1"},
		{name: "caught_up's, on the next connection", meta: [][2]string{{"history", "h1"}},
			scripts:     []script{goingAway(caughtUp(8, "h2")), caughtUp(8, "h2")},
			wantQueries: []string{"cursor=5&history=h1", "cursor=8&history=h2"}, wantHistory: "h2"},
		{name: "learnt from caught_up", scripts: []script{goingAway(caughtUp(6, "h1")), caughtUp(6, "h1")},
			wantQueries: []string{"cursor=5", "cursor=6&history=h1"}, wantHistory: "h1"},
		{name: "kept through a caught_up without", meta: [][2]string{{"history", "h1"}},
			scripts:     []script{goingAway(caughtUp(7, "")), caughtUp(7, "")},
			wantQueries: []string{"cursor=5&history=h1", "cursor=7&history=h1"}, wantHistory: "h1"},
		{name: "escaped", meta: [][2]string{{"history", "a&b=c"}}, scripts: []script{caughtUp(5, "")},
			wantQueries: []string{"cursor=5&history=a%26b%3Dc"}, wantHistory: "a&b=c"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t)
			c := openClient(t, fs.URL, 5, startRows(), tt.meta...)
			for _, s := range tt.scripts {
				fs.play(s)
				if err := syncIdle(t, c); err != nil {
					t.Fatalf("Sync = %v", err)
				}
			}
			if got := fs.syncCalls(); !equalJSON(t, got, tt.wantQueries) {
				t.Errorf("connected with %q; want %q", got, tt.wantQueries)
			}
			if got := history(t, c); got != tt.wantHistory {
				t.Errorf("history kept = %q; want %q", got, tt.wantHistory)
			}
		})
	}
}

// TestSyncResyncOnANewHistory: a server whose history changed (a restore
// from a backup, an erasure) answers the old history with resync; the
// device downloads the fresh shard, of the new history and maybe at a
// lower seq, applies its unacknowledged writes on top of it, reconnects
// with the new shard's cursor and history, and sends them again. A write
// the new history refuses is reported as rejected and its row goes back
// to the new shard's state.
func TestSyncResyncOnANewHistory(t *testing.T) {
	fs := newFakeServer(t)
	c := openClient(t, fs.URL, 5, startRows(), [2]string{"history", "h1"})
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "030"})
	w2 := write(t, c, model.Sessions, model.OpUpsert, "s1", map[string]any{"status": "done"})
	fs.setShard(3, rows{model.Profiles: {{"id": "p1", "owner_id": "m1", "first_name": "Anna", "last_name": "Alt"}}}, [2]string{"history", "h2"})
	fs.play(
		func(ws *websocket.Conn, cursor int64) {
			readPush(t, ws) // not acknowledged
			send(t, ws, wire.Resync{Type: wire.TypeResync, Reason: "another history"})
			closeWith(ws, wire.CloseNormalClosure)
		},
		func(ws *websocket.Conn, cursor int64) {
			p, _ := readPush(t, ws)
			if len(p.Mutations) != 2 || p.Mutations[0].ID != w1 || p.Mutations[1].ID != w2 {
				t.Errorf("push after the resync = %+v; want %s and %s again", p, w1, w2)
			}
			got, err := c.Query(context.Background(), `SELECT id, phone, last_name FROM profiles`)
			if want := `[{"id":"p1","last_name":"Alt","phone":"030"}]`; err != nil || !equalJSON(t, got, json.RawMessage(want)) {
				t.Errorf("profiles after the resync = %v, %v; want %s", got, err, want)
			}
			got, err = c.Query(context.Background(), `SELECT id, status, price_cents FROM sessions`)
			if want := `[{"id":"s1","price_cents":null,"status":"done"}]`; err != nil || !equalJSON(t, got, json.RawMessage(want)) {
				t.Errorf("sessions after the resync = %v, %v; want only the pending write %s", got, err, want)
			}
			send(t, ws,
				wire.Ack{Type: wire.TypeAck, MutationIDs: []string{w1}, Seq: 4},
				wire.Reject{Type: wire.TypeReject, MutationID: w2, Error: wire.CodeNotFound, Message: "no such session"},
				wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 4, History: "h2"},
			)
		},
	)
	if err := syncIdle(t, c); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if got, want := fs.syncCalls(), []string{"cursor=5&history=h1", "cursor=3&history=h2"}; !equalJSON(t, got, want) {
		t.Errorf("connected with %q; want %q", got, want)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"phone": "030"}, "sessions/s1": nil})
	ps := outbox(t, c)
	if len(ps) != 1 || ps[0].ID != w2 || !ps[0].Rejected || ps[0].Error != wire.CodeNotFound {
		t.Errorf("outbox = %+v; want only %s, rejected as not_found", ps, w2)
	}
	if got, h := cursor(t, c), history(t, c); got != 4 || h != "h2" {
		t.Errorf("cursor %d, history %q; want 4 of h2", got, h)
	}
}

// TestSyncErasedRejectDropsWrite: a write rejected `erased` leaves the
// outbox with its base snapshot and the row's conflict copies; its row
// goes back to the server state, and no byte of it stays in outbox.db.
func TestSyncErasedRejectDropsWrite(t *testing.T) {
	fs := newFakeServer(t)
	c := openClient(t, fs.URL, 5, startRows(), [2]string{"history", "h1"})
	w0 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "Erased-Conflict-Copy"})
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "Erased-Offline-Phone"})
	fs.play(func(ws *websocket.Conn, cursor int64) {
		readPush(t, ws)
		send(t, ws,
			wire.Reject{Type: wire.TypeReject, MutationID: w0, Error: wire.CodeConflict, Message: "changed meanwhile"},
			wire.Reject{Type: wire.TypeReject, MutationID: w1, Error: wire.CodeErased, Message: "p1 was erased"},
			wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 5, History: "h1"},
		)
	})
	if err := syncIdle(t, c); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if ps := outbox(t, c); len(ps) != 0 {
		t.Errorf("outbox = %+v; want the erased write and its conflict copy gone", ps)
	}
	if bs := bases(t, c); len(bs) != 0 {
		t.Errorf("bases = %v; want none", bs)
	}
	if got := row(t, c, model.Profiles, "p1"); got == nil || got["phone"] != nil {
		t.Errorf("p1 = %v; want its server state", got)
	}
	for _, v := range []string{"Erased-Conflict-Copy", "Erased-Offline-Phone"} {
		for _, f := range []string{"outbox.db", "outbox.db-wal"} {
			if b, _ := os.ReadFile(c.path(f)); bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %q", f, v)
			}
		}
	}
}

// TestSyncNewHistoryDropsGoneWrites: on a shard of a new history, a
// rejected write of a row the shard does not hold goes at once, and a
// pending one goes when the new history rejects it forbidden.
func TestSyncNewHistoryDropsGoneWrites(t *testing.T) {
	fs := newFakeServer(t)
	c := openClient(t, fs.URL, 5, startRows(), [2]string{"history", "h1"})
	w0 := write(t, c, model.Sessions, model.OpUpsert, "s1", map[string]any{"protocol": "Gone-Rejected"})
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "Gone-Pending"})
	fs.setShard(3, rows{}, [2]string{"history", "h2"})
	fs.play(
		func(ws *websocket.Conn, cursor int64) {
			readPush(t, ws)
			send(t, ws, wire.Reject{Type: wire.TypeReject, MutationID: w0, Error: wire.CodeForbidden, Message: "no"})
			send(t, ws, wire.Resync{Type: wire.TypeResync, Reason: "another history"})
			closeWith(ws, wire.CloseNormalClosure)
		},
		func(ws *websocket.Conn, cursor int64) {
			if p, _ := readPush(t, ws); len(p.Mutations) != 1 || p.Mutations[0].ID != w1 {
				t.Errorf("push after the resync = %+v; want only %s", p, w1)
			}
			send(t, ws,
				wire.Reject{Type: wire.TypeReject, MutationID: w1, Error: wire.CodeForbidden, Message: "not a row this account may write"},
				wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 3, History: "h2"},
			)
		},
	)
	if err := syncIdle(t, c); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if ps := outbox(t, c); len(ps) != 0 {
		t.Errorf("outbox = %+v; want the writes of the gone rows dropped", ps)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": nil, "sessions/s1": nil})
	for _, v := range []string{"Gone-Rejected", "Gone-Pending"} {
		for _, f := range []string{"outbox.db", "outbox.db-wal", "data.db", "data.db-wal"} {
			if b, _ := os.ReadFile(c.path(f)); bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %q", f, v)
			}
		}
	}
}
