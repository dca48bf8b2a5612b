package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/therasync/therasync/store"
)

// TestRestoreKeepsEndedAccessEnded: restoring an older backup over a
// tenant brings back its rows, not access that ended since: a device
// revoked (to be wiped) after the backup stays revoked, a rotated practice
// key stays rotated, a device logged in since keeps its token, and the
// audit lines written since stay, with the restore's own.
func TestRestoreKeepsEndedAccessEnded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, oldKey, err := s.CreateTenant(ctx, store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := s.Tenant(ctx, st.ID)
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}}]`)
	lostTok, _, err := tn.LoginDevice(ctx, "m1", "lost-phone", "x", "test")
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "b.db")
	if err := tn.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	// After the backup: the phone is lost and revoked to be wiped, the key
	// leaked and was rotated, a new phone logged in, a row was written.
	if _, err := tn.RevokeDevice(ctx, "lost-phone", true, "practice", ""); err != nil {
		t.Fatal(err)
	}
	newKey, err := tn.RotateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newTok, _, err := tn.LoginDevice(ctx, "m1", "new-phone", "y", "test")
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, tn, "later", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"X"}}]`)
	s.Close()

	s2, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Restore(ctx, backup, true); err != nil {
		t.Fatal(err)
	}
	t2, d, err := s2.AuthenticateDevice(ctx, lostTok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t2.DeviceAccess(ctx, d); !errors.Is(err, store.ErrRevoked) || !d.Wipe {
		t.Errorf("the lost phone after the restore: %v, wipe %v; want device_revoked with its wipe", err, d.Wipe)
	}
	if _, _, err := s2.Authenticate(ctx, oldKey); !errors.Is(err, store.ErrUnauthorized) {
		t.Errorf("the rotated practice key after the restore = %v; want unauthorized", err)
	}
	if _, _, err := s2.Authenticate(ctx, newKey); err != nil {
		t.Errorf("the current practice key after the restore = %v; want it to work", err)
	}
	if _, d, err := s2.AuthenticateDevice(ctx, newTok); err != nil || d.ID != "new-phone" {
		t.Errorf("the phone logged in since the backup: %v", err)
	}
	if row, err := t2.Row(ctx, "practices", "pr1"); err == nil {
		t.Errorf("a row written after the backup survived the restore: %v", row)
	}
	log, _ := t2.AuditLog(ctx, 0, 100)
	var actions []string
	for _, e := range log {
		actions = append(actions, e.Action)
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "device_revoked") || !strings.HasSuffix(got, "restored") {
		t.Errorf("audit after the restore: %s; want the revocation since the backup and the restore", got)
	}
}
