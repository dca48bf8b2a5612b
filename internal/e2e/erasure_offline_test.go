package e2e_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
)

// TestErasureLeavesNoOfflineWritesOnDevice: a therapist writes a protocol
// and a phone number of a patient while offline; the practice erases the
// patient; the device syncs again, resyncs onto a shard of the new history
// and has the writes refused. No byte of the patient stays in the device's
// files (docs/api.md, Erasure), the outbox's rejected writes included.
func TestErasureLeavesNoOfflineWritesOnDevice(t *testing.T) {
	ctx := context.Background()
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	sys.push(
		up("accounts", "m1", map[string]any{"name": "Jonas", "email": "j@x.de", "role": "member", "app_enabled": true}),
		up("profiles", "p-zyx", map[string]any{"owner_id": "m1", "first_name": "Review-Erased-Name"}),
		up("sessions", "ses-z", map[string]any{"profile_id": "p-zyx", "therapist_id": "m1", "status": "done", "protocol": "Review-Erased-Protocol-Server"}),
	)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	// Offline: the therapist writes about the patient.
	if _, err := phone.Write(ctx, model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: "ses-z",
		Fields: map[string]any{"protocol": "Review-Erased-Offline-Protocol"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Write(ctx, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p-zyx",
		Fields: map[string]any{"phone": "0170-REVIEW-ERASED"}}); err != nil {
		t.Fatal(err)
	}
	sys.push(map[string]any{"entity": "profiles", "op": "erase", "id": "p-zyx"})
	after, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sys.waitShard("m1", after.Seq, 5*time.Second)
	if err := syncIdle(t, phone); err != nil {
		t.Fatalf("sync after the erasure = %v", err)
	}
	if h, _ := phone.History(); h != after.History {
		t.Fatalf("device history %s; want %s", h, after.History)
	}
	if n := countRows(t, phone, `SELECT count(*) FROM sessions WHERE id = 'ses-z'`) + countRows(t, phone, `SELECT count(*) FROM profiles WHERE id = 'p-zyx'`); n != 0 {
		t.Errorf("the device's data.db holds %d rows of the erased patient", n)
	}
	phone.Close()
	for _, v := range []string{"Review-Erased-Offline-Protocol", "0170-REVIEW-ERASED", "Review-Erased-Name", "Review-Erased-Protocol-Server"} {
		filepath.Walk(phone.Dir(), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				b, _ := os.ReadFile(p)
				if bytes.Contains(b, []byte(v)) {
					t.Errorf("%s holds %q after the erasure", filepath.Base(p), v)
				}
			}
			return nil
		})
	}
}

// filesHolding returns the files of dir that hold v.
func filesHolding(dir, v string) []string {
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte(v)) {
				out = append(out, filepath.Base(p))
			}
		}
		return nil
	})
	return out
}

// TestErasureResyncTruncatesOutboxWAL: a device that was offline during
// the erasure resyncs onto a shard of the new history; the outbox's base
// snapshot of an earlier (acknowledged) write of the erased patient's row
// leaves outbox.db-wal too: a shard download truncates the WALs.
func TestErasureResyncTruncatesOutboxWAL(t *testing.T) {
	ctx := context.Background()
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	sys.push(
		up("accounts", "m1", map[string]any{"name": "Jonas", "email": "j@x.de", "role": "member", "app_enabled": true}),
		up("profiles", "p-zyx", map[string]any{"owner_id": "m1", "first_name": "Review-Erased-WAL-Name", "insurance": "Review-Erased-WAL-Kasse"}),
		up("profiles", "p-keep", map[string]any{"owner_id": "m1", "first_name": "Keep"}),
	)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	// An ordinary write, acknowledged before the erasure: the outbox's
	// base snapshot of the row held the patient's fields.
	if _, err := phone.Write(ctx, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p-zyx", Fields: map[string]any{"phone": "0171"}}); err != nil {
		t.Fatal(err)
	}
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	if ps, _ := phone.Outbox(ctx); len(ps) != 0 {
		t.Fatalf("outbox %v; want the write acknowledged", ps)
	}
	// Offline during the erasure.
	sys.push(map[string]any{"entity": "profiles", "op": "erase", "id": "p-zyx"})
	after, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sys.waitShard("m1", after.Seq, 5*time.Second)
	if err := syncIdle(t, phone); err != nil {
		t.Fatalf("sync after the erasure = %v", err)
	}
	if h, _ := phone.History(); h != after.History {
		t.Fatalf("device history %s; want %s", h, after.History)
	}
	// The app keeps running (the client open), as a phone's does.
	for _, v := range []string{"Review-Erased-WAL-Name", "Review-Erased-WAL-Kasse"} {
		if fs := filesHolding(phone.Dir(), v); len(fs) > 0 {
			t.Errorf("%v hold %q after the erasure and the resync", fs, v)
		}
	}
}
