// Command worker runs Therasync's background jobs (an Asynq server). It is
// configured by flags and the environment (see README.md) and stops
// gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // tenant time zones on machines without tzdata

	"github.com/therasync/therasync/cmd/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		m.Log.Error("start failed", "err", err)
		os.Exit(1)
	}
	<-ctx.Done()
	m.Log.Info("shutting down")
	m.Close()
}

// Main is the worker program.
type Main struct {
	Config daemon.Config
	Log    *slog.Logger
	worker *daemon.Worker
}

// NewMain returns a Main configured from the environment.
func NewMain() *Main {
	return &Main{Config: daemon.DefaultConfig(os.Getenv), Log: daemon.NewLogger(os.Stderr, "info")}
}

// ParseFlags applies the command line over the environment and validates.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	m.Config.RegisterFlags(fs, "data", "redis", "log-level", "shutdown-timeout", "concurrency", "tick")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := m.Config.Validate(); err != nil {
		return err
	}
	m.Log = daemon.NewLogger(os.Stderr, m.Config.LogLevel)
	return nil
}

// Run starts the worker and returns; Close stops it.
func (m *Main) Run(ctx context.Context) (err error) {
	m.worker, err = daemon.StartWorker(m.Config, m.Log, nil)
	return err
}

// Close stops the worker, waiting for running tasks up to the shutdown
// timeout.
func (m *Main) Close() {
	if m.worker != nil {
		if err := m.worker.Close(); err != nil {
			m.Log.Error("shutdown", "err", err)
		}
	}
}
