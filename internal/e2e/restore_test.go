package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// TestRestoreResyncsDevices: backup → more pushes → a phone syncs past the
// backup → the server stops, the phone writes offline → restore → the
// restored log moves past the phone's cursor (so seqs alone would line up
// again) → the phone gets resync, ends equal to a fresh shard of the
// restored store with its offline write re-applied and acknowledged; shard
// downloads work right after the restore (a new login too).
func TestRestoreResyncsDevices(t *testing.T) {
	ctx := context.Background()
	sys := newSystem(t, func(s *system) { s.resend = 10 * time.Millisecond })
	srv := sys.restartable()
	w := sys.startWorker(time.Hour)
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	oldLog, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(t.TempDir(), "central.db")
	if err := sys.tenant.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	sys.push(up("profiles", "p3", map[string]any{"owner_id": "m1", "first_name": "Clara"}))
	sys.push(up("profiles", "p1", map[string]any{"first_name": "Anna-Maria"}))
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	if got := queryOne(t, phone, `SELECT first_name FROM profiles WHERE id = 'p3'`); got != "Clara" {
		t.Fatalf("the phone did not sync past the backup: p3 = %v", got)
	}
	cursor, _ := phone.Cursor()

	// The server goes away; the phone writes offline.
	srv.down()
	if _, err := phone.Write(ctx, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"phone": "0171 333"}}); err != nil {
		t.Fatal(err)
	}

	// The operator restores the backup with syncd and the worker stopped.
	w.Shutdown()
	sys.store.Close()
	rs, err := store.Open(sys.data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Restore(ctx, backup, true); err != nil {
		t.Fatalf("Restore = %v", err)
	}
	rs.Close()
	if sys.store, err = store.Open(sys.data, store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.store.Close() })
	if sys.tenant, err = sys.store.Tenant(ctx, sys.tenant.ID()); err != nil {
		t.Fatal(err)
	}
	newLog, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newLog.History == oldLog.History || newLog.History == "" {
		t.Fatalf("history after the restore = %q; want a new one (was %q)", newLog.History, oldLog.History)
	}
	srv.up()
	sys.startWorker(50 * time.Millisecond) // its tick finds the builds the restore requested
	// The restored log moves past the phone's cursor.
	for i := int64(0); sys.seq() <= cursor+1; i++ {
		sys.push(up("profiles", "p2", map[string]any{"phone": fmt.Sprint("030 ", i)}))
	}

	// Shard downloads work at once: the restore dropped the old records.
	sys.waitShard("m1", 0, 10*time.Second)
	tablet := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, tablet); err != nil {
		t.Fatalf("a login after the restore: sync = %v", err)
	}

	if err := syncIdle(t, phone); err != nil {
		t.Fatalf("the phone's sync after the restore = %v", err)
	}
	if err := syncIdle(t, phone); err != nil { // its re-applied write's echo
		t.Fatal(err)
	}
	if got := queryOne(t, phone, `SELECT count(*) FROM profiles WHERE id = 'p3'`); got != int64(0) {
		t.Errorf("the phone kept p3, which the restored server does not have")
	}
	if ps, _ := phone.Outbox(ctx); len(ps) != 0 {
		t.Errorf("outbox after the restore = %v; want the offline write acknowledged", ps)
	}
	row, err := sys.tenant.Row(ctx, model.Profiles, "p1")
	if err != nil || row["phone"] != "0171 333" || row["first_name"] != "Anna" {
		t.Errorf("server p1 = %v, %v; want the restored name and the phone's offline write", row, err)
	}
	if err := syncIdle(t, tablet); err != nil {
		t.Fatal(err)
	}
	seq := sys.seq()
	for name, c := range map[string]interface {
		Cursor() (int64, error)
		Dir() string
	}{"phone": phone, "tablet": tablet} {
		if cur, _ := c.Cursor(); cur != seq {
			t.Errorf("%s at cursor %d; want %d", name, cur, seq)
		}
		fresh := filepath.Join(t.TempDir(), "fresh.db")
		if _, err := shardbuilder.WriteFile(ctx, shardbuilder.Source{TenantID: sys.tenant.ID(), Path: sys.tenant.Path()}, "m1", fresh, time.Now()); err != nil {
			t.Fatal(err)
		}
		got, want := localRows(t, filepath.Join(c.Dir(), "data.db")), localRows(t, fresh)
		for _, e := range model.Entities() {
			if !reflect.DeepEqual(got[e.Name], want[e.Name]) {
				t.Errorf("%s %s: device %v; fresh shard %v", name, e.Name, got[e.Name], want[e.Name])
			}
		}
	}
}
