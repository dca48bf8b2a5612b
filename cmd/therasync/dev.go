package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/therasync/therasync/cmd/internal/daemon"
	"github.com/therasync/therasync/store"
)

// devState is DATA/dev.json: what `therasync dev` created, so that a restart
// on the same data directory reuses it.
type devState struct {
	TenantID    string        `json:"tenant_id"`
	PracticeKey string        `json:"practice_key"`
	Accounts    []demoAccount `json:"accounts"`
	// DemoDay is the day the demo data is generated around; kept so that an
	// interrupted seeding resumes with the same batches.
	DemoDay string `json:"demo_day"`
	// DemoHour (HH, tenant time) is when the demo course held on DemoDay
	// starts, so the check-in page shows it running; "" means 00.
	DemoHour string `json:"demo_hour"`
	// Seeded is true once every demo batch was acknowledged.
	Seeded bool `json:"seeded"`
	// RedisURL is the embedded Redis of the dev server running now (a new
	// port at every start), for the operator commands' --redis.
	RedisURL string `json:"redis_url,omitempty"`
}

func (m *Main) runDev(ctx context.Context, args []string) error {
	cfg := daemon.DefaultConfig(m.Getenv)
	fs := m.flags("dev")
	cfg.RegisterFlags(fs, "addr", "data", "log-level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mr, err := startDevRedis()
	if err != nil {
		return err
	}
	m.closers = append(m.closers, func() error { mr.Close(); return nil })
	cfg.RedisURL = "redis://" + mr.Addr()
	cfg.SMTPURL = "" // the dev server never sends mail: it writes DATA/outbox/*.eml
	if cfg.Secret, err = devSecret(cfg.DataDir); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := daemon.NewLogger(m.Stderr, cfg.LogLevel)

	sd, err := daemon.StartSyncd(ctx, cfg, log)
	if err != nil {
		return err
	}
	m.closers = append(m.closers, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		return sd.Close(sctx)
	})
	wk, err := daemon.StartWorker(cfg, log, sd.Store)
	if err != nil {
		return err
	}
	m.closers = append(m.closers, wk.Close)

	base := "http://" + sd.Server.Addr()
	state, err := m.devTenant(ctx, sd.Store, cfg.DataDir, base)
	if err != nil {
		return err
	}
	state.RedisURL = cfg.RedisURL
	if err := writeJSONFile(filepath.Join(cfg.DataDir, "dev.json"), state); err != nil {
		return err
	}
	m.printDevBanner(cfg.DataDir, base, state)
	<-ctx.Done()
	fmt.Fprintln(m.Stdout, "therasync dev: shutting down")
	return nil
}

// startDevRedis starts the dev server's embedded Redis on a free loopback
// port. Its keys expire in real time, as in Redis: an access code lasts its
// 15 minutes, a resend limit its minute, a lockout its hour (miniredis
// alone only expires keys when told to fast-forward).
func startDevRedis() (*miniredis.Miniredis, error) {
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	return mr, nil
}

// devSecret returns the dev server's secret from DATA/secret, made on first
// start: TOTP secrets sealed with it must open after a restart.
func devSecret(dir string) (string, error) {
	path := filepath.Join(dir, "secret")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b)
	return secret, os.WriteFile(path, []byte(secret+"\n"), 0o600)
}

// devTenant loads DATA/dev.json, or creates the demo tenant and seeds it
// through the practice API, exactly as a practice PC would push.
func (m *Main) devTenant(ctx context.Context, s *store.Store, dir, base string) (devState, error) {
	path := filepath.Join(dir, "dev.json")
	var st devState
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return st, fmt.Errorf("read %s: %w", path, err)
		}
		if _, err := s.Tenant(ctx, st.TenantID); err != nil {
			return st, fmt.Errorf("%s names tenant %s: %w (remove the data directory to start afresh)", path, st.TenantID, err)
		}
	case errors.Is(err, os.ErrNotExist):
		ts, key, err := s.CreateTenant(ctx, store.NewTenant{Name: "Praxisgruppe Demo", Licenses: []string{store.LicenseSync, store.LicenseApp}})
		if err != nil {
			return st, err
		}
		st = devState{TenantID: ts.ID, PracticeKey: key, Accounts: demoAccounts, DemoDay: time.Now().UTC().Format(time.DateOnly),
			DemoHour: time.Now().In(demoLocation()).Format("15")}
		if err := writeJSONFile(path, st); err != nil {
			return st, err
		}
	default:
		return st, err
	}
	if st.Seeded {
		return st, nil
	}
	day, err := time.Parse(time.DateOnly, st.DemoDay)
	if err != nil {
		return st, fmt.Errorf("%s: demo_day: %w", path, err)
	}
	fmt.Fprintln(m.Stdout, "therasync dev: loading demo data through the practice API …")
	hour := st.DemoHour
	if hour == "" {
		hour = "00"
	}
	batches := demoData(day, hour, 500)
	n := 0
	for i, cs := range batches {
		body, _ := json.Marshal(map[string]any{"batch_id": fmt.Sprintf("demo-%03d", i), "changes": cs})
		if err := postJSON(ctx, base+"/v1/practice/changes", st.PracticeKey, body); err != nil {
			return st, fmt.Errorf("seed demo batch %d: %w", i, err)
		}
		n += len(cs)
	}
	fmt.Fprintf(m.Stdout, "therasync dev: %d demo changes in %d batches\n", n, len(batches))
	st.Seeded = true
	return st, writeJSONFile(path, st)
}

func postJSON(ctx context.Context, url, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// writeJSONFile writes v to path atomically, readable only by its owner
// (dev.json holds the practice key).
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (m *Main) printDevBanner(dir, base string, st devState) {
	w := m.Stdout
	fmt.Fprintf(w, `
Therasync dev server
  syncd + worker     %s  (embedded Redis, data in %s)
  tenant             %s
  practice key       %s
  demo accounts      %s (see %s)

Try it:
  curl -s %s/healthz
  curl -s -H 'Authorization: Bearer %s' '%s/v1/practice/changes?since=0&limit=3'
  curl -s -H 'Authorization: Bearer %s' -d '{"batch_id":"try-1","changes":[{"entity":"profiles","op":"upsert","id":"pat-new","fields":{"first_name":"Erika","last_name":"Mustermann","owner_id":"acc-jonas"}}]}' %s/v1/practice/changes
  curl -s %s/metrics | grep therasync_

Log a phone in (the code arrives as a mail in %s):
  curl -s -X POST -H 'Authorization: Bearer %s' %s/v1/practice/accounts/acc-jonas/access-code
  curl -s -d '{"email":"jonas.becker@praxis-demo.de","code":"CODE","device_id":"my-phone","device_name":"Terminal","platform":"curl"}' %s/v1/device/login
  curl -s -o shard.db -H 'Authorization: Bearer TOKEN' %s/v1/device/shard && sqlite3 shard.db 'select * from sync_meta'

Check-in terminal (a tablet at the front desk): open %s/checkin/ and log in
as sabine.krueger@praxis-demo.de with a code from %s:
  curl -s -X POST -H 'Authorization: Bearer %s' %s/v1/practice/accounts/acc-sabine/access-code

Vendor support, on this machine (effective at once on the running server):
  therasync account disable --data %s --tenant %s --redis %s --account acc-jonas
  therasync device list --data %s --tenant %s --redis %s --account acc-jonas
  therasync tenant set --data %s --tenant %s --redis %s --licenses sync,app --tz Europe/Berlin

Stop with Ctrl-C. Started again on the same data directory, it reuses what is there.
`, base, dir, st.TenantID, st.PracticeKey, accountEmails(st.Accounts), filepath.Join(dir, "dev.json"),
		base, st.PracticeKey, base, st.PracticeKey, base, base,
		filepath.Join(dir, "outbox"), st.PracticeKey, base, base, base,
		base, filepath.Join(dir, "outbox"), st.PracticeKey, base,
		dir, st.TenantID, st.RedisURL, dir, st.TenantID, st.RedisURL, dir, st.TenantID, st.RedisURL)
}

func accountEmails(as []demoAccount) string {
	var b bytes.Buffer
	for i, a := range as {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", a.Email, a.Role)
	}
	return b.String()
}

// demoLocation is the demo tenant's time zone (the default one).
func demoLocation() *time.Location {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		return time.UTC
	}
	return loc
}
