package main

import (
	"context"
	"fmt"
	"time"

	"github.com/therasync/therasync/cmd/internal/daemon"
	"github.com/therasync/therasync/store"
)

// runCompact compacts the change log of every tenant of a data directory,
// or of one, while syncd and the worker may run: the worker's periodic job
// at once, with the retention given or the worker's (CHANGE_RETENTION),
// and the VACUUM the worker defers for big databases made before
// compaction existed.
func (m *Main) runCompact(ctx context.Context, args []string) error {
	fs := m.flags("compact")
	data := fs.String("data", "", "data directory")
	tenant := fs.String("tenant", "", "compact only this tenant")
	vacuum := fs.Bool("vacuum", true, "VACUUM a database made before compaction existed that is too big for the worker to (writes wait meanwhile)")
	retention := daemon.DefaultChangeRetention
	if v := m.Getenv("CHANGE_RETENTION"); v != "" {
		var err error
		if retention, err = daemon.ParseRetention(v); err != nil {
			return fmt.Errorf("CHANGE_RETENTION: %w", err)
		}
	}
	fs.Func("retention", "keep the changes of this long, e.g. 90d or 36h; 0 keeps all (default CHANGE_RETENTION or 90d)", func(s string) error {
		var err error
		retention, err = daemon.ParseRetention(s)
		return err
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("compact: unexpected argument " + fs.Arg(0))
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	if retention == 0 {
		fmt.Fprintln(m.Stdout, "retention 0 keeps every change: nothing compacted")
		return nil
	}
	ids := []string{*tenant}
	if *tenant == "" {
		if ids, err = s.TenantIDs(); err != nil {
			return err
		}
	}
	start := time.Now()
	var dropped int64
	for i, id := range ids {
		t, err := s.Tenant(ctx, id)
		if err != nil {
			return fmt.Errorf("compact tenant %s: %w", id, err)
		}
		begin := time.Now()
		res, err := t.Compact(ctx, retention)
		if err != nil {
			return err
		}
		if res.Vacuum == "deferred" && *vacuum {
			fmt.Fprintf(m.Stderr, "tenant %s: VACUUM of the %s file, converting it to incremental auto-vacuum (writes wait) …\n", id, mib(res.BytesAfter))
			vb := time.Now()
			if err := t.Vacuum(ctx); err != nil {
				return err
			}
			fmt.Fprintf(m.Stderr, "tenant %s: VACUUM took %s\n", id, time.Since(vb).Round(time.Millisecond))
			if res.BytesAfter, err = t.Size(ctx); err != nil {
				return err
			}
			res.Vacuum = "full"
		}
		dropped += res.Dropped
		fmt.Fprintf(m.Stdout, "[%d/%d] tenant %s: %s in %s\n", i+1, len(ids), id, compactSummary(res), time.Since(begin).Round(time.Millisecond))
	}
	fmt.Fprintf(m.Stdout, "compacted %d tenants, %d changes dropped, in %s\n", len(ids), dropped, time.Since(start).Round(time.Millisecond))
	return nil
}

// compactSummary says in a line what a compaction did.
func compactSummary(r store.CompactResult) string {
	horizon := "nothing older than the retention"
	if r.Horizon > 0 {
		horizon = fmt.Sprintf("horizon %d", r.Horizon)
	}
	vacuum := ""
	if r.Vacuum != "" {
		vacuum = " (" + r.Vacuum + " vacuum)"
	}
	return fmt.Sprintf("%s, compacted_to %d, %d changes dropped, %d rewritten, %d batch and %d mutation ids forgotten, %s → %s%s",
		horizon, r.CompactedTo, r.Dropped, r.Rewritten, r.BatchesDropped, r.MutationsDropped, mib(r.BytesBefore), mib(r.BytesAfter), vacuum)
}
