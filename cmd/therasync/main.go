// Command therasync is the operator's tool: the all-in-one dev server and
// tenant administration.
//
//	therasync dev [--addr 127.0.0.1:8080] [--data ./data]
//	therasync tenant create --data DIR --name NAME [--licenses sync,app] [--tz Europe/Berlin]
//	therasync tenant list --data DIR
//	therasync tenant set --data DIR --tenant T [--licenses sync,app|none] [--tz Z]
//	therasync account disable|enable --data DIR --tenant T --account A
//	therasync device list --data DIR --tenant T --account A
//	therasync device revoke --data DIR --tenant T --device D [--wipe]
//	therasync backup --data DIR --out DIR
//	therasync restore --from DIR --data DIR [--tenant ID] [--force]
//	therasync compact --data DIR [--tenant T] [--retention 90d] [--vacuum=false]
//	therasync device login|sync|status|query|write|logout --dir DIR [--server URL]
//	therasync token issue --data DIR --tenant T --account A [--count N]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	_ "time/tzdata" // tenant time zones on machines without tzdata

	"github.com/therasync/therasync/store"
)

const usage = `usage:
  therasync dev [--addr 127.0.0.1:8080] [--data ./data]
      syncd and worker in one process on an embedded Redis, with demo data
  therasync tenant create --data DIR --name NAME [--licenses sync,app] [--tz Europe/Berlin]
      creates a tenant; prints {"tenant_id", "practice_key"}
  therasync tenant list --data DIR
      lists the tenants of a data directory
  therasync tenant set --data DIR --tenant T [--licenses sync,app|none] [--tz ZONE] [--redis URL]
  therasync account disable|enable --data DIR --tenant T --account A [--redis URL]
  therasync device list --data DIR --tenant T --account A
  therasync device revoke --data DIR --tenant T --device D [--wipe] [--redis URL]
      OPERATOR TOOLS (the vendor's support): take effect at once on the
      running syncd processes (through Redis, REDIS_URL, or within seconds
      without it); audited with "operator" as the actor
  therasync backup --data DIR --out DIR
      consistent online copy of every tenant's database (syncd may run), verified
  therasync restore --from DIR --data DIR [--tenant ID] [--force]
      puts tenant databases back from a backup (stop syncd and worker first)
  therasync compact --data DIR [--tenant T] [--retention 90d] [--vacuum=false]
      compacts change logs now, online (syncd may run): changes older than the
      retention (default CHANGE_RETENTION or 90d) fold into each row's newest
      change; prints per tenant the horizon, the changes dropped and the
      database's size before and after. A big database made before
      compaction existed is VACUUMed once (writes wait) unless --vacuum=false
  therasync device login --dir DIR --server URL --email E --code C
  therasync device sync|status|logout --dir DIR    (sync --follow keeps following)
  therasync device query --dir DIR 'SELECT …'
  therasync device write --dir DIR --entity E --id ID [--op upsert|delete] --fields '{…}'
      acts as a phone from a terminal (the device client library)
  therasync token issue --data DIR --tenant T --account A [--count N]
      OPERATOR TOOL for load tests: mints device tokens straight into the
      store, without access codes; prints one token per line
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	err := m.Run(ctx, os.Args[1:])
	if err2 := m.Close(); err == nil {
		err = err2
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "therasync: %v\n\n%s", err, usage)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "therasync:", err)
		os.Exit(1)
	}
}

// usageError is a command line that names no known command.
type usageError string

func (e usageError) Error() string { return string(e) }

// Main is the therasync program.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// closers run in reverse order on Close.
	closers []func() error
}

// NewMain returns a Main on the process's standard streams.
func NewMain() *Main {
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Run runs the command that args name.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("no command")
	}
	switch args[0] {
	case "dev":
		return m.runDev(ctx, args[1:])
	case "tenant":
		if len(args) < 2 {
			return usageError("tenant: want create, list or set")
		}
		switch args[1] {
		case "create":
			return m.runTenantCreate(ctx, args[2:])
		case "list":
			return m.runTenantList(ctx, args[2:])
		case "set":
			return m.runTenantSet(ctx, args[2:])
		}
		return usageError("tenant: unknown command " + args[1])
	case "backup":
		return m.runBackup(ctx, args[1:])
	case "restore":
		return m.runRestore(ctx, args[1:])
	case "compact":
		return m.runCompact(ctx, args[1:])
	case "device":
		if len(args) > 1 && (args[1] == "list" || args[1] == "revoke") {
			return m.runDeviceOperator(ctx, args[1], args[2:])
		}
		return m.runDevice(ctx, args[1:])
	case "account":
		return m.runAccount(ctx, args[1:])
	case "token":
		return m.runToken(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	return usageError("unknown command " + args[0])
}

// Close releases what Run opened, in reverse order.
func (m *Main) Close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i]())
	}
	m.closers = nil
	return errors.Join(errs...)
}

func (m *Main) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("therasync "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	return fs
}

func (m *Main) openStore(dir string) (*store.Store, error) {
	if dir == "" {
		return nil, usageError("--data is required")
	}
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, s.Close)
	return s, nil
}

func (m *Main) runTenantCreate(ctx context.Context, args []string) error {
	fs := m.flags("tenant create")
	data := fs.String("data", "", "data directory")
	name := fs.String("name", "", "the practice group's name")
	licenses := fs.String("licenses", "sync,app", "comma-separated licenses: sync, app")
	tz := fs.String("tz", store.DefaultTZ, "IANA time zone")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return usageError("tenant create: --name is required")
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	st, key, err := s.CreateTenant(ctx, store.NewTenant{Name: *name, Licenses: strings.Split(*licenses, ","), TZ: *tz})
	if err != nil {
		return err
	}
	return json.NewEncoder(m.Stdout).Encode(map[string]string{"tenant_id": st.ID, "practice_key": key})
}

func (m *Main) runTenantList(ctx context.Context, args []string) error {
	fs := m.flags("tenant list")
	data := fs.String("data", "", "data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	ids, err := s.TenantIDs()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(m.Stdout)
	for _, id := range ids {
		t, err := s.Tenant(ctx, id)
		if err != nil {
			return err
		}
		st, err := t.Settings(ctx)
		if err != nil {
			return err
		}
		seq, err := t.Seq(ctx)
		if err != nil {
			return err
		}
		if err := enc.Encode(struct {
			store.Settings
			Seq int64 `json:"seq"`
		}{st, seq}); err != nil {
			return err
		}
	}
	return nil
}
