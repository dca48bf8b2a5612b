package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/therasync/therasync/internal/seal"
)

// Task types.
const (
	// TypeShardBuild builds one account's shard; payload BuildPayload.
	TypeShardBuild = "shard:build"
	// TypeTick runs the periodic jobs: the reconcile of due builds, the
	// weekly rebuild of outdated shards and the compactions that are due.
	TypeTick = "maintenance:tick"
)

// BuildPayload is the payload of a TypeShardBuild task.
type BuildPayload struct {
	Tenant  string `json:"tenant"`
	Account string `json:"account"`
}

// Queue enqueues the worker's tasks: shard builds (one task per account at
// a time) and mails.
type Queue struct {
	client  *asynq.Client
	insp    *asynq.Inspector
	mailBox *seal.Box // seals access codes; nil without a secret
}

// NewQueue returns a Queue on the Redis connection opt. secret (the
// server's, at least 32 bytes) seals access codes in mail tasks; without it
// SendCode fails.
func NewQueue(opt asynq.RedisConnOpt, secret []byte) (*Queue, error) {
	q := &Queue{client: asynq.NewClient(opt), insp: asynq.NewInspector(opt)}
	if secret != nil {
		var err error
		if q.mailBox, err = seal.New(secret, "mail"); err != nil {
			q.Close()
			return nil, err
		}
	}
	return q, nil
}

// Close closes the Queue's Redis connections.
func (q *Queue) Close() error {
	return errors.Join(q.client.Close(), q.insp.Close())
}

// buildTaskID names the one build task an account can have at a time, so
// that concurrent requests for one account make one build.
func buildTaskID(tenant, account string) string {
	b, _ := json.Marshal([]string{tenant, account})
	return TypeShardBuild + ":" + string(b)
}

// EnqueueBuild enqueues the build of the account's shard. When the account
// already has a pending or running build, nothing is added; a build waiting
// to be retried after a failure is run at once instead.
func (q *Queue) EnqueueBuild(ctx context.Context, tenant, account string) error {
	payload, err := json.Marshal(BuildPayload{Tenant: tenant, Account: account})
	if err != nil {
		return fmt.Errorf("enqueue build: %w", err)
	}
	id := buildTaskID(tenant, account)
	task := asynq.NewTask(TypeShardBuild, payload, asynq.TaskID(id), asynq.Queue(QueueDefault),
		asynq.MaxRetry(12), asynq.Timeout(15*time.Minute))
	for attempt := 0; attempt < 3; attempt++ {
		_, err = q.client.EnqueueContext(ctx, task)
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			break
		}
		info, ierr := q.insp.GetTaskInfo(QueueDefault, id)
		if errors.Is(ierr, asynq.ErrTaskNotFound) {
			continue // finished in between: enqueue again
		}
		if ierr != nil {
			return fmt.Errorf("enqueue build: %w", ierr)
		}
		switch info.State {
		case asynq.TaskStatePending, asynq.TaskStateActive:
			return nil // one build is enough
		case asynq.TaskStateRetry, asynq.TaskStateScheduled:
			if err := q.insp.RunTask(QueueDefault, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return fmt.Errorf("enqueue build: run now: %w", err)
			}
			return nil
		default: // archived after its retries, or completed and retained
			if err := q.insp.DeleteTask(QueueDefault, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return fmt.Errorf("enqueue build: %w", err)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("enqueue build: %w", err)
	}
	return nil
}
