package device

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// offline is a server no test reaches: these tests drive the client's
// frame handling directly.
const offline = "http://127.0.0.1:1"

// startRows is the shard most tests start from, at seq 5.
func startRows() rows {
	return rows{
		model.Profiles: {{"id": "p1", "owner_id": "m1", "first_name": "Anna", "last_name": "Alt"}},
		model.Sessions: {{"id": "s1", "profile_id": "p1", "therapist_id": "m1", "price_cents": float64(3800), "status": "planned"}},
	}
}

// TestDecodeFrame: every server frame decodes into its wire type; a type
// the library does not know is skipped; a frame that is not JSON, or not
// of its type's shape, is an error.
func TestDecodeFrame(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    any
		wantErr bool
	}{
		{`{"type":"changes","changes":[{"seq":6,"entity":"profiles","op":"delete","id":"p1"}]}`,
			&wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{{Seq: 6, Entity: "profiles", Op: model.OpDelete, ID: "p1"}}}, false},
		{`{"type":"caught_up","seq":7}`, &wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 7}, false},
		{`{"type":"ack","mutation_ids":["a","b"],"seq":8}`, &wire.Ack{Type: wire.TypeAck, MutationIDs: []string{"a", "b"}, Seq: 8}, false},
		{`{"type":"reject","mutation_id":"a","error":"forbidden","message":"no"}`, &wire.Reject{Type: wire.TypeReject, MutationID: "a", Error: "forbidden", Message: "no"}, false},
		{`{"type":"resync","reason":"r"}`, &wire.Resync{Type: wire.TypeResync, Reason: "r"}, false},
		{`{"type":"wipe"}`, &wire.Wipe{Type: wire.TypeWipe}, false},
		{`{"type":"hello","seq":"not a number"}`, nil, false},
		{`not json`, nil, true},
		{`{"type":"caught_up","seq":"7"}`, nil, true},
		{`{"type":"changes","changes":{}}`, nil, true},
	} {
		got, err := decodeFrame([]byte(tt.in))
		if (err != nil) != tt.wantErr || !equalJSON(t, got, tt.want) {
			t.Errorf("decodeFrame(%s) = %#v, %v; want %#v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestStreamedFramesApplyWithTheirCursor: a changes frame is applied with
// its last seq as the cursor in one local transaction (a frame that fails
// leaves rows and cursor as they were); caught_up moves the cursor, and
// keeps the history id it carries with it.
func TestStreamedFramesApplyWithTheirCursor(t *testing.T) {
	for _, tt := range []struct {
		name        string
		frames      []any
		wantErr     bool
		wantCursor  int64
		wantHistory string
		want        map[string]map[string]any // entity/id → columns it has; nil: no row
	}{
		{
			name: "changes",
			frames: []any{&wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{
				{Seq: 6, Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"last_name": "Neu"}},
				{Seq: 7, Entity: model.Sessions, Op: model.OpDelete, ID: "s1"},
				{Seq: 8, Entity: model.Sessions, Op: model.OpUpsert, ID: "s2", Fields: map[string]any{"profile_id": "p1", "price_cents": float64(4000), "status": "done"}},
				{Seq: 9, Entity: model.Accounts, Op: model.OpUpsert, ID: "m1", Fields: map[string]any{"app_enabled": true, "practice_ids": []any{"x", "y"}}},
			}}},
			wantCursor: 9,
			want: map[string]map[string]any{
				"profiles/p1": {"first_name": "Anna", "last_name": "Neu"},
				"sessions/s1": nil,
				"sessions/s2": {"profile_id": "p1", "price_cents": int64(4000), "status": "done"},
				"accounts/m1": {"app_enabled": int64(1), "practice_ids": `["x","y"]`},
			},
		},
		{
			name:       "caught_up",
			frames:     []any{&wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 12}},
			wantCursor: 12,
			want:       map[string]map[string]any{"profiles/p1": {"last_name": "Alt"}, "sessions/s1": {"status": "planned"}},
		},
		{
			name:        "caught_up with the history",
			frames:      []any{&wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 12, History: "h2"}},
			wantCursor:  12,
			wantHistory: "h2",
		},
		{
			name: "caught_up without a history keeps the one known",
			frames: []any{
				&wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 12, History: "h2"},
				&wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 13},
			},
			wantCursor:  13,
			wantHistory: "h2",
		},
		{
			name:       "an empty changes frame",
			frames:     []any{&wire.Changes{Type: wire.TypeChanges}},
			wantCursor: 5,
		},
		{
			name: "a frame that fails is applied not at all",
			frames: []any{&wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{
				{Seq: 6, Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"last_name": "Neu"}},
				{Seq: 7, Entity: model.Sessions, Op: model.OpDelete, ID: "s1"},
				{Seq: 8, Entity: "no_such_entity", Op: model.OpDelete, ID: "x"},
			}}},
			wantErr:    true,
			wantCursor: 5,
			want:       map[string]map[string]any{"profiles/p1": {"last_name": "Alt"}, "sessions/s1": {"status": "planned"}},
		},
		{
			name:       "a frame of a type the library does not know",
			frames:     []any{nil},
			wantCursor: 5,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := openClient(t, offline, 5, startRows())
			var err error
			for _, f := range tt.frames {
				err = errors.Join(err, c.handleFrame(context.Background(), f))
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("handleFrame = %v; want an error: %v", err, tt.wantErr)
			}
			if got := cursor(t, c); got != tt.wantCursor {
				t.Errorf("cursor = %d; want %d", got, tt.wantCursor)
			}
			if got := history(t, c); got != tt.wantHistory {
				t.Errorf("history = %q; want %q", got, tt.wantHistory)
			}
			checkRows(t, c, tt.want)
		})
	}
}

// TestWriteKeepsTheOutbox: a write is applied locally at once and kept in
// the outbox, with the server state of its row, until acknowledged; an
// invalid write changes nothing; a revoked or wiped device writes nothing.
func TestWriteKeepsTheOutbox(t *testing.T) {
	for _, tt := range []struct {
		name    string
		change  model.Change
		state   string
		wantErr error // matched with errors.Is; errAny for any error
	}{
		{name: "upsert", change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "Bea"}}},
		{name: "delete", change: model.Change{Entity: model.Sessions, Op: model.OpDelete, ID: "s1"}},
		{name: "create", change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p9", Fields: map[string]any{"first_name": "Neu"}}},
		{name: "unknown field", change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"shoe_size": "42"}}, wantErr: model.ErrInvalid},
		{name: "fields that are no JSON", change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": make(chan int)}}, wantErr: errAny},
		{name: "revoked", state: StateRevoked, change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "Bea"}}, wantErr: ErrReadOnly},
		{name: "wiped", state: StateWiped, change: model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "Bea"}}, wantErr: ErrWiped},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := openClient(t, offline, 5, startRows())
			if tt.state != "" {
				c.setState(tt.state)
			}
			before := row(t, c, tt.change.Entity, tt.change.ID)
			id, err := c.Write(context.Background(), tt.change)
			if tt.wantErr != nil {
				if err == nil || tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Write = %q, %v; want %v", id, err, tt.wantErr)
				}
				if ps := outbox(t, c); len(ps) != 0 {
					t.Errorf("outbox after a refused write = %+v", ps)
				}
				if got := row(t, c, tt.change.Entity, tt.change.ID); !equalJSON(t, got, before) {
					t.Errorf("row after a refused write = %v; want %v", got, before)
				}
				return
			}
			if err != nil || id == "" {
				t.Fatalf("Write = %q, %v", id, err)
			}
			want := Pending{ID: id, Entity: tt.change.Entity, Op: tt.change.Op, RowID: tt.change.ID, Fields: tt.change.Fields}
			if ps := outbox(t, c); len(ps) != 1 || !equalJSON(t, ps[0], want) {
				t.Errorf("outbox = %+v; want [%+v]", ps, want)
			}
			if got := bases(t, c); len(got) != 1 || got[0] != tt.change.Entity+"/"+tt.change.ID {
				t.Errorf("server states kept = %v; want the written row's", got)
			}
			got := row(t, c, tt.change.Entity, tt.change.ID)
			if tt.change.Op == model.OpDelete {
				if got != nil {
					t.Errorf("deleted row still there: %v", got)
				}
				return
			}
			for k, v := range tt.change.Fields {
				if got[k] != v {
					t.Errorf("local %s = %v; want %v at once", k, got[k], v)
				}
			}
		})
	}
}

// errAny stands for any error in a table.
var errAny = errors.New("any error")

// TestAckDropsAcknowledgedWrites: an ack removes its writes from the
// outbox, and the server state of rows without a pending write left; the
// local rows stay as written.
func TestAckDropsAcknowledgedWrites(t *testing.T) {
	c := openClient(t, offline, 5, startRows())
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	w2 := write(t, c, model.Sessions, model.OpUpsert, "s1", map[string]any{"status": "done"})
	w3 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "030"})
	ctx := context.Background()
	if err := c.handleFrame(ctx, &wire.Ack{Type: wire.TypeAck, MutationIDs: []string{w1, w2, "not-mine"}, Seq: 6}); err != nil {
		t.Fatal(err)
	}
	if ps := outbox(t, c); len(ps) != 1 || ps[0].ID != w3 {
		t.Errorf("outbox = %+v; want only %s", ps, w3)
	}
	if got := bases(t, c); strings.Join(got, ",") != "profiles/p1" {
		t.Errorf("server states kept = %v; want p1's (it has a pending write)", got)
	}
	if err := c.handleFrame(ctx, &wire.Ack{Type: wire.TypeAck, MutationIDs: []string{w3}, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	if ps, b := outbox(t, c), bases(t, c); len(ps) != 0 || len(b) != 0 {
		t.Errorf("outbox %+v, server states %v after every ack; want none", ps, b)
	}
	checkRows(t, c, map[string]map[string]any{
		"profiles/p1": {"first_name": "Bea", "phone": "030", "last_name": "Alt"},
		"sessions/s1": {"status": "done", "price_cents": int64(3800)},
	})
}

// TestRejectRestoresTheRow: a reject marks its write rejected with the
// server's code and message and puts the row back to its server state plus
// the writes still pending; a new row without a server state goes away; a
// reject of no write of this device changes nothing; one without a
// mutation id (a refused frame) is an error.
func TestRejectRestoresTheRow(t *testing.T) {
	c := openClient(t, offline, 5, startRows())
	ctx := context.Background()
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	w2 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"phone": "030"})
	w3 := write(t, c, model.Profiles, model.OpUpsert, "p9", map[string]any{"first_name": "Neu"})

	if err := c.handleFrame(ctx, &wire.Reject{Type: wire.TypeReject, MutationID: w1, Error: wire.CodeForbidden, Message: "not yours"}); err != nil {
		t.Fatal(err)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Anna", "phone": "030"}, "profiles/p9": {"first_name": "Neu"}})
	if err := c.handleFrame(ctx, &wire.Reject{Type: wire.TypeReject, MutationID: w3, Error: wire.CodeBadRequest, Message: "bad"}); err != nil {
		t.Fatal(err)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Anna", "phone": "030"}, "profiles/p9": nil})
	if err := c.handleFrame(ctx, &wire.Reject{Type: wire.TypeReject, MutationID: "not-mine", Error: wire.CodeForbidden}); err != nil {
		t.Errorf("reject of an unknown mutation = %v; want nil", err)
	}
	err := c.handleFrame(ctx, &wire.Reject{Type: wire.TypeReject, Error: wire.CodeBadRequest, Message: "invalid frame"})
	if err == nil || !strings.Contains(err.Error(), "bad_request") || !strings.Contains(err.Error(), "invalid frame") {
		t.Errorf("reject without a mutation id = %v; want an error with its code and message", err)
	}

	want := []Pending{
		{ID: w1, Entity: model.Profiles, Op: model.OpUpsert, RowID: "p1", Fields: map[string]any{"first_name": "Bea"}, Rejected: true, Error: wire.CodeForbidden, Message: "not yours"},
		{ID: w2, Entity: model.Profiles, Op: model.OpUpsert, RowID: "p1", Fields: map[string]any{"phone": "030"}},
		{ID: w3, Entity: model.Profiles, Op: model.OpUpsert, RowID: "p9", Fields: map[string]any{"first_name": "Neu"}, Rejected: true, Error: wire.CodeBadRequest, Message: "bad"},
	}
	if got := outbox(t, c); !equalJSON(t, got, want) {
		t.Errorf("outbox = %+v; want %+v", got, want)
	}
}

// TestStreamUnderPendingWrites: a streamed change of a row with a pending
// write updates the row's server state and keeps the write on top; a
// later reject shows the server state with that change.
func TestStreamUnderPendingWrites(t *testing.T) {
	c := openClient(t, offline, 5, startRows())
	ctx := context.Background()
	w1 := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	err := c.handleFrame(ctx, &wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{
		{Seq: 6, Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "Anne", "last_name": "Neu"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Bea", "last_name": "Neu"}})
	if err := c.handleFrame(ctx, &wire.Reject{Type: wire.TypeReject, MutationID: w1, Error: wire.CodeForbidden}); err != nil {
		t.Fatal(err)
	}
	checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Anne", "last_name": "Neu"}})
	if got := cursor(t, c); got != 6 {
		t.Errorf("cursor = %d; want 6", got)
	}
}

// TestWipeFrameDeletesTheData: the wipe frame deletes both databases and
// the token; the device has a new id and writes nothing.
func TestWipeFrameDeletesTheData(t *testing.T) {
	c := openClient(t, offline, 5, startRows())
	write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	if err := c.handleFrame(context.Background(), &wire.Wipe{Type: wire.TypeWipe}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"data.db", "data.db-wal", "outbox.db", "outbox.db-wal"} {
		if _, err := os.Stat(c.path(f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the wipe: %v; want it deleted", f, err)
		}
	}
	if st := c.State(); st.State != StateWiped || st.Token != "" || st.DeviceID == "d1" || st.DeviceID == "" {
		t.Errorf("state = %+v; want wiped, no token, a new device id", st)
	}
	if _, err := c.Write(context.Background(), model.Change{Entity: model.Profiles, Op: model.OpDelete, ID: "p1"}); !errors.Is(err, ErrWiped) {
		t.Errorf("Write after the wipe = %v; want ErrWiped", err)
	}
	if _, err := c.Query(context.Background(), `SELECT 1`); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("Query after the wipe = %v; want ErrNotLoggedIn", err)
	}
}

// TestDamagedLocalDataIsReported: local data that does not decode is an
// error, never read as no value.
func TestDamagedLocalDataIsReported(t *testing.T) {
	c := openClient(t, offline, 5, rows{model.Accounts: {{"id": "m1", "practice_ids": []any{"x"}}}})
	ctx := context.Background()
	w := write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
	if _, err := c.outbox.Exec(`UPDATE outbox SET fields = '{"first_name":' WHERE id = ?`, w); err != nil {
		t.Fatal(err)
	}
	if ps, err := c.Outbox(ctx); err == nil {
		t.Errorf("Outbox with damaged fields = %+v; want an error", ps)
	}
	if _, err := c.data.Exec(`UPDATE accounts SET practice_ids = 'x' WHERE id = 'm1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(ctx, model.Change{Entity: model.Accounts, Op: model.OpUpsert, ID: "m1", Fields: map[string]any{"name": "M"}}); err == nil {
		t.Errorf("Write over a row whose list does not decode = nil; want an error")
	}
}

// checkRows checks local rows: each entity/id of want has at least the
// given columns, or no row for nil.
func checkRows(tb testing.TB, c *Client, want map[string]map[string]any) {
	tb.Helper()
	for key, cols := range want {
		entity, id, _ := strings.Cut(key, "/")
		got := row(tb, c, entity, id)
		if cols == nil {
			if got != nil {
				tb.Errorf("%s = %v; want no row", key, got)
			}
			continue
		}
		if got == nil {
			tb.Errorf("%s: no row; want %v", key, cols)
			continue
		}
		for k, v := range cols {
			if got[k] != v {
				tb.Errorf("%s.%s = %#v; want %#v", key, k, got[k], v)
			}
		}
	}
}
