package syncd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// compactLater compacts the tenant from a store of its own over data (as
// the worker's process would) whose clock runs an hour ahead, with a
// retention of a minute: every change but the head's folds.
func compactLater(tb testing.TB, data, tenant string) store.CompactResult {
	tb.Helper()
	s, err := store.Open(data, store.Options{Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	t, err := s.Tenant(context.Background(), tenant)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := t.Compact(context.Background(), time.Minute)
	if err != nil {
		tb.Fatalf("Compact = %v", err)
	}
	return res
}

// TestCompactedCursors: after a compaction to H, a practice pull from
// below H gets 410 history_compacted with compacted_to, a device cursor
// below H gets resync; cursors 0 and H go on.
func TestCompactedCursors(t *testing.T) {
	data := t.TempDir()
	e := newTenantEnvAt(t, data, syncd.Config{})
	e.push(t, "more", `[
		{"entity":"sessions","op":"upsert","id":"ses1","fields":{"status":"planned"}},
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"owner_id":"m1"}},
		{"entity":"profiles","op":"delete","id":"p2"},
		{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}
	]`)
	head := e.seq(t)
	res := compactLater(t, data, e.T.ID())
	h := res.Horizon
	if h != head-1 || res.CompactedTo != h || res.Dropped == 0 {
		t.Fatalf("Compact = %+v; want horizon %d with changes dropped", res, head-1)
	}
	t.Run("practice pull", func(t *testing.T) {
		for _, tt := range []struct {
			since  int64
			status int
		}{{h - 1, http.StatusGone}, {1, http.StatusGone}, {0, http.StatusOK}, {h, http.StatusOK}} {
			code, body := e.do(t, "GET", fmt.Sprintf("/v1/practice/changes?since=%d&limit=1000", tt.since), e.Key, nil)
			var r struct {
				Error       string           `json:"error"`
				CompactedTo int64            `json:"compacted_to"`
				Changes     []map[string]any `json:"changes"`
			}
			json.Unmarshal(body, &r)
			switch {
			case code != tt.status:
				t.Errorf("pull since=%d = %d %s; want %d", tt.since, code, body, tt.status)
			case code == http.StatusGone && (r.Error != "history_compacted" || r.CompactedTo != h):
				t.Errorf("pull since=%d = %s; want history_compacted with compacted_to %d", tt.since, body, h)
			case tt.since == 0 && len(r.Changes) != 7: // 4 accounts, p1, ses1, pr1 (p2 was deleted)
				t.Errorf("pull since=0: %d changes %v; want one per existing row", len(r.Changes), r.Changes)
			}
		}
	})
	t.Run("device cursor", func(t *testing.T) {
		tok := e.token(t, "m1", "phone")
		for _, tt := range []struct {
			cursor int64
			resync bool
		}{{h - 1, true}, {1, true}, {0, false}, {h, false}} {
			ws, _, _ := dial(t, e.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", tt.cursor), tok)
			if tt.resync {
				code, frames := closeCode(t, ws, 3*time.Second)
				if len(frames) != 1 || frames[0].Type != "resync" || code != websocket.CloseNormalClosure {
					t.Errorf("cursor %d: frames %v, close %d; want resync then 1000", tt.cursor, frames, code)
				}
				continue
			}
			if f, _ := until(t, ws, "caught_up"); f.Seq != head {
				t.Errorf("cursor %d: caught_up %d; want %d", tt.cursor, f.Seq, head)
			}
			ws.Close()
		}
	})
}

// TestCompactionPassesLiveFeed: a compaction whose horizon passes the
// position of a tenant's live feed (a retention shorter than the feed's
// lag) may have folded away a delete the feed has not sent: its live
// connections get resync instead of a stream that lacks it.
func TestCompactionPassesLiveFeed(t *testing.T) {
	data := t.TempDir()
	// The feed reads the store only when woken, not on its own meanwhile.
	e := newTenantEnvAt(t, data, syncd.Config{AccessRecheck: time.Minute})
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "admin-phone"))
	until(t, ws, "caught_up")
	ctx := context.Background()
	// Committed past syncd (as by another process) and not yet read by
	// the feed: the delete folds away with the session's history.
	for _, c := range []model.Change{
		{Entity: model.Sessions, Op: model.OpDelete, ID: "ses1"},
		{Entity: model.Practices, Op: model.OpUpsert, ID: "pr1", Fields: map[string]any{"name": "Mitte"}},
	} {
		if _, err := e.T.Apply(ctx, store.Batch{Origin: store.OriginPractice, Changes: []model.Change{c}}); err != nil {
			t.Fatal(err)
		}
	}
	compactLater(t, data, e.T.ID())
	e.push(t, "wake", `[{"entity":"practices","op":"upsert","id":"pr2","fields":{"name":"Nord"}}]`)
	code, frames := closeCode(t, ws, 5*time.Second)
	if n := len(frames); n == 0 || frames[n-1].Type != "resync" || code != websocket.CloseNormalClosure {
		t.Errorf("live connection: frames %v, close %d; want resync then 1000", frames, code)
	}
	// A connection from the head now is live again.
	ws2, _, _ := dial(t, e.URL, fmt.Sprintf("/v1/device/sync?cursor=%d", e.seq(t)), e.token(t, "a1", "admin-phone"))
	until(t, ws2, "caught_up")
	e.push(t, "live", `[{"entity":"practices","op":"upsert","id":"pr3","fields":{"name":"Süd"}}]`)
	if _, live := until(t, ws2, "caught_up"); len(live) != 1 || live[0]["id"] != "pr3" {
		t.Errorf("after the feed started again: %v; want pr3", live)
	}
}
