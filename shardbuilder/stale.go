package shardbuilder

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RemoveStale removes every file under the tenant's shard directory
// (DATA/shards/<tenant>/, every account's, the earlier layout's too) that
// is not a shard built from the log's history history: after an erasure
// they may hold what it erased. A temporary file of a build is removed
// too (the build fails its rename and is retried). It returns how many
// files it removed; it goes on past a file it cannot remove.
func RemoveStale(dataDir, tenantID, history string) (int, error) {
	if history == "" || tenantID == "" {
		return 0, fmt.Errorf("remove stale shards: tenant %q, history %q: both are needed", tenantID, history)
	}
	root := filepath.Join(dataDir, "shards", tenantID)
	var (
		n    int
		errs []error
	)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if strings.HasSuffix(path, ".db") && historyOf(path) == history {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			return nil
		}
		n++
		return nil
	})
	if err := errors.Join(append(errs, err)...); err != nil {
		return n, fmt.Errorf("remove stale shards of %s: %w", tenantID, err)
	}
	return n, nil
}

// historyOf returns the history id a shard file's sync_meta names, "" when
// it cannot be read.
func historyOf(path string) string {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&immutable=1")
	if err != nil {
		return ""
	}
	defer db.Close()
	var h string
	if err := db.QueryRow(`SELECT value FROM sync_meta WHERE key = 'history'`).Scan(&h); err != nil {
		return ""
	}
	return h
}
