// Command worker runs Therasync's background jobs (an Asynq server). It is
// configured by flags and the environment (see README.md) and stops
// gracefully on SIGINT or SIGTERM.
package main

import (
	"os"
	_ "time/tzdata" // tenant time zones on machines without tzdata

	"github.com/therasync/therasync/cmd/internal/daemon"
)

func main() { os.Exit(NewMain().Exec(os.Args[1:])) }

// NewMain returns the worker program configured from the environment.
func NewMain() *daemon.Main { return daemon.NewMain(daemon.WorkerProcess(), os.Getenv, os.Stderr) }
