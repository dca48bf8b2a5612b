package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// The operator's commands: the vendor's support acts on a tenant from the
// server, through the store (each change audited with "operator" as its
// actor), and tells the running syncd processes through Redis, exactly as
// a practice push or the practice API would. Without Redis, syncd closes
// the affected connections on its next re-read of the access (within
// seconds).

// operatorFlags are the flags every operator command takes.
type operatorFlags struct {
	data, tenant, redis *string
}

func (m *Main) operatorFlags(fs *flag.FlagSet) operatorFlags {
	return operatorFlags{
		data:   fs.String("data", "", "data directory"),
		tenant: fs.String("tenant", "", "the tenant's id"),
		redis:  fs.String("redis", m.Getenv("REDIS_URL"), "Redis of the running syncd processes (env REDIS_URL; empty: they notice within seconds)"),
	}
}

// open opens the store, the tenant and the events publisher.
func (m *Main) openOperator(ctx context.Context, f operatorFlags) (*store.Tenant, syncd.Events, error) {
	if *f.tenant == "" {
		return nil, syncd.Events{}, usageError("--tenant is required")
	}
	s, err := m.openStore(*f.data)
	if err != nil {
		return nil, syncd.Events{}, err
	}
	t, err := s.Tenant(ctx, *f.tenant)
	if err != nil {
		return nil, syncd.Events{}, fmt.Errorf("tenant %s: %w", *f.tenant, err)
	}
	var ev syncd.Events
	if *f.redis == "" {
		return t, ev, nil // running syncd processes re-read the access on their own within seconds
	}
	opt, err := redis.ParseURL(*f.redis)
	if err != nil {
		return nil, ev, fmt.Errorf("--redis: %w", err)
	}
	rdb := redis.NewClient(opt)
	m.closers = append(m.closers, rdb.Close)
	ev.Redis = rdb
	return t, ev, nil
}

// published reports a failed publication without failing the command:
// the change is durable, and syncd finds it on its own.
func (m *Main) published(err error) {
	if err != nil {
		fmt.Fprintf(m.Stderr, "therasync: %v (running syncd processes act on it within seconds, on their own)\n", err)
	}
}

// runAccount serves `therasync account disable|enable`.
func (m *Main) runAccount(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "disable" && args[0] != "enable" {
		return usageError("account: want disable or enable")
	}
	cmd := args[0]
	fs := m.flags("account " + cmd)
	of := m.operatorFlags(fs)
	account := fs.String("account", "", "the account's id")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *account == "" {
		return usageError("account " + cmd + ": --account is required")
	}
	t, ev, err := m.openOperator(ctx, of)
	if err != nil {
		return err
	}
	if _, err := t.Account(ctx, *account); err != nil {
		return fmt.Errorf("account %s: %w", *account, err)
	}
	res, err := t.Apply(ctx, store.Batch{ID: operatorBatchID(), Origin: store.OriginOperator, Changes: []model.Change{
		{Entity: model.Accounts, Op: model.OpUpsert, ID: *account, Fields: map[string]any{"app_enabled": cmd == "enable"}},
	}})
	if err != nil {
		return fmt.Errorf("account %s: %w", cmd, err)
	}
	m.published(ev.Applied(ctx, t.ID(), res))
	return json.NewEncoder(m.Stdout).Encode(map[string]any{"account_id": *account, "app_enabled": cmd == "enable", "seq": res.Seq})
}

// runDeviceOperator serves `therasync device list|revoke`.
func (m *Main) runDeviceOperator(ctx context.Context, cmd string, args []string) error {
	fs := m.flags("device " + cmd)
	of := m.operatorFlags(fs)
	account := fs.String("account", "", "list: the account whose devices to list")
	id := fs.String("device", "", "revoke: the device's id")
	wipe := fs.Bool("wipe", false, "revoke: the device is lost; it deletes its data when it next reaches the server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, ev, err := m.openOperator(ctx, of)
	if err != nil {
		return err
	}
	out := json.NewEncoder(m.Stdout)
	if cmd == "list" {
		if *account == "" {
			return usageError("device list: --account is required")
		}
		ds, err := t.Devices(ctx, *account)
		if err != nil {
			return err
		}
		return out.Encode(map[string]any{"devices": ds})
	}
	if *id == "" {
		return usageError("device revoke: --device is required")
	}
	d, err := t.RevokeDevice(ctx, *id, *wipe, "operator", "")
	if err != nil {
		return err
	}
	m.published(ev.Revoked(ctx, syncd.Revocation{Tenant: t.ID(), AccountID: d.AccountID, DeviceID: d.ID, Wipe: d.Wipe}))
	return out.Encode(d)
}

// runTenantSet serves `therasync tenant set`.
func (m *Main) runTenantSet(ctx context.Context, args []string) error {
	fs := m.flags("tenant set")
	of := m.operatorFlags(fs)
	licenses := fs.String("licenses", "", "the tenant's licenses, comma-separated (sync, app; \"none\" for none); empty: unchanged")
	tz := fs.String("tz", "", "the tenant's IANA time zone; empty: unchanged")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var c store.SettingsChange
	switch *licenses {
	case "":
	case "none":
		c.Licenses = []string{}
	default:
		c.Licenses = strings.Split(*licenses, ",")
	}
	if *tz != "" {
		c.TZ = tz
	}
	if c.Licenses == nil && c.TZ == nil {
		return usageError("tenant set: --licenses or --tz is required")
	}
	t, ev, err := m.openOperator(ctx, of)
	if err != nil {
		return err
	}
	before, after, err := t.SetSettings(ctx, c, "operator", "")
	if err != nil {
		return err
	}
	for _, l := range store.AppLicenses {
		if before.HasLicense(l) && !after.HasLicense(l) {
			m.published(ev.Revoked(ctx, syncd.Revocation{Tenant: t.ID()}))
			break
		}
	}
	return json.NewEncoder(m.Stdout).Encode(after)
}

// operatorBatchID names an operator's batch uniquely.
func operatorBatchID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "operator-" + hex.EncodeToString(b)
}
