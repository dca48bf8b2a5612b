package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/therasync/therasync/store"
)

// TypeCompact compacts one tenant's change log; payload CompactPayload.
const TypeCompact = "maintenance:compact"

// CompactPayload is the payload of a TypeCompact task.
type CompactPayload struct {
	Tenant string `json:"tenant"`
}

// compactDue enqueues the compaction of tenant t when the worker keeps a
// retention and no compaction of t was claimed within CompactEvery (by
// any worker).
func (s *Server) compactDue(ctx context.Context, t *store.Tenant) error {
	if s.cfg.ChangeRetention <= 0 {
		return nil
	}
	claimed, err := t.ClaimCompaction(ctx, s.cfg.CompactEvery)
	if err != nil || !claimed {
		return err
	}
	payload, err := json.Marshal(CompactPayload{Tenant: t.ID()})
	if err != nil {
		return fmt.Errorf("enqueue compaction: %w", err)
	}
	// One at a time per tenant; not retried: the next claim comes within
	// CompactEvery, and a run that stopped halfway left a valid log.
	_, err = s.queue.client.EnqueueContext(ctx, asynq.NewTask(TypeCompact, payload), asynq.Queue(QueueDefault),
		asynq.Unique(s.cfg.CompactEvery), asynq.MaxRetry(0), asynq.Timeout(time.Hour))
	if err != nil && !errors.Is(err, asynq.ErrDuplicateTask) {
		return fmt.Errorf("enqueue compaction: %w", err)
	}
	return nil
}

// handleCompact compacts one tenant's change log with the worker's
// retention.
func (s *Server) handleCompact(ctx context.Context, task *asynq.Task) error {
	var p CompactPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		return fmt.Errorf("compaction: bad payload: %v: %w", err, asynq.SkipRetry)
	}
	if s.cfg.ChangeRetention <= 0 {
		return nil // this worker keeps every change
	}
	t, err := s.cfg.Store.Tenant(ctx, p.Tenant)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	begin := time.Now()
	res, err := t.Compact(ctx, s.cfg.ChangeRetention)
	s.metrics.compactedChanges.Add(float64(res.Dropped))
	if err != nil {
		s.metrics.compactions.WithLabelValues("failed").Inc()
		s.log.Error("compaction failed", "tenant", p.Tenant, "err", err)
		return err
	}
	s.metrics.compactions.WithLabelValues("done").Inc()
	if res.Vacuum == "deferred" {
		s.log.Warn("compaction left the space of a large database made before compaction existed to a VACUUM: run `therasync compact` at a quiet hour (writes wait for it)",
			"tenant", p.Tenant, "bytes", res.BytesAfter)
	}
	s.log.Info("compacted", "tenant", p.Tenant, "horizon", res.Horizon, "compacted_to", res.CompactedTo,
		"dropped", res.Dropped, "rewritten", res.Rewritten, "batches_dropped", res.BatchesDropped,
		"mutations_dropped", res.MutationsDropped, "bytes_before", res.BytesBefore, "bytes_after", res.BytesAfter,
		"vacuum", res.Vacuum, "dur_ms", time.Since(begin).Milliseconds())
	return nil
}
