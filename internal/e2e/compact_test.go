package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// compactAll compacts the tenant from a store of its own (as the worker's
// process would) whose clock runs an hour ahead, with a retention of a
// minute: every change but the head's folds.
func (sys *system) compactAll(tb testing.TB) store.CompactResult {
	tb.Helper()
	s, err := store.Open(sys.data, store.Options{Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	t, err := s.Tenant(context.Background(), sys.tenant.ID())
	if err != nil {
		tb.Fatal(err)
	}
	res, err := t.Compact(context.Background(), time.Minute)
	if err != nil {
		tb.Fatalf("Compact = %v", err)
	}
	return res
}

// deviceOf logs a device of account in straight through the store.
func (sys *system) deviceOf(tb testing.TB, account string) *device.Client {
	tb.Helper()
	tok, _, err := sys.tenant.LoginDevice(context.Background(), account, "dev-"+account, account, "test")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := device.Open(tb.TempDir(), sys.url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if err := c.UseToken(context.Background(), tok); err != nil {
		tb.Fatalf("%s UseToken = %v", account, err)
	}
	return c
}

// sameAsFreshShard checks that the device holds exactly the rows of a
// fresh shard of account built now.
func (sys *system) sameAsFreshShard(tb testing.TB, c *device.Client, account string) {
	tb.Helper()
	want := filepath.Join(tb.TempDir(), "fresh.db")
	if _, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: sys.tenant.ID(), Path: sys.tenant.Path()}, account, want, time.Now()); err != nil {
		tb.Fatal(err)
	}
	got, exp := localRows(tb, filepath.Join(c.Dir(), "data.db")), localRows(tb, want)
	for _, e := range model.Entities() {
		if !reflect.DeepEqual(got[e.Name], exp[e.Name]) {
			tb.Errorf("%s %s: device %v; fresh shard %v", account, e.Name, got[e.Name], exp[e.Name])
		}
	}
}

// TestCompactionResync: a device offline while the log was compacted past
// its cursor — a delete of a row it holds folded away — gets resync,
// downloads a fresh shard and converges; a practice pull from below the
// horizon gets 410 with compacted_to, one from 0 the current rows.
func TestCompactionResync(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	sys.push(
		up("accounts", "m1", map[string]any{"name": "Jonas", "email": "j@x.de", "role": "member", "app_enabled": true}),
		up("profiles", "p1", map[string]any{"owner_id": "m1", "first_name": "Anna"}),
		up("profiles", "p2", map[string]any{"owner_id": "m1", "first_name": "Ben"}),
		up("sessions", "s1", map[string]any{"profile_id": "p1", "therapist_id": "m1", "protocol": "Befund"}),
	)
	sys.waitShard("m1", sys.seq(), 10*time.Second)
	c := sys.deviceOf(t, "m1")
	if err := syncIdle(t, c); err != nil {
		t.Fatal(err)
	}
	old, _ := c.Cursor()
	// Offline meanwhile: p2 goes, p1 and s1 change, a new session comes.
	sys.push(map[string]any{"entity": "profiles", "op": "delete", "id": "p2"})
	sys.push(up("profiles", "p1", map[string]any{"phone": "0301234"}))
	sys.push(up("sessions", "s1", map[string]any{"protocol": "Verlauf"}), up("sessions", "s2", map[string]any{"profile_id": "p1", "therapist_id": "m1"}))
	sys.push(up("practices", "pr1", map[string]any{"name": "Mitte"}))
	res := sys.compactAll(t)
	if res.Horizon != sys.seq()-1 || res.Horizon <= old || res.Dropped == 0 {
		t.Fatalf("Compact = %+v; want a horizon past the device's cursor %d", res, old)
	}

	code, b := sys.do("GET", fmt.Sprintf("/v1/practice/changes?since=%d", old), nil)
	var gone struct {
		Error       string `json:"error"`
		CompactedTo int64  `json:"compacted_to"`
	}
	if json.Unmarshal(b, &gone); code != http.StatusGone || gone.Error != "history_compacted" || gone.CompactedTo != res.Horizon {
		t.Errorf("pull since=%d = %d %s; want 410 history_compacted with compacted_to %d", old, code, b, res.Horizon)
	}
	code, b = sys.do("GET", "/v1/practice/changes?since=0", nil)
	var all struct {
		Changes []model.Change `json:"changes"`
	}
	if json.Unmarshal(b, &all); code != http.StatusOK || len(all.Changes) != 5 { // m1, p1, s1, s2, pr1
		t.Errorf("pull since=0 = %d %s; want the 5 rows there are", code, b)
	}

	if err := syncIdle(t, c); err != nil {
		t.Fatalf("sync after the compaction = %v", err)
	}
	if cur, _ := c.Cursor(); cur != sys.seq() {
		t.Errorf("device at cursor %d; want %d", cur, sys.seq())
	}
	if n := queryOne(t, c, `SELECT count(*) FROM profiles WHERE id = 'p2'`); n != int64(0) {
		t.Errorf("the device still holds p2 (%v): its delete was compacted away and no fresh shard replaced the data", n)
	}
	sys.sameAsFreshShard(t, c, "m1")
}
