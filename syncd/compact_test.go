package syncd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
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

// TestPagingFromZeroAfterCompaction: a practice PC fetching a fresh copy
// from since=0 pages through the compacted log with the compacted_to of
// its first answer (without it, its second page is 410); a practice
// connection from cursor 0 catches up through it in batches.
func TestPagingFromZeroAfterCompaction(t *testing.T) {
	data := t.TempDir()
	e := newTenantEnvAt(t, data, syncd.Config{})
	for round := range 2 { // every row twice: the second changes fold into the first
		var batch []string
		for i := range 600 {
			batch = append(batch, fmt.Sprintf(`{"entity":"profiles","op":"upsert","id":"x%d","fields":{"phone":"%d"}}`, i, round))
		}
		e.push(t, fmt.Sprint("rows", round), "["+strings.Join(batch, ",")+"]")
	}
	e.push(t, "gone", `[{"entity":"profiles","op":"delete","id":"x0"}]`)
	e.push(t, "head", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`)
	res := compactLater(t, data, e.T.ID())
	head := e.seq(t)
	rows := 4 + 2 + 599 + 1 // the accounts, p1 and ses1, x1…x599, pr1
	type page struct {
		Changes     []map[string]any `json:"changes"`
		CompactedTo int64            `json:"compacted_to"`
		Error       string           `json:"error"`
	}
	pull := func(since, resume int64) (int, page) {
		code, body := e.do(t, "GET", fmt.Sprintf("/v1/practice/changes?since=%d&limit=100&compacted_to=%d", since, resume), e.Key, nil)
		var p page
		json.Unmarshal(body, &p)
		return code, p
	}
	for _, tt := range []struct {
		name    string
		resume  bool // send back the first page's compacted_to
		wantErr string
	}{
		{"with compacted_to", true, ""},
		{"without it", false, "history_compacted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var since, resume int64
			got := map[string]bool{}
			for {
				code, p := pull(since, resume)
				if code != http.StatusOK {
					if p.Error != tt.wantErr || since == 0 {
						t.Fatalf("pull since=%d = %d %s; want error %q", since, code, p.Error, tt.wantErr)
					}
					return
				}
				if since == 0 {
					if p.CompactedTo != res.Horizon {
						t.Errorf("since=0: compacted_to %d; want %d", p.CompactedTo, res.Horizon)
					}
					if tt.resume {
						resume = p.CompactedTo
					}
				}
				if len(p.Changes) == 0 {
					break
				}
				for _, c := range p.Changes {
					got[fmt.Sprint(c["entity"], "/", c["id"])] = c["op"] == "upsert"
				}
				since = int64(p.Changes[len(p.Changes)-1]["seq"].(float64))
			}
			if tt.wantErr != "" {
				t.Fatalf("paged to the head; want %s on the way", tt.wantErr)
			}
			if since != head || len(got) != rows || got["profiles/x0"] {
				t.Errorf("paged to %d, %d rows (x0 there: %v); want %d and %d rows without x0", since, len(got), got["profiles/x0"], head, rows)
			}
		})
	}
	t.Run("practice connection", func(t *testing.T) {
		ws, _, _ := dial(t, e.URL, "/v1/practice/sync?cursor=0", e.Key)
		f, seen := until(t, ws, "caught_up")
		if f.Seq != head || len(seen) != rows {
			t.Errorf("catch-up from 0: %d changes, caught_up %d (%s); want %d and %d", len(seen), f.Seq, f.Reason, rows, head)
		}
	})
}
