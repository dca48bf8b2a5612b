package shardbuilder_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

func newTenant(tb testing.TB) (*store.Store, *store.Tenant) {
	tb.Helper()
	s, err := store.Open(tb.TempDir(), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	st, _, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatal(err)
	}
	tn, err := s.Tenant(context.Background(), st.ID)
	if err != nil {
		tb.Fatal(err)
	}
	return s, tn
}

func push(tb testing.TB, tn *store.Tenant, cs ...model.Change) int64 {
	tb.Helper()
	res, err := tn.Apply(context.Background(), store.Batch{Origin: store.OriginPractice, Changes: cs})
	if err != nil {
		tb.Fatalf("Apply = %v", err)
	}
	return res.Seq
}

func upsert(entity, id string, f map[string]any) model.Change {
	return model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
}

func TestBuildPlacesAndPrunes(t *testing.T) {
	s, tn := newTenant(t)
	push(t, tn, upsert(model.Accounts, "m1", map[string]any{"name": "M", "role": "member", "app_enabled": true}))
	b := shardbuilder.New(s.Dir(), func() time.Time { return time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC) })
	src := shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}
	var paths []string
	for i := range 4 {
		push(t, tn, upsert(model.Profiles, "p", map[string]any{"owner_id": "m1", "first_name": string(rune('A' + i))}))
		got, err := b.Build(context.Background(), src, "m1", 2)
		if err != nil {
			t.Fatalf("Build = %v", err)
		}
		paths = append(paths, got.Path)
		if want := filepath.Join("shards", tn.ID(), "a-m1", strconv.FormatInt(got.Seq, 10)+".db"); got.Path != want {
			t.Errorf("Build path = %s; want %s", got.Path, want)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "shards", tn.ID(), "a-m1"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(paths[2]), filepath.Base(paths[3])}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("shard files = %v; want the newest two %v", names, want)
	}
	// sync_meta, and the sqlite3 command-line tool opens the file.
	out, err := exec.Command("sqlite3", filepath.Join(s.Dir(), paths[3]), "PRAGMA integrity_check; SELECT key || '=' || value FROM sync_meta ORDER BY key; SELECT first_name FROM profiles;").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
	log, err := tn.Log(context.Background())
	if err != nil || len(log.History) != 32 {
		t.Fatalf("Log = %+v, %v; want a 128-bit history id", log, err)
	}
	want := "ok\naccount_id=m1\nbuilt_at=2026-11-22T08:00:00Z\nhistory=" + log.History + "\nrole=member\nschema_version=1\nseq=5\ntenant_id=" + tn.ID() + "\nD\n"
	if string(out) != want {
		t.Errorf("sqlite3 output =\n%s\nwant\n%s", out, want)
	}
}

// hashedName is the directory name ShardDir gives an id that is not used
// as it is.
func hashedName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "h-" + hex.EncodeToString(sum[:16])
}

func TestShardDir(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tt := range []struct {
		name, id, want string
	}{
		{"safe id is kept, prefixed", "acc-jonas_2", "a-acc-jonas_2"},
		{"safe id of digits", "17", "a-17"},
		{"safe id with dots", "m1.v2", "a-m1.v2"},
		{"path traversal", "../etc", hashedName("../etc")},
		{"slash", "a/b", hashedName("a/b")},
		{"dot", ".", hashedName(".")},
		{"dot dot", "..", hashedName("..")},
		{"space", "x y", hashedName("x y")},
		{"too long", long, hashedName(long)},
		{"upper case (one directory on a case-insensitive disk)", "Acc-Jonas", hashedName("Acc-Jonas")},
		{"trailing dot (dropped by some file systems)", "acc.", hashedName("acc.")},
		{"crafted as the hashed name of another id", hashedName("../etc"), "a-" + hashedName("../etc")},
		{"crafted as the prefixed name of another id", "a-acc-jonas_2", "a-a-acc-jonas_2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := shardbuilder.ShardDir("t1", tt.id), filepath.Join("shards", "t1", tt.want); got != want {
				t.Errorf("ShardDir(t1, %q) = %s; want %s", tt.id, got, want)
			}
		})
	}
}

// TestShardDirNeverShared: no two account ids share a directory, whatever
// ids a client crafts (a hashed name, a prefixed name, case variants).
func TestShardDirNeverShared(t *testing.T) {
	ids := []string{"../etc", "a/b", ".", "..", "x y", strings.Repeat("a", 200), "acc-jonas", "ACC-JONAS", "Acc-Jonas", "acc.", "acc", "17", ""}
	for _, id := range slices.Clone(ids) {
		ids = append(ids, hashedName(id), "a-"+id, "h-"+id, "a-"+hashedName(id))
	}
	owner := map[string]string{}
	for _, id := range ids {
		d := shardbuilder.ShardDir("t1", id)
		if filepath.Dir(d) != filepath.Join("shards", "t1") {
			t.Errorf("ShardDir(t1, %q) = %s; want a directory right under shards/t1", id, d)
		}
		// Compared without case: some disks do.
		key := strings.ToLower(d)
		if prev, ok := owner[key]; ok && prev != id {
			t.Errorf("ShardDir(t1, %q) = ShardDir(t1, %q) = %s", id, prev, d)
		}
		owner[key] = id
	}
}

func TestBuildRefusals(t *testing.T) {
	_, tn := newTenant(t)
	// Made without a role an account is a member; its role removed, it has none.
	push(t, tn, upsert(model.Accounts, "norole", map[string]any{"name": "N"}))
	push(t, tn, upsert(model.Accounts, "norole", map[string]any{"role": nil}))
	src := shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}
	dir := t.TempDir()
	if _, err := shardbuilder.WriteFile(context.Background(), src, "ghost", filepath.Join(dir, "a.db"), time.Now()); err == nil || !strings.Contains(err.Error(), "no such account") {
		t.Errorf("WriteFile(unknown account) = %v; want ErrNoAccount", err)
	}
	if _, err := shardbuilder.WriteFile(context.Background(), src, "norole", filepath.Join(dir, "b.db"), time.Now()); err == nil {
		t.Errorf("WriteFile(account without role) = nil; want ErrNoRole")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed builds left files: %v", ents)
	}
}

// TestRemoveStale: after an erasure, every shard file of the tenant built
// from another history goes, in every account's directory and layout,
// with any temporary file; shards of the current history and other
// tenants' files stay.
func TestRemoveStale(t *testing.T) {
	ctx := context.Background()
	s, tn := newTenant(t)
	push(t, tn,
		upsert(model.Accounts, "m1", map[string]any{"name": "M", "role": "member", "app_enabled": true}),
		upsert(model.Accounts, "m2", map[string]any{"name": "N", "role": "member", "app_enabled": true}),
		upsert(model.Profiles, "p1", map[string]any{"owner_id": "m1", "first_name": "Anna"}))
	b := shardbuilder.New(s.Dir(), nil)
	src := shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}
	var old []string
	for _, acc := range []string{"m1", "m2"} {
		built, err := b.Build(ctx, src, acc, 2)
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, built.Path)
	}
	legacy := filepath.Join(s.Dir(), "shards", tn.ID(), "m1", "3.db") // the earlier layout
	tmp := filepath.Join(s.Dir(), "shards", tn.ID(), "a-m2", "build-1.tmp")
	other := filepath.Join(s.Dir(), "shards", "tother", "a-m1", "1.db")
	for _, f := range []string{legacy, tmp, other} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("Anna"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tn.Apply(ctx, store.Batch{ID: "erase", Origin: store.OriginPractice, Changes: []model.Change{{Entity: model.Profiles, Op: model.OpErase, ID: "p1"}}}); err != nil {
		t.Fatal(err)
	}
	log, err := tn.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	current, err := b.Build(ctx, src, "m1", 3)
	if err != nil {
		t.Fatal(err)
	}
	n, err := shardbuilder.RemoveStale(s.Dir(), tn.ID(), log.History)
	if err != nil || n != 4 {
		t.Errorf("RemoveStale = %d, %v; want the 2 old shards, the legacy one and the temporary file", n, err)
	}
	for _, f := range append([]string{legacy, tmp}, old...) {
		if !filepath.IsAbs(f) {
			f = filepath.Join(s.Dir(), f)
		}
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", f, err)
		}
	}
	for _, f := range []string{filepath.Join(s.Dir(), current.Path), other} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s was removed: %v", f, err)
		}
	}
	if _, err := shardbuilder.RemoveStale(s.Dir(), tn.ID(), ""); err == nil {
		t.Error("RemoveStale without a history = nil; want an error, not every file gone")
	}
}
