// Package syncd serves Therasync's HTTP and WebSocket API: the practice
// API, device login, shard download and logout, live sync over WebSocket
// (the frames of package wire), the check-in terminal page, health and
// metrics.
package syncd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/internal/seal"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// Defaults for Config's zero values.
const (
	DefaultMaxBodyBytes    = 16 << 20
	DefaultMaxBatchChanges = 10000
	DefaultMaxPullChanges  = 10000
	// DefaultMaxSocketsPerDevice is how many live connections one device
	// holds on one syncd: a phone reconnecting before its old socket timed
	// out needs two.
	DefaultMaxSocketsPerDevice = 2
	// DefaultMaxSocketsPerAccount is how many live connections one
	// account's devices hold on one syncd: a therapist's phones and
	// tablets.
	DefaultMaxSocketsPerAccount = 16
	// DefaultUpgradesPerMinute is how often one device may open a live
	// connection (after a burst of 10).
	DefaultUpgradesPerMinute = 30
	// DefaultAccessRecheck is how often each tenant's live connections'
	// access is read again from the store.
	DefaultAccessRecheck = 2 * time.Second
	DefaultStepUpWindow  = 15 * time.Minute
	// DefaultReadTimeout lets a practice push of DefaultMaxBodyBytes arrive
	// at about 140 KiB/s.
	DefaultReadTimeout        = 2 * time.Minute
	DefaultBodyReadTimeout    = 10 * time.Second
	DefaultAuditBuffer        = 4096
	DefaultAuditFlushInterval = time.Minute
)

// maxLoginBodyBytes caps the body of a device login: an email, a code and
// a device's id, name and platform.
const maxLoginBodyBytes = 4 << 10

// Config configures a Server.
type Config struct {
	// Store is the central store; required.
	Store *store.Store
	// Logger receives one line per request and every server error; nil
	// discards.
	Logger *slog.Logger
	// Registry receives the server's metrics and is served on /metrics; nil
	// means a new registry.
	Registry *prometheus.Registry
	// Builds enqueues shard builds for the worker; nil leaves builds
	// recorded in the store for the worker's reconcile to enqueue.
	Builds BuildQueue
	// Redis carries revocation events to every syncd, counts wrong step-up
	// codes and marks used ones; nil publishes nothing (devices are still
	// refused on their next request) and refuses every step-up.
	Redis redis.UniversalClient
	// Codes keeps access codes; nil refuses to send codes and log in.
	Codes *authcode.Store
	// Mail enqueues access-code and login-notice mails; nil sends none.
	Mail Mailer
	// Secret is the server's secret (at least 32 bytes): it seals TOTP
	// secrets at rest; nil refuses TOTP enrolment.
	Secret []byte
	// StepUpWindow is the period over which a tenant's wrong step-up
	// (TOTP) codes are counted, and how long its step-ups are refused after
	// too many; zero means DefaultStepUpWindow.
	StepUpWindow time.Duration
	// LiveWriteTimeout is how long a write to a live connection may take
	// before the device counts as too slow and is dropped; zero means 10s.
	LiveWriteTimeout time.Duration
	// Checks are run by /healthz, by name; each must return nil when healthy.
	Checks map[string]func(context.Context) error
	// MaxBodyBytes caps a request body; zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ReadTimeout bounds reading a whole request served by Open, headers
	// and body (a practice push of up to MaxBodyBytes); zero means
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	// BodyReadTimeout bounds, from when its handler starts, the arrival of
	// the body of every request but a practice push (device login and
	// logout, device revoke, access codes, …: a few KiB at most); zero means
	// DefaultBodyReadTimeout. It should not exceed ReadTimeout.
	BodyReadTimeout time.Duration
	// AuditBuffer is how many groups of failed-login and refused-write
	// audit lines may wait for their write; further ones are dropped and
	// counted (see auditWriter); zero means DefaultAuditBuffer.
	AuditBuffer int
	// AuditFlushInterval is the window in which an account's failed logins
	// (or its devices' refused writes) are gathered into one audit line,
	// written when it ends: at most one such line per account and window;
	// zero means DefaultAuditFlushInterval (a minute).
	AuditFlushInterval time.Duration
	// MaxBatchChanges caps the changes of one practice push; zero means
	// DefaultMaxBatchChanges.
	MaxBatchChanges int
	// Now is the clock of the check-in page's day; nil means time.Now.
	Now func() time.Time
	// MaxSocketsPerDevice caps a device's live connections on this
	// process (a new one replaces the oldest); zero means
	// DefaultMaxSocketsPerDevice.
	MaxSocketsPerDevice int
	// MaxSocketsPerAccount caps an account's live connections on this
	// process (more are refused with 429); zero means
	// DefaultMaxSocketsPerAccount.
	MaxSocketsPerAccount int
	// UpgradesPerMinute caps how often a device opens a live connection
	// (429 past it); zero means DefaultUpgradesPerMinute.
	UpgradesPerMinute int
	// AccessRecheck is how often each tenant's live connections' access
	// is read again from the store, which closes them even when a
	// revocation event was lost; zero means DefaultAccessRecheck.
	AccessRecheck time.Duration
}

// Server is the syncd HTTP server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	mux     *http.ServeMux
	totpBox *seal.Box

	hub      *hub
	upgrader *websocket.Upgrader
	events   Events
	// shardSums are the sha256 of the shard files served so far.
	shardSums shardSums
	// audits writes the failed-login audit lines in the background.
	audits *auditWriter

	srv *http.Server
	ln  net.Listener
	// stopSub ends the Redis subscription; subDone is closed when it ended.
	stopSub context.CancelFunc
	subDone chan struct{}
	// serveErr receives the result of srv.Serve once it returns.
	serveErr chan error
}

// New returns a Server for cfg. It does not listen until Open.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if cfg.AuditBuffer <= 0 {
		cfg.AuditBuffer = DefaultAuditBuffer
	}
	if cfg.AuditFlushInterval <= 0 {
		cfg.AuditFlushInterval = DefaultAuditFlushInterval
	}
	if cfg.LiveWriteTimeout <= 0 {
		cfg.LiveWriteTimeout = 10 * time.Second
	}
	if cfg.StepUpWindow <= 0 {
		cfg.StepUpWindow = DefaultStepUpWindow
	}
	if cfg.MaxBatchChanges <= 0 {
		cfg.MaxBatchChanges = DefaultMaxBatchChanges
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSocketsPerDevice <= 0 {
		cfg.MaxSocketsPerDevice = DefaultMaxSocketsPerDevice
	}
	if cfg.MaxSocketsPerAccount <= 0 {
		cfg.MaxSocketsPerAccount = DefaultMaxSocketsPerAccount
	}
	if cfg.UpgradesPerMinute <= 0 {
		cfg.UpgradesPerMinute = DefaultUpgradesPerMinute
	}
	if cfg.AccessRecheck <= 0 {
		cfg.AccessRecheck = DefaultAccessRecheck
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registry), mux: http.NewServeMux(), hub: newHub(), upgrader: newUpgrader(),
		events: Events{Redis: cfg.Redis}}
	s.audits = newAuditWriter(cfg.Store, cfg.Logger, s.metrics.auditDropped, cfg.AuditFlushInterval, cfg.AuditBuffer)
	if box, err := seal.New(cfg.Secret, "totp"); err == nil {
		s.totpBox = box
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.handle("GET /healthz", s.handleHealth)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry}))
	s.handleBody("POST /v1/practice/changes", bigBody, s.practice(s.handlePushChanges))
	s.handle("GET /v1/practice/changes", s.practice(s.handlePullChanges))
	s.handle("POST /v1/practice/shards/build", s.practice(s.handleBuildShards))
	s.handle("GET /v1/practice/accounts/{id}/shard", s.practice(s.handleAccountShard))
	s.handle("GET /v1/practice/backup", s.practice(s.handleBackup))
	s.handle("GET /v1/practice/stats", s.practice(s.handleStats))
	s.handle("POST /v1/practice/accounts/{id}/access-code", s.practice(s.handleSendCode))
	s.handle("GET /v1/practice/accounts/{id}/access-code", s.practice(s.handleCodeStatus))
	s.handle("GET /v1/practice/accounts/{id}/devices", s.practice(s.handleDevices))
	s.handle("POST /v1/practice/devices/{id}/revoke", s.practice(s.handleRevoke))
	s.handle("POST /v1/practice/accounts/{id}/totp", s.practice(s.handleEnrolTOTP))
	s.handle("POST /v1/practice/key/rotate", s.practice(s.handleRotateKey))
	s.handle("GET /v1/practice/audit", s.practice(s.handleAudit))
	s.handle("POST /v1/device/login", s.handleLogin)
	s.handle("GET /v1/device/shard", s.device(s.handleShard))
	s.handle("POST /v1/device/logout", s.handleLogout)
	s.handle("GET /v1/device/sync", s.handleDeviceSync)
	s.handle("GET /v1/practice/sync", s.practice(s.handlePracticeSync))
	s.handle("GET /v1/device/checkin", s.device(s.handleCheckinDay))
	s.mux.Handle("GET /checkin/", checkinPage())
	s.mux.Handle("GET /checkin", http.RedirectHandler("/checkin/", http.StatusMovedPermanently))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start subscribes to the commit and revocation events of the other syncd
// processes (when Redis is configured); Open calls it. Stop with Close.
func (s *Server) Start() error {
	if s.cfg.Redis == nil || s.stopSub != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan error, 1)
	s.stopSub, s.subDone = cancel, make(chan struct{})
	go func() {
		defer close(s.subDone)
		s.subscribe(ctx, ready)
	}()
	if err := <-ready; err != nil {
		cancel()
		<-s.subDone
		s.stopSub = nil
		return fmt.Errorf("subscribe to events: %w", err)
	}
	return nil
}

// Open listens on addr (host:port; port 0 picks a free one) and serves in
// the background until Close.
func (s *Server) Open(addr string) error {
	if err := s.Start(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	s.ln = ln
	// ReadTimeout bounds every request; limitBody tightens the deadline of
	// small bodies, and net/http lifts it once the body was read. WebSocket
	// upgrades keep none: gorilla/websocket clears the deadlines it inherits.
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	return nil
}

// Addr returns the address the server listens on, after Open.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops accepting requests, closes live connections with 1001 and
// waits, until ctx is done, for the running requests and connections to
// finish; then it writes the audit lines that wait and ends the Redis
// subscription.
func (s *Server) Close(ctx context.Context) error {
	defer func() {
		s.audits.close()
		if s.stopSub != nil {
			s.stopSub()
			<-s.subDone
		}
	}()
	if s.srv == nil {
		return s.closeLive(ctx)
	}
	// Shutdown does not track hijacked (WebSocket) connections: close them
	// alongside.
	liveErr := make(chan error, 1)
	go func() { liveErr <- s.closeLive(ctx) }()
	err := errors.Join(s.srv.Shutdown(ctx), <-liveErr)
	if errors.Is(err, context.DeadlineExceeded) {
		err = errors.Join(err, s.srv.Close())
	}
	if serr := <-s.serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{}
	code := http.StatusOK
	for name, check := range s.cfg.Checks {
		if err := check(ctx); err != nil {
			status[name] = err.Error()
			code = http.StatusServiceUnavailable
			continue
		}
		status[name] = "ok"
	}
	writeJSON(w, code, map[string]any{"ok": code == http.StatusOK, "checks": status})
}
