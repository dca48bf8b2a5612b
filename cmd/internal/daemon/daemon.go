// Package daemon wires the store, Redis, syncd and the worker into the
// processes that the binaries run: cmd/syncd, cmd/worker and the all-in-one
// `therasync dev` share it, and cmd/syncd and cmd/worker share its Main.
package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
	"github.com/therasync/therasync/worker"
)

// Config is the configuration shared by the processes. Each field names its
// flag and environment variable; a flag overrides the environment.
type Config struct {
	Addr            string        // ADDR / -addr: syncd's listen address
	DataDir         string        // DATA_DIR / -data: the data directory
	RedisURL        string        // REDIS_URL / -redis: redis://[user:pass@]host:port/db
	LogLevel        string        // LOG_LEVEL / -log-level: debug, info, warn, error
	MaxBodyBytes    int64         // MAX_BODY_BYTES / -max-body: request body limit
	ReadTimeout     time.Duration // READ_TIMEOUT / -read-timeout: reading a whole request (a practice push)
	BodyReadTimeout time.Duration // BODY_READ_TIMEOUT / -body-read-timeout: reading a small body (login, logout, …)
	ShutdownTimeout time.Duration // SHUTDOWN_TIMEOUT / -shutdown-timeout: the one deadline of a shutdown
	Concurrency     int           // WORKER_CONCURRENCY / -concurrency: tasks run at once by a worker
	TickInterval    time.Duration // TICK_INTERVAL / -tick: how often the worker runs its periodic jobs
	ChangeRetention time.Duration // CHANGE_RETENTION / -change-retention: how long changes stay before compaction; 0 keeps all
	Secret          string        // SECRET: hex, at least 32 bytes; keys code HMACs and seals secrets (required)
	CodeDigits      int           // CODE_DIGITS / -code-digits: digits of an access code, 6 to 10
	SMTPURL         string        // SMTP_URL: smtp://user:pass@host:port; empty writes mails to DATA/outbox
	MailFrom        string        // MAIL_FROM: the sender of mails
	// The limits of live connections, per syncd process.
	MaxSocketsPerDevice  int           // MAX_SOCKETS_PER_DEVICE / -max-sockets-per-device: a new one replaces the oldest
	MaxSocketsPerAccount int           // MAX_SOCKETS_PER_ACCOUNT / -max-sockets-per-account: more are refused with 429
	UpgradesPerMinute    int           // UPGRADES_PER_MINUTE / -upgrades-per-minute: a device's connection rate (after a burst of 10)
	AccessRecheck        time.Duration // ACCESS_RECHECK / -access-recheck: how often live connections' access is read again

	// envErrs are the environment variables that did not parse.
	envErrs []error
}

// SecretBytes returns the decoded SECRET.
func (c Config) SecretBytes() []byte {
	b, _ := hex.DecodeString(c.Secret)
	return b
}

// DefaultConfig returns the defaults, overridden by the environment.
func DefaultConfig(getenv func(string) string) Config {
	c := Config{
		Addr:            "127.0.0.1:8080",
		DataDir:         "./data",
		RedisURL:        "redis://127.0.0.1:6379/0",
		LogLevel:        "info",
		MaxBodyBytes:    syncd.DefaultMaxBodyBytes,
		ReadTimeout:     syncd.DefaultReadTimeout,
		BodyReadTimeout: syncd.DefaultBodyReadTimeout,
		ShutdownTimeout: 15 * time.Second,
		Concurrency:     4,
		TickInterval:    30 * time.Second,
		ChangeRetention: DefaultChangeRetention,
		CodeDigits:      6,
		MailFrom:        "Therasync <noreply@therasync.invalid>",

		MaxSocketsPerDevice:  syncd.DefaultMaxSocketsPerDevice,
		MaxSocketsPerAccount: syncd.DefaultMaxSocketsPerAccount,
		UpgradesPerMinute:    syncd.DefaultUpgradesPerMinute,
		AccessRecheck:        syncd.DefaultAccessRecheck,
	}
	env := func(name string, set func(string)) {
		if v := getenv(name); v != "" {
			set(v)
		}
	}
	// A value that does not parse is reported with its variable, the value
	// and why, and leaves the default in place: Validate then reports that
	// error alone, not a range check of a zero nobody wrote.
	envInt := func(name string, p *int) {
		env(name, func(v string) {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: not a whole number (%s)", name, v, numError(err)))
				return
			}
			*p = n
		})
	}
	envDuration := func(name string, p *time.Duration) {
		env(name, func(v string) {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: not a duration with a unit, such as 500ms, 2s, 5m or 1h", name, v))
				return
			}
			*p = d
		})
	}
	env("ADDR", func(v string) { c.Addr = v })
	env("DATA_DIR", func(v string) { c.DataDir = v })
	env("REDIS_URL", func(v string) { c.RedisURL = v })
	env("LOG_LEVEL", func(v string) { c.LogLevel = v })
	env("MAX_BODY_BYTES", func(v string) {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("MAX_BODY_BYTES=%q: not a whole number of bytes (%s); write 16 MiB as 16777216", v, numError(err)))
			return
		}
		c.MaxBodyBytes = n
	})
	envDuration("READ_TIMEOUT", &c.ReadTimeout)
	envDuration("BODY_READ_TIMEOUT", &c.BodyReadTimeout)
	envDuration("SHUTDOWN_TIMEOUT", &c.ShutdownTimeout)
	envInt("WORKER_CONCURRENCY", &c.Concurrency)
	envDuration("TICK_INTERVAL", &c.TickInterval)
	env("CHANGE_RETENTION", func(v string) {
		d, err := ParseRetention(v)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("CHANGE_RETENTION=%q: %w", v, err))
			return
		}
		c.ChangeRetention = d
	})
	env("SECRET", func(v string) { c.Secret = v })
	envInt("CODE_DIGITS", &c.CodeDigits)
	env("SMTP_URL", func(v string) { c.SMTPURL = v })
	env("MAIL_FROM", func(v string) { c.MailFrom = v })
	envInt("MAX_SOCKETS_PER_DEVICE", &c.MaxSocketsPerDevice)
	envInt("MAX_SOCKETS_PER_ACCOUNT", &c.MaxSocketsPerAccount)
	envInt("UPGRADES_PER_MINUTE", &c.UpgradesPerMinute)
	envDuration("ACCESS_RECHECK", &c.AccessRecheck)
	return c
}

// numError says why strconv refused a number: out of range, or not
// digits at all.
func numError(err error) string {
	if errors.Is(err, strconv.ErrRange) {
		return "out of range"
	}
	return "only digits are allowed"
}

// RegisterFlags registers the flags of the fields the process uses: any of
// "addr", "data", "redis", "log-level", "max-body", "read-timeout",
// "body-read-timeout", "shutdown-timeout", "concurrency", "tick",
// "change-retention", "code-digits", "live-limits" (the four limits of
// live connections).
func (c *Config) RegisterFlags(fs *flag.FlagSet, names ...string) {
	for _, n := range names {
		switch n {
		case "addr":
			fs.StringVar(&c.Addr, n, c.Addr, "listen address (env ADDR)")
		case "data":
			fs.StringVar(&c.DataDir, n, c.DataDir, "data directory (env DATA_DIR)")
		case "redis":
			fs.StringVar(&c.RedisURL, n, c.RedisURL, "Redis URL (env REDIS_URL)")
		case "log-level":
			fs.StringVar(&c.LogLevel, n, c.LogLevel, "log level: debug, info, warn, error (env LOG_LEVEL)")
		case "max-body":
			fs.Int64Var(&c.MaxBodyBytes, n, c.MaxBodyBytes, "request body limit in bytes (env MAX_BODY_BYTES)")
		case "read-timeout":
			fs.DurationVar(&c.ReadTimeout, n, c.ReadTimeout, "how long reading a whole request, a practice push included, may take (env READ_TIMEOUT)")
		case "body-read-timeout":
			fs.DurationVar(&c.BodyReadTimeout, n, c.BodyReadTimeout, "how long the small body of a login, logout, revoke, … may take to arrive (env BODY_READ_TIMEOUT)")
		case "shutdown-timeout":
			fs.DurationVar(&c.ShutdownTimeout, n, c.ShutdownTimeout, "deadline of a graceful shutdown (env SHUTDOWN_TIMEOUT)")
		case "concurrency":
			fs.IntVar(&c.Concurrency, n, c.Concurrency, "tasks a worker runs at once (env WORKER_CONCURRENCY)")
		case "code-digits":
			fs.IntVar(&c.CodeDigits, n, c.CodeDigits, "digits of an access code, 6 to 10 (env CODE_DIGITS)")
		case "tick":
			fs.DurationVar(&c.TickInterval, n, c.TickInterval, "how often the worker runs its periodic jobs (env TICK_INTERVAL)")
		case "change-retention":
			fs.Var(retentionFlag{&c.ChangeRetention}, n, "how long the change log keeps changes before compaction folds them, e.g. 90d or 720h; 0 keeps all (env CHANGE_RETENTION)")
		case "live-limits":
			fs.IntVar(&c.MaxSocketsPerDevice, "max-sockets-per-device", c.MaxSocketsPerDevice, "live connections of one device; a new one replaces the oldest (env MAX_SOCKETS_PER_DEVICE)")
			fs.IntVar(&c.MaxSocketsPerAccount, "max-sockets-per-account", c.MaxSocketsPerAccount, "live connections of one account's devices; more are refused (env MAX_SOCKETS_PER_ACCOUNT)")
			fs.IntVar(&c.UpgradesPerMinute, "upgrades-per-minute", c.UpgradesPerMinute, "live connections a device opens a minute, after a burst of 10 (env UPGRADES_PER_MINUTE)")
			fs.DurationVar(&c.AccessRecheck, "access-recheck", c.AccessRecheck, "how often live connections' access is read again (env ACCESS_RECHECK)")
		default:
			panic("daemon: unknown flag " + n)
		}
	}
}

// Validate reports every invalid setting, joined in one error.
func (c Config) Validate() error {
	errs := append([]error(nil), c.envErrs...)
	if c.Addr == "" {
		errs = append(errs, errors.New("ADDR is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("DATA_DIR is empty"))
	}
	if _, err := redis.ParseURL(c.RedisURL); err != nil {
		errs = append(errs, fmt.Errorf("REDIS_URL: %w", err))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("MAX_BODY_BYTES must be at least 1024, got %d", c.MaxBodyBytes))
	}
	if c.ReadTimeout < time.Second {
		errs = append(errs, fmt.Errorf("READ_TIMEOUT must be at least 1s, got %s", c.ReadTimeout))
	}
	if c.BodyReadTimeout < 100*time.Millisecond || c.BodyReadTimeout > c.ReadTimeout {
		errs = append(errs, fmt.Errorf("BODY_READ_TIMEOUT must be at least 100ms and at most READ_TIMEOUT (%s), got %s", c.ReadTimeout, c.BodyReadTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT must be a positive duration such as 15s"))
	}
	if b, err := hex.DecodeString(c.Secret); err != nil || len(b) < 32 {
		errs = append(errs, errors.New("SECRET must be at least 32 bytes in hex (64 hex digits), e.g. from: openssl rand -hex 32"))
	}
	if c.CodeDigits < 6 || c.CodeDigits > 10 {
		errs = append(errs, fmt.Errorf("CODE_DIGITS must be between 6 and 10, got %d", c.CodeDigits))
	}
	if c.TickInterval < time.Second {
		errs = append(errs, fmt.Errorf("TICK_INTERVAL must be at least 1s, got %s", c.TickInterval))
	}
	if c.ChangeRetention != 0 && c.ChangeRetention < MinChangeRetention {
		errs = append(errs, fmt.Errorf("CHANGE_RETENTION must be 0 (keep all) or at least %s, got %s", MinChangeRetention, c.ChangeRetention))
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY must be between 1 and 256, got %d", c.Concurrency))
	}
	if c.MaxSocketsPerDevice < 1 {
		errs = append(errs, fmt.Errorf("MAX_SOCKETS_PER_DEVICE must be at least 1, got %d", c.MaxSocketsPerDevice))
	}
	if c.MaxSocketsPerAccount < 1 {
		errs = append(errs, fmt.Errorf("MAX_SOCKETS_PER_ACCOUNT must be at least 1, got %d", c.MaxSocketsPerAccount))
	}
	if c.UpgradesPerMinute < 1 {
		errs = append(errs, fmt.Errorf("UPGRADES_PER_MINUTE must be at least 1, got %d", c.UpgradesPerMinute))
	}
	if c.AccessRecheck < 100*time.Millisecond || c.AccessRecheck > time.Minute {
		errs = append(errs, fmt.Errorf("ACCESS_RECHECK must be between 100ms and 1m, got %s", c.AccessRecheck))
	}
	return errors.Join(errs...)
}

// The change log's retention (DESIGN §2): the default, and the shortest a
// worker accepts (a device offline for longer than the retention must
// download its shard again; shorter ones are for `therasync compact`).
const (
	DefaultChangeRetention = 90 * 24 * time.Hour
	MinChangeRetention     = time.Hour
)

// ParseRetention parses a retention: a whole number of days ("90d") or a
// Go duration ("720h", "0"). Negative ones are refused.
func ParseRetention(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("want days such as 90d or a duration such as 720h, got %q", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("want days such as 90d or a duration such as 720h, got %q", s)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("want a retention of 0 or more, got %q", s)
	}
	return d, nil
}

// retentionFlag is a flag of a retention (ParseRetention).
type retentionFlag struct{ p *time.Duration }

func (f retentionFlag) String() string {
	if f.p == nil {
		return ""
	}
	if *f.p%(24*time.Hour) == 0 && *f.p != 0 {
		return fmt.Sprintf("%dd", *f.p/(24*time.Hour))
	}
	return f.p.String()
}

func (f retentionFlag) Set(s string) error {
	d, err := ParseRetention(s)
	if err != nil {
		return err
	}
	*f.p = d
	return nil
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL: want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// NewLogger returns a JSON logger at the configured level.
func NewLogger(w io.Writer, level string) *slog.Logger {
	l, _ := ParseLevel(level)
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// Syncd is a running syncd: the store, a Redis client and the HTTP server.
type Syncd struct {
	Store  *store.Store
	Server *syncd.Server
	redis  *redis.Client
	queue  *worker.Queue
}

// StartSyncd opens the store, connects to Redis and starts serving.
func StartSyncd(ctx context.Context, c Config, log *slog.Logger) (*Syncd, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	aopt, err := asynq.ParseRedisURI(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	st, err := store.Open(c.DataDir, store.Options{})
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	codes, err := authcode.New(authcode.Config{Redis: rdb, Secret: c.SecretBytes(), Digits: c.CodeDigits})
	if err != nil {
		rdb.Close()
		st.Close()
		return nil, err
	}
	q, err := worker.NewQueue(aopt, c.SecretBytes())
	if err != nil {
		rdb.Close()
		st.Close()
		return nil, err
	}
	s := &Syncd{Store: st, redis: rdb, queue: q}
	s.Server = syncd.New(syncd.Config{
		Store:           st,
		Builds:          s.queue,
		Mail:            s.queue,
		Codes:           codes,
		Redis:           rdb,
		Secret:          c.SecretBytes(),
		Logger:          log,
		Registry:        prometheus.NewRegistry(),
		MaxBodyBytes:    c.MaxBodyBytes,
		ReadTimeout:     c.ReadTimeout,
		BodyReadTimeout: c.BodyReadTimeout,

		MaxSocketsPerDevice:  c.MaxSocketsPerDevice,
		MaxSocketsPerAccount: c.MaxSocketsPerAccount,
		UpgradesPerMinute:    c.UpgradesPerMinute,
		AccessRecheck:        c.AccessRecheck,
		Checks: map[string]func(context.Context) error{
			"redis": func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			"data": func(ctx context.Context) error {
				_, err := os.Stat(c.DataDir)
				return err
			},
		},
	})
	if err := s.Server.Open(c.Addr); err != nil {
		s.Close(ctx)
		return nil, err
	}
	log.Info("syncd listening", "addr", s.Server.Addr(), "data", c.DataDir)
	return s, nil
}

// Close shuts the server down under ctx's deadline, then closes Redis and
// the store: the reverse of the start order.
func (s *Syncd) Close(ctx context.Context) error {
	var errs []error
	if s.Server != nil {
		errs = append(errs, s.Server.Close(ctx))
	}
	errs = append(errs, s.queue.Close(), s.redis.Close(), s.Store.Close())
	return errors.Join(errs...)
}

// Worker is a running worker process: the store and the Asynq server.
type Worker struct {
	Server *worker.Server
	store  *store.Store  // the store it opened, if any
	redis  *redis.Client // the activation codes' Redis
}

// StartWorker starts the Asynq worker and scheduler on st, or, when st is
// nil, on a store of its own over the data directory (closed by Close).
func StartWorker(c Config, log *slog.Logger, st *store.Store) (*Worker, error) {
	opt, err := asynq.ParseRedisURI(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	own := st == nil
	if own {
		if st, err = store.Open(c.DataDir, store.Options{}); err != nil {
			return nil, err
		}
	}
	// The activation mails' codes (DESIGN §5), in the same Redis as syncd's.
	ropt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb := redis.NewClient(ropt)
	codes, err := authcode.New(authcode.Config{Redis: rdb, Secret: c.SecretBytes(), Digits: c.CodeDigits})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	w, err := worker.New(worker.Config{Redis: opt, Store: st, Concurrency: c.Concurrency, TickInterval: c.TickInterval,
		ShutdownTimeout: c.ShutdownTimeout, Logger: log, Secret: c.SecretBytes(), SMTPURL: c.SMTPURL, MailFrom: c.MailFrom,
		ChangeRetention: c.ChangeRetention, Codes: codes})
	if err == nil {
		err = w.Start()
	}
	if err != nil {
		rdb.Close()
		if own {
			st.Close()
		}
		return nil, err
	}
	log.Info("worker started", "concurrency", c.Concurrency, "data", c.DataDir, "change_retention", c.ChangeRetention.String())
	wk := &Worker{Server: w, redis: rdb}
	if own {
		wk.store = st
	}
	return wk, nil
}

// Close stops the worker, waiting for running tasks, then closes the store
// if it opened it.
func (w *Worker) Close() error {
	err := w.Server.Shutdown()
	err = errors.Join(err, w.redis.Close())
	if w.store != nil {
		err = errors.Join(err, w.store.Close())
	}
	return err
}
