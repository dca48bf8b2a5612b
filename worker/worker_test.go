package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/worker"
)

// TestServerRunsTasks starts the worker against a real Redis and checks that
// a task enqueued by a client is processed promptly and the server shuts
// down cleanly.
func TestServerRunsTasks(t *testing.T) {
	rs := redistest.Start(t)
	opt := asynq.RedisClientOpt{Addr: rs.Addr}
	w, err := worker.New(worker.Config{Redis: opt})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	done := make(chan struct{})
	w.Handle("test:ping", asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if ran.Add(1) == 1 {
			close(done)
		}
		return nil
	}))
	if err := w.Start(); err != nil {
		t.Fatalf("Start = %v", err)
	}
	defer w.Shutdown()
	c := asynq.NewClient(opt)
	defer c.Close()
	start := time.Now()
	if _, err := c.Enqueue(asynq.NewTask("test:ping", nil), asynq.Queue(worker.QueueDefault)); err != nil {
		t.Fatalf("Enqueue = %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("task not processed within 10s")
	}
	t.Logf("enqueue to done: %v", time.Since(start))
	if got := ran.Load(); got != 1 {
		t.Errorf("task ran %d times; want 1", got)
	}
}

func TestNewRefusesMissingRedis(t *testing.T) {
	if _, err := worker.New(worker.Config{}); err == nil {
		t.Errorf("New(no Redis) = nil error; want an error")
	}
}
