// Package worker runs Therasync's background jobs on Asynq: shard builds,
// and the periodic jobs that keep every app-enabled account's shard built
// (a reconcile of due builds and the weekly rebuild of outdated shards)
// and compact the change logs.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/therasync/therasync/internal/seal"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
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
	// Store is the central store over the data directory; nil means the
	// server runs only the handlers added with Handle (no shard jobs).
	Store *store.Store
	// Concurrency is the number of tasks processed at once; zero means 4.
	Concurrency int
	// TaskCheckInterval is how often idle workers look for new tasks; zero
	// means 100ms, which keeps enqueue-to-start latency low.
	TaskCheckInterval time.Duration
	// TickInterval is how often the periodic jobs run; zero means 30s.
	TickInterval time.Duration
	// ShutdownTimeout is how long Shutdown waits for running tasks; zero
	// means 10s.
	ShutdownTimeout time.Duration
	// Logger receives the worker's logs; nil discards.
	Logger *slog.Logger
	// Registry receives the worker's metrics; nil registers none.
	Registry prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Codes issues the access code of an activation's mail (DESIGN §5:
	// enabling the app sends the code once the shard is built); nil sends
	// none (the practice's POST access-code still does).
	Codes CodeIssuer
	// Secret is the server's secret (at least 32 bytes) that seals access
	// codes in mail tasks; required with a Store.
	Secret []byte
	// SMTPURL sends mail through an SMTP server; empty writes every mail as
	// an .eml file into OutboxDir instead.
	SMTPURL string
	// OutboxDir receives mails when SMTPURL is empty; empty means
	// DATA/outbox.
	OutboxDir string
	// MailFrom is the sender of mails; empty means
	// "Therasync <noreply@therasync.invalid>".
	MailFrom string
	// ChangeRetention is how long the change log keeps changes before the
	// periodic compaction folds them (DESIGN §2); zero keeps every change.
	ChangeRetention time.Duration
	// CompactEvery is how often a tenant is compacted at most; zero means
	// an hour.
	CompactEvery time.Duration
}

// CodeIssuer issues access codes; authcode.Store is one.
type CodeIssuer interface {
	Issue(ctx context.Context, tenant, account, email string) (code string, expires time.Time, err error)
	TTL() time.Duration
}

// Server is the worker process's Asynq server and scheduler.
type Server struct {
	cfg       Config
	log       *slog.Logger
	srv       *asynq.Server
	scheduler *asynq.Scheduler
	mux       *asynq.ServeMux
	queue     *Queue
	builder   *shardbuilder.Builder
	metrics   *metrics
	mailer    mailer
	mailBox   *seal.Box
}

// New returns a Server for cfg; it processes nothing until Start.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil {
		return nil, fmt.Errorf("worker: no Redis connection configured")
	}
	cfg = withDefaults(cfg)
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		srv:     newAsynqServer(cfg),
		mux:     asynq.NewServeMux(),
		metrics: newMetrics(cfg.Registry),
	}
	if cfg.Store != nil {
		if err := s.addStoreJobs(cfg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// withDefaults returns cfg with its zero settings replaced by the defaults
// documented on Config.
func withDefaults(cfg Config) Config {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 100 * time.Millisecond
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 30 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MailFrom == "" {
		cfg.MailFrom = "Therasync <noreply@therasync.invalid>"
	}
	if cfg.CompactEvery <= 0 {
		cfg.CompactEvery = time.Hour
	}
	return cfg
}

// newAsynqServer returns the Asynq server that processes the queues with
// cfg's concurrency, intervals and logger.
func newAsynqServer(cfg Config) *asynq.Server {
	return asynq.NewServer(cfg.Redis, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{QueueCritical: 6, QueueDefault: 3},
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: time.Second,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		RetryDelayFunc:           retryDelay,
		Logger:                   asynqLogger{cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
	})
}

// addStoreJobs sets up the jobs over cfg.Store: the mail seal and mailer,
// the queue, the shard builder, the handlers of shard builds, ticks and
// mails, and the scheduler of the periodic tick.
func (s *Server) addStoreJobs(cfg Config) error {
	var err error
	if s.mailBox, err = seal.New(cfg.Secret, "mail"); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if s.mailer, err = newMailer(cfg); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if s.queue, err = NewQueue(cfg.Redis, cfg.Secret); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	s.builder = shardbuilder.New(cfg.Store.Dir(), cfg.Now)
	s.mux.HandleFunc(TypeShardBuild, s.handleBuild)
	s.mux.HandleFunc(TypeTick, s.handleTick)
	s.mux.HandleFunc(TypeMail, s.handleMail)
	s.mux.HandleFunc(TypeCompact, s.handleCompact)
	s.scheduler, err = newScheduler(cfg)
	return err
}

// newScheduler returns the scheduler that enqueues the periodic tick every
// cfg.TickInterval.
func newScheduler(cfg Config) (*asynq.Scheduler, error) {
	sch := asynq.NewScheduler(cfg.Redis, &asynq.SchedulerOpts{
		Logger:   asynqLogger{cfg.Logger},
		LogLevel: asynq.WarnLevel,
		EnqueueErrorHandler: func(_ *asynq.Task, _ []asynq.Option, err error) {
			if !errors.Is(err, asynq.ErrDuplicateTask) {
				cfg.Logger.Error("schedule periodic jobs", "err", err)
			}
		},
	})
	every := fmt.Sprintf("@every %s", cfg.TickInterval)
	// Every worker process runs a scheduler; Unique lets one pending tick
	// through at a time (Asynq's minimum is 1s). The jobs are idempotent
	// either way: the store arbitrates the weekly run.
	if _, err := sch.Register(every, asynq.NewTask(TypeTick, nil), asynq.Queue(QueueCritical),
		asynq.Unique(max(cfg.TickInterval*9/10, time.Second)), asynq.MaxRetry(0)); err != nil {
		return nil, fmt.Errorf("worker: schedule tick: %w", err)
	}
	return sch, nil
}

// retryDelay backs a failed task off exponentially: 10s, 20s, 40s … up to
// 10 minutes. A build asked for again meanwhile runs at once (EnqueueBuild).
func retryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	d := 10 * time.Second << min(max(n-1, 0), 6)
	return min(d, 10*time.Minute)
}

// Handle registers the handler of one task type. Call it before Start.
func (s *Server) Handle(taskType string, h asynq.Handler) { s.mux.Handle(taskType, h) }

// Start connects to Redis and starts processing tasks and scheduling the
// periodic jobs in the background.
func (s *Server) Start() error {
	if err := s.srv.Start(s.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	if s.scheduler != nil {
		if err := s.scheduler.Start(); err != nil {
			s.srv.Shutdown()
			return fmt.Errorf("start scheduler: %w", err)
		}
	}
	return nil
}

// Shutdown stops scheduling and taking tasks, and waits for running ones up
// to the configured ShutdownTimeout.
func (s *Server) Shutdown() error {
	if s.scheduler != nil {
		s.scheduler.Shutdown()
	}
	s.srv.Shutdown()
	if s.queue != nil {
		return s.queue.Close()
	}
	return nil
}

// asynqLogger adapts slog to Asynq's logger.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal is called by Asynq only for unrecoverable errors; it logs them like
// Error and leaves the decision to exit to the caller.
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// metrics are the worker's Prometheus metrics.
type metrics struct {
	builds           *prometheus.CounterVec
	duration         prometheus.Histogram
	rows             prometheus.Counter
	compactions      *prometheus.CounterVec
	compactedChanges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "therasync_shard_builds_total",
			Help: "Shard build tasks by result: built, up_to_date (skipped), skipped (account gone or disabled), failed.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "therasync_shard_build_duration_seconds",
			Help:    "Duration of shard builds that wrote a file.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "therasync_shard_rows_written_total",
			Help: "Entity rows written into shard files.",
		}),
		compactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "therasync_compactions_total",
			Help: "Compactions of a tenant's change log by result: done, failed.",
		}, []string{"result"}),
		compactedChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "therasync_compacted_changes_total",
			Help: "Changes dropped from change logs by compaction.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.builds, m.duration, m.rows, m.compactions, m.compactedChanges)
	}
	return m
}

var errNoStore = errors.New("worker has no store")
