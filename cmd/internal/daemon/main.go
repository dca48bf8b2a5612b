package daemon

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Process is what a daemon binary runs: its name, the settings it takes
// as flags and how it starts.
type Process struct {
	// Name names the binary in its flag set and its usage errors.
	Name string
	// Flags are the settings the binary takes as flags, as named by
	// Config.RegisterFlags.
	Flags []string
	// Start starts the process and returns how to stop it under a
	// context's deadline.
	Start func(ctx context.Context, c Config, log *slog.Logger) (stop func(context.Context) error, err error)
}

// SyncdProcess is the syncd binary's process: the HTTP and WebSocket
// daemon.
func SyncdProcess() Process {
	return Process{
		Name:  "syncd",
		Flags: []string{"addr", "data", "redis", "log-level", "max-body", "read-timeout", "body-read-timeout", "shutdown-timeout", "code-digits", "live-limits"},
		Start: func(ctx context.Context, c Config, log *slog.Logger) (func(context.Context) error, error) {
			s, err := StartSyncd(ctx, c, log)
			if err != nil {
				return nil, err
			}
			return s.Close, nil
		},
	}
}

// WorkerProcess is the worker binary's process: the Asynq server and
// scheduler on a store of its own. It waits for running tasks up to the
// shutdown timeout itself.
func WorkerProcess() Process {
	return Process{
		Name:  "worker",
		Flags: []string{"data", "redis", "log-level", "shutdown-timeout", "concurrency", "tick", "change-retention"},
		Start: func(_ context.Context, c Config, log *slog.Logger) (func(context.Context) error, error) {
			w, err := StartWorker(c, log, nil)
			if err != nil {
				return nil, err
			}
			return func(context.Context) error { return w.Close() }, nil
		},
	}
}

// Main is a daemon binary: a process with its configuration and logger.
type Main struct {
	Process Process
	Config  Config
	Log     *slog.Logger

	stderr io.Writer
	stop   func(context.Context) error // set by Run
}

// NewMain returns a Main of p configured from getenv, logging to stderr.
func NewMain(p Process, getenv func(string) string, stderr io.Writer) *Main {
	return &Main{Process: p, Config: DefaultConfig(getenv), Log: NewLogger(stderr, "info"), stderr: stderr}
}

// ParseFlags applies the command line over the environment and validates.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet(m.Process.Name, flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	m.Config.RegisterFlags(fs, m.Process.Flags...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := m.Config.Validate(); err != nil {
		return err
	}
	m.Log = NewLogger(m.stderr, m.Config.LogLevel)
	return nil
}

// Run starts the process and returns; Close stops it.
func (m *Main) Run(ctx context.Context) error {
	stop, err := m.Process.Start(ctx, m.Config, m.Log)
	if err != nil {
		return err
	}
	m.stop = stop
	return nil
}

// Close stops the process under ctx's deadline.
func (m *Main) Close(ctx context.Context) error {
	if m.stop == nil {
		return nil
	}
	return m.stop(ctx)
}

// Exec runs the binary with args until SIGINT or SIGTERM, then shuts it
// down within SHUTDOWN_TIMEOUT. It returns the exit code: 2 for an invalid
// command line or setting, 1 when the start or the shutdown failed.
func (m *Main) Exec(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := m.ParseFlags(args); err != nil {
		fmt.Fprintln(m.stderr, m.Process.Name+":", err)
		return 2
	}
	if err := m.Run(ctx); err != nil {
		m.Log.Error("start failed", "err", err)
		return 1
	}
	<-ctx.Done()
	m.Log.Info("shutting down", "deadline", m.Config.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	if err := m.Close(shutdownCtx); err != nil {
		m.Log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}
