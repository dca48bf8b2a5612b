// Command syncd is Therasync's HTTP and WebSocket daemon. It is configured
// by flags and the environment (see README.md) and stops gracefully on
// SIGINT or SIGTERM.
package main

import (
	"os"
	_ "time/tzdata" // tenant time zones on machines without tzdata

	"github.com/therasync/therasync/cmd/internal/daemon"
)

func main() { os.Exit(NewMain().Exec(os.Args[1:])) }

// NewMain returns the syncd program configured from the environment.
func NewMain() *daemon.Main { return daemon.NewMain(daemon.SyncdProcess(), os.Getenv, os.Stderr) }
