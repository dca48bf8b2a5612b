package fsutil

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// watchSyncs records the directories syncDir is called for, still syncing
// them, until the test ends.
func watchSyncs(tb testing.TB) *[]string {
	tb.Helper()
	var synced []string
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return SyncDir(dir)
	}
	tb.Cleanup(func() { syncDir = SyncDir })
	return &synced
}

// TestMkdirAllSyncsEveryNewLevel: every directory MkdirAll creates has its
// parent fsynced, topmost first; existing levels are not synced again.
func TestMkdirAllSyncsEveryNewLevel(t *testing.T) {
	for _, tt := range []struct {
		name     string
		existing string // made before, under the root
		create   string // under the root
		synced   []string
	}{
		{"three new levels", "", "a/b/c", []string{".", "a", "a/b"}},
		{"one new level under existing ones", "a/b", "a/b/c", []string{"a/b"}},
		{"two new levels under an existing one", "a", "a/b/c", []string{"a", "a/b"}},
		{"nothing new", "a/b/c", "a/b/c", nil},
		{"a trailing slash", "", "a/b/", []string{".", "a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.existing != "" {
				if err := os.MkdirAll(filepath.Join(root, tt.existing), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			synced := watchSyncs(t)
			if err := MkdirAll(filepath.Join(root, tt.create), 0o700); err != nil {
				t.Fatalf("MkdirAll = %v", err)
			}
			info, err := os.Stat(filepath.Join(root, tt.create))
			if err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 {
				t.Fatalf("created %s: %v, %v; want a directory with mode 0700", tt.create, info, err)
			}
			var want []string
			for _, d := range tt.synced {
				want = append(want, filepath.Join(root, d))
			}
			if !slices.Equal(*synced, want) {
				t.Errorf("synced %v; want %v", *synced, want)
			}
		})
	}
}

func TestMkdirAllErrors(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	synced := watchSyncs(t)
	for _, tt := range []struct{ name, dir string }{
		{"a file in the way", filepath.Join(file, "a")},
		{"a file at the place", file},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := MkdirAll(tt.dir, 0o700); err == nil || !strings.Contains(err.Error(), "directory") {
				t.Errorf("MkdirAll(%s) = %v; want an error", tt.dir, err)
			}
		})
	}
	if len(*synced) != 0 {
		t.Errorf("failed MkdirAll synced %v", *synced)
	}
	if err := SyncDir(filepath.Join(root, "missing")); err == nil {
		t.Errorf("SyncDir(missing) = nil; want an error")
	}
}
