// Package worker runs Therasync's background jobs: an Asynq server that
// processes queued tasks. Task handlers register on its mux (the shard
// builds, access-code mail and periodic jobs of DESIGN §1 arrive with the
// issues that build them).
package worker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// The queues the worker serves, with their priorities.
const (
	QueueCritical = "critical"
	QueueDefault  = "default"
)

// Config configures a Server.
type Config struct {
	// Redis is the Asynq connection; required.
	Redis asynq.RedisConnOpt
	// Concurrency is the number of tasks processed at once; zero means 4.
	Concurrency int
	// TaskCheckInterval is how often idle workers look for new tasks; zero
	// means 100ms, which keeps enqueue-to-start latency low.
	TaskCheckInterval time.Duration
	// ShutdownTimeout is how long Shutdown waits for running tasks; zero
	// means 10s.
	ShutdownTimeout time.Duration
	// Logger receives the worker's logs; nil discards.
	Logger *slog.Logger
}

// Server is the worker process's Asynq server.
type Server struct {
	srv *asynq.Server
	mux *asynq.ServeMux
}

// New returns a Server for cfg; it processes nothing until Start.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil {
		return nil, fmt.Errorf("worker: no Redis connection configured")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 100 * time.Millisecond
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := asynq.NewServer(cfg.Redis, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{QueueCritical: 6, QueueDefault: 3},
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: time.Second,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
	})
	return &Server{srv: srv, mux: asynq.NewServeMux()}, nil
}

// Handle registers the handler of one task type. Call it before Start.
func (s *Server) Handle(taskType string, h asynq.Handler) { s.mux.Handle(taskType, h) }

// Start connects to Redis and starts processing tasks in the background.
func (s *Server) Start() error {
	if err := s.srv.Start(s.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks and waits for running ones, up to the
// configured ShutdownTimeout.
func (s *Server) Shutdown() { s.srv.Shutdown() }

// asynqLogger adapts slog to Asynq's logger.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal is called by Asynq only for unrecoverable errors; it logs them like
// Error and leaves the decision to exit to the caller.
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
