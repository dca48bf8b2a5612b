// Package fsutil creates directories durably. A new directory is an entry
// in its parent: only an fsync of the parent makes it survive a power loss,
// and with it the files later written and fsynced inside it.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// syncDir fsyncs a directory; tests replace it to watch the calls.
var syncDir = SyncDir

// SyncDir fsyncs the directory dir, making the entries in it (files
// created, renamed or removed there) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents with perm, as os.MkdirAll
// does, and fsyncs the parent of every directory it created, topmost first,
// so that each of them survives a power loss. The caller fsyncs dir itself
// after creating files in it.
func MkdirAll(dir string, perm os.FileMode) error {
	var missing []string // dir first, then its missing parents
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !os.IsNotExist(err) {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(missing[i])); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	return nil
}
