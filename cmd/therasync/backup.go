package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// runBackup copies every tenant's central database into OUT/tenants/<id>/
// central.db while syncd may run, verifying each copy.
func (m *Main) runBackup(ctx context.Context, args []string) error {
	fs := m.flags("backup")
	data := fs.String("data", "", "data directory")
	out := fs.String("out", "", "directory to write the backup to (must not hold one already)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return usageError("backup: --out is required")
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	ids, err := s.TenantIDs()
	if err != nil {
		return err
	}
	start := time.Now()
	for i, id := range ids {
		t, err := s.Tenant(ctx, id)
		if err != nil {
			return err
		}
		size, err := t.Size(ctx)
		if err != nil {
			return err
		}
		dst := filepath.Join(*out, "tenants", id, "central.db")
		label := fmt.Sprintf("[%d/%d] tenant %s", i+1, len(ids), id)
		stop := m.progress(label, dst, size)
		err = t.Backup(ctx, dst)
		stop()
		if err != nil {
			return err
		}
		info, _ := os.Stat(dst)
		fmt.Fprintf(m.Stderr, "%s: %s, integrity_check ok\n", label, mib(info.Size()))
	}
	fmt.Fprintf(m.Stdout, "backup of %d tenants in %s (%s)\n", len(ids), *out, time.Since(start).Round(time.Millisecond))
	return nil
}

// runRestore puts tenant databases from a backup made by runBackup back
// into a data directory.
func (m *Main) runRestore(ctx context.Context, args []string) error {
	fs := m.flags("restore")
	from := fs.String("from", "", "backup directory (made by therasync backup)")
	data := fs.String("data", "", "data directory to restore into; stop syncd and worker first")
	tenant := fs.String("tenant", "", "restore only this tenant")
	force := fs.Bool("force", false, "replace tenants that exist in the data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" {
		return usageError("restore: --from is required")
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	pattern := filepath.Join(*from, "tenants", "*", "central.db")
	if *tenant != "" {
		pattern = filepath.Join(*from, "tenants", *tenant, "central.db")
	}
	files, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("restore: no tenant backup matches %s", pattern)
	}
	for i, f := range files {
		id, err := s.Restore(ctx, f, *force)
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "[%d/%d] tenant %s restored, integrity_check ok\n", i+1, len(files), id)
	}
	fmt.Fprintf(m.Stdout, "restored %d tenants into %s\n", len(files), *data)
	return nil
}

// progress prints, every half second until stopped, how much of about total
// bytes the file at path holds.
func (m *Main) progress(label, path string, total int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if info, err := os.Stat(path); err == nil && total > 0 {
					fmt.Fprintf(m.Stderr, "%s: %3.0f%% (%s of about %s)\n", label, min(100, 100*float64(info.Size())/float64(total)), mib(info.Size()), mib(total))
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
