package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hibiken/asynq"

	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// handleBuild builds one account's shard unless it is up to date, records
// it, and clears the account's build request.
func (s *Server) handleBuild(ctx context.Context, task *asynq.Task) error {
	var p BuildPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		return fmt.Errorf("shard build: bad payload: %v: %w", err, asynq.SkipRetry)
	}
	res, err := s.build(ctx, p)
	s.metrics.builds.WithLabelValues(res).Inc()
	if err != nil {
		s.log.Error("shard build failed", "tenant", p.Tenant, "account", p.Account, "err", err)
		return err
	}
	return nil
}

func (s *Server) build(ctx context.Context, p BuildPayload) (result string, err error) {
	if s.cfg.Store == nil {
		return "failed", errNoStore
	}
	t, err := s.cfg.Store.Tenant(ctx, p.Tenant)
	if errors.Is(err, store.ErrNotFound) {
		return "skipped", nil
	}
	if err != nil {
		return "failed", err
	}
	started := t.BuildStarted()
	acc, err := t.Account(ctx, p.Account)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !acc.AppEnabled) {
		return "skipped", t.BuildDone(ctx, p.Account, started)
	}
	if err != nil {
		return "failed", err
	}
	seq, err := t.Seq(ctx)
	if err != nil {
		return "failed", err
	}
	if cur, err := t.LatestShard(ctx, p.Account); err == nil && cur.Seq >= seq &&
		cur.SchemaVersion == shardbuilder.SchemaVersion && cur.Role == acc.Role {
		// Current, unless its file is not what its record says (syncd
		// refuses to serve such a shard and asks for this build).
		err := shardbuilder.Verify(filepath.Join(s.cfg.Store.Dir(), cur.Path), cur.Size, cur.SHA256)
		if err == nil {
			s.activate(ctx, t, p.Account)
			return "up_to_date", t.BuildDone(ctx, p.Account, started)
		}
		s.log.Warn("rebuilding a current shard whose file does not match its record", "tenant", t.ID(), "account", p.Account, "seq", cur.Seq, "err", err)
	}
	begin := time.Now()
	b, err := s.buildCurrent(ctx, t, p.Account)
	if errors.Is(err, shardbuilder.ErrNoRole) || errors.Is(err, shardbuilder.ErrNoAccount) {
		return "skipped", t.BuildDone(ctx, p.Account, started)
	}
	if err != nil {
		return "failed", err
	}
	if err := t.RecordShard(ctx, store.Shard{AccountID: p.Account, Seq: b.Seq, History: b.History, Path: b.Path, Size: b.Size, SHA256: b.SHA256,
		Role: b.Role, SchemaVersion: b.SchemaVersion, BuiltAt: b.BuiltAt}); err != nil {
		return "failed", err
	}
	s.activate(ctx, t, p.Account)
	if err := t.BuildDone(ctx, p.Account, started); err != nil {
		return "failed", err
	}
	s.metrics.duration.Observe(time.Since(begin).Seconds())
	s.metrics.rows.Add(float64(b.Rows))
	s.log.Info("shard built", "tenant", t.ID(), "account", p.Account, "seq", b.Seq, "rows", b.Rows, "bytes", b.Size, "dur_ms", time.Since(begin).Milliseconds())
	return "built", nil
}

// buildAttempts is how often buildCurrent builds while erasures rewrite
// the log under it.
const buildAttempts = 3

// buildCurrent builds the account's shard and checks that the log's
// history is still the one it was built from: a shard built from a
// snapshot taken before an erasure may hold what the erasure removed, and
// its file may have landed after syncd removed the tenant's stale shard
// files. Such a file is removed and the shard built again.
func (s *Server) buildCurrent(ctx context.Context, t *store.Tenant, account string) (shardbuilder.Built, error) {
	for range buildAttempts {
		b, err := s.builder.Build(ctx, shardbuilder.Source{TenantID: t.ID(), Path: t.Path()}, account, store.KeepShards)
		if err != nil {
			return b, err
		}
		log, err := t.Log(ctx)
		if err != nil {
			return b, err
		}
		if log.History == b.History {
			return b, nil
		}
		if err := os.Remove(filepath.Join(s.cfg.Store.Dir(), b.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return b, fmt.Errorf("remove a shard of an old history: %w", err)
		}
	}
	return shardbuilder.Built{}, fmt.Errorf("shard build of %s: the log's history changed during %d builds", account, buildAttempts)
}

// handleTick runs the periodic jobs for every tenant: once a week (from
// Saturday 02:00, tenant time) it requests a build of every missing or
// outdated shard, every tick it enqueues every build the store says is
// due, so that builds lost from Redis are enqueued again, and at most once
// per CompactEvery it enqueues the tenant's compaction.
func (s *Server) handleTick(ctx context.Context, _ *asynq.Task) error {
	ids, err := s.cfg.Store.TenantIDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := s.tickTenant(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("periodic jobs failed", "err", err)
		return err
	}
	return nil
}

func (s *Server) tickTenant(ctx context.Context, id string) error {
	t, err := s.cfg.Store.Tenant(ctx, id)
	if err != nil {
		return err
	}
	st, err := t.Settings(ctx)
	if err != nil {
		return err
	}
	week := WeekStart(s.cfg.Now(), st.Location()).Format(time.RFC3339)
	claimed, err := t.ClaimWeekly(ctx, week)
	if err != nil {
		return err
	}
	if claimed {
		ids, err := t.RequestOutdatedBuilds(ctx, shardbuilder.SchemaVersion)
		if err != nil {
			return err
		}
		s.log.Info("weekly shard rebuild", "tenant", id, "week", week, "accounts", len(ids))
	}
	due, err := t.DueBuilds(ctx)
	if err != nil {
		return err
	}
	for _, a := range due {
		if err := s.queue.EnqueueBuild(ctx, id, a); err != nil {
			return err
		}
	}
	if err := s.activatePending(ctx, t); err != nil {
		return err
	}
	return s.compactDue(ctx, t)
}

// WeekStart returns the start of the rebuild week that now falls in: the
// latest Saturday 02:00 in loc at or before now.
func WeekStart(now time.Time, loc *time.Location) time.Time {
	t := now.In(loc)
	back := (int(t.Weekday()) - int(time.Saturday) + 7) % 7
	start := time.Date(t.Year(), t.Month(), t.Day()-back, 2, 0, 0, 0, loc)
	if start.After(t) {
		start = time.Date(t.Year(), t.Month(), t.Day()-back-7, 2, 0, 0, 0, loc)
	}
	return start
}
