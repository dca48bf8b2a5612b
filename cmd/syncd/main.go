// Command syncd is Therasync's HTTP and WebSocket daemon. It is configured
// by flags and the environment (see README.md) and stops gracefully on
// SIGINT or SIGTERM.
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
		fmt.Fprintln(os.Stderr, "syncd:", err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		m.Log.Error("start failed", "err", err)
		os.Exit(1)
	}
	<-ctx.Done()
	m.Log.Info("shutting down", "deadline", m.Config.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	if err := m.Close(shutdownCtx); err != nil {
		m.Log.Error("shutdown", "err", err)
		os.Exit(1)
	}
}

// Main is the syncd program.
type Main struct {
	Config daemon.Config
	Log    *slog.Logger
	syncd  *daemon.Syncd
}

// NewMain returns a Main configured from the environment.
func NewMain() *Main {
	return &Main{Config: daemon.DefaultConfig(os.Getenv), Log: daemon.NewLogger(os.Stderr, "info")}
}

// ParseFlags applies the command line over the environment and validates.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("syncd", flag.ContinueOnError)
	m.Config.RegisterFlags(fs, "addr", "data", "redis", "log-level", "max-body", "read-timeout", "body-read-timeout", "shutdown-timeout", "code-digits", "live-limits")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := m.Config.Validate(); err != nil {
		return err
	}
	m.Log = daemon.NewLogger(os.Stderr, m.Config.LogLevel)
	return nil
}

// Run starts serving and returns; Close stops.
func (m *Main) Run(ctx context.Context) (err error) {
	m.syncd, err = daemon.StartSyncd(ctx, m.Config, m.Log)
	return err
}

// Close shuts down under ctx's deadline.
func (m *Main) Close(ctx context.Context) error {
	if m.syncd == nil {
		return nil
	}
	return m.syncd.Close(ctx)
}
