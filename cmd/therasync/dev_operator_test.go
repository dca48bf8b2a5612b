package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// follower is a running `therasync device sync --follow`.
type follower struct {
	stderr *syncBuffer
	stop   func() error // Ctrl-C: cancels it and returns its error
}

// follow starts `device sync --follow` of the device in dir and waits
// until it is caught up (a live socket).
func follow(tb testing.TB, dir string) *follower {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{stderr: &syncBuffer{}}
	done := make(chan error, 1)
	go func() {
		m := &Main{Stdout: &bytes.Buffer{}, Stderr: f.stderr, Getenv: func(string) string { return "" }}
		err := m.Run(ctx, []string{"device", "sync", "--follow", "--dir", dir})
		if cerr := m.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	var once sync.Once
	var err error
	f.stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	tb.Cleanup(func() { f.stop() })
	f.wait(tb, "caught up at seq", 10*time.Second)
	return f
}

// wait waits until the follower has told text.
func (f *follower) wait(tb testing.TB, text string, within time.Duration) {
	tb.Helper()
	for deadline := time.Now().Add(within); !strings.Contains(f.stderr.String(), text); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("device sync --follow did not tell %q within %s; it told:\n%s", text, within, f.stderr.String())
		}
	}
}

// outboxFiles are the mails in DATA/outbox now.
func outboxFiles(data string) map[string]bool {
	files, _ := filepath.Glob(filepath.Join(data, "outbox", "*.eml"))
	m := map[string]bool{}
	for _, f := range files {
		m[f] = true
	}
	return m
}

// mailedCode waits for a code mail to email in DATA/outbox that is not
// among old and returns the code of the newest.
func mailedCode(tb testing.TB, data, email string, old map[string]bool) string {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(data, "outbox", "*.eml"))
		code, newest := "", time.Time{}
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil || old[f] || fi.ModTime().Before(newest) {
				continue
			}
			b, _ := os.ReadFile(f)
			if m := regexp.MustCompile(`(?m)^    (\d{6})\r?$`).FindSubmatch(b); m != nil && strings.Contains(string(b), email) {
				code, newest = string(m[1]), fi.ModTime()
			}
		}
		if code != "" {
			return code
		}
	}
	tb.Fatalf("no code mail to %s in the outbox", email)
	return ""
}

// checkOperator drives the vendor's support commands against the running
// dev server, each with its effect on a live socket.
func checkOperator(t *testing.T, data string, st devState, c devClient) {
	if st.RedisURL == "" {
		t.Fatal("dev.json has no redis_url for the operator commands")
	}
	op := func(args ...string) string {
		t.Helper()
		args = append(args, "--data", data, "--tenant", st.TenantID, "--redis", st.RedisURL)
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("therasync %s = %v", strings.Join(args, " "), err)
		}
		return out
	}
	tokens, err := run(t, "token", "issue", "--data", data, "--tenant", st.TenantID, "--account", "acc-jonas", "--device-prefix", "jonas-phone-", "--count", "2")
	if err != nil || len(strings.Fields(tokens)) != 2 {
		t.Fatalf("token issue = %q, %v", tokens, err)
	}
	phones := make([]string, 2)
	for i, tok := range strings.Fields(tokens) {
		phones[i] = t.TempDir()
		if out, err := run(t, "device", "login", "--dir", phones[i], "--server", c.base, "--token", tok); err != nil {
			t.Fatalf("device login --token = %s, %v", out, err)
		}
	}

	// account disable closes the live socket at once (4003: read-only).
	f := follow(t, phones[0])
	op("account", "disable", "--account", "acc-jonas")
	f.wait(t, "read-only", 5*time.Second)
	t.Logf("device sync --follow told:\n%s", f.stderr.String())
	if err := f.stop(); err != nil {
		t.Errorf("device sync --follow after Ctrl-C = %v; want exit 0", err)
	}
	if out, err := run(t, "device", "sync", "--dir", phones[0]); err == nil {
		t.Errorf("sync while the account is disabled = %s, nil; want it refused", out)
	}
	// device list shows the account's devices.
	var list struct {
		Devices []struct {
			ID string `json:"id"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(op("device", "list", "--account", "acc-jonas")), &list); err != nil || len(list.Devices) != 2 {
		t.Errorf("device list = %+v, %v; want jonas's two phones", list, err)
	}
	// account enable: the same device syncs again, without a new login.
	op("account", "enable", "--account", "acc-jonas")
	if out, err := run(t, "device", "sync", "--dir", phones[0]); err != nil || !strings.Contains(out, `"state": "active"`) {
		t.Errorf("sync after account enable = %s, %v; want active again", out, err)
	}

	// device revoke closes that device's socket; --wipe deletes a lost
	// device's data when it next reaches the server.
	f = follow(t, phones[0])
	op("device", "revoke", "--device", "jonas-phone-0")
	f.wait(t, "read-only", 5*time.Second)
	f.stop()
	f = follow(t, phones[1])
	op("device", "revoke", "--device", "jonas-phone-1", "--wipe")
	f.wait(t, "its local data is deleted", 5*time.Second)
	f.stop()
	if left, _ := filepath.Glob(filepath.Join(phones[1], "*.db*")); len(left) != 0 {
		t.Errorf("files of the wiped device: %v", left)
	}

	// tenant set: the app license withdrawn closes the tenant's sockets and
	// refuses logins with license_missing; the time zone changes.
	admin, err := run(t, "token", "issue", "--data", data, "--tenant", st.TenantID, "--account", "acc-admin", "--device-prefix", "katrin-tablet-")
	if err != nil {
		t.Fatal(err)
	}
	tablet := t.TempDir()
	if out, err := run(t, "device", "login", "--dir", tablet, "--server", c.base, "--token", strings.TrimSpace(admin)); err != nil {
		t.Fatalf("device login --token = %s, %v", out, err)
	}
	sent := outboxFiles(data)
	switch code, body := c.do(t, "POST", "/v1/practice/accounts/acc-lena/access-code", nil); code {
	case 200:
	case 429: // lena's activation mail went out within the minute: its code
		sent = nil
	default:
		t.Fatalf("send code = %d %s", code, body)
	}
	code := mailedCode(t, data, "lena.hoffmann@praxis-demo.de", sent)
	f = follow(t, tablet)
	var settings struct {
		Licenses []string `json:"licenses"`
		TZ       string   `json:"tz"`
	}
	if err := json.Unmarshal([]byte(op("tenant", "set", "--licenses", "sync", "--tz", "Europe/Vienna")), &settings); err != nil || settings.TZ != "Europe/Vienna" || strings.Join(settings.Licenses, ",") != "sync" {
		t.Errorf("tenant set = %+v, %v; want licenses [sync], tz Europe/Vienna", settings, err)
	}
	f.wait(t, "read-only", 5*time.Second)
	f.stop()
	lena := t.TempDir()
	if out, err := run(t, "device", "login", "--dir", lena, "--server", c.base, "--email", "lena.hoffmann@praxis-demo.de", "--code", code); err == nil || !strings.Contains(err.Error(), "license_missing") {
		t.Errorf("login without the app license = %s, %v; want license_missing", out, err)
	}
	// Given back, the same code still logs in (a refused login consumes
	// none), and the tablet syncs again.
	op("tenant", "set", "--licenses", "sync,app", "--tz", "Europe/Berlin")
	if out, err := run(t, "device", "login", "--dir", lena, "--server", c.base, "--email", "lena.hoffmann@praxis-demo.de", "--code", code); err != nil || !strings.Contains(out, `"state": "active"`) {
		t.Errorf("login with the license back = %s, %v", out, err)
	}
	if out, err := run(t, "device", "sync", "--dir", tablet); err != nil || !strings.Contains(out, `"state": "active"`) {
		t.Errorf("tablet sync with the license back = %s, %v", out, err)
	}
	// Each operator action is audited with the operator as actor.
	byOperator := map[string]int{}
	for since := 0; ; {
		var page struct {
			Entries []struct {
				ID     int    `json:"id"`
				Actor  string `json:"actor"`
				Action string `json:"action"`
			} `json:"entries"`
		}
		code, body := c.do(t, "GET", fmt.Sprintf("/v1/practice/audit?since=%d&limit=1000", since), nil)
		if err := json.Unmarshal(body, &page); code != 200 || err != nil {
			t.Fatalf("audit = %d %s", code, body)
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if e.Actor == "operator" {
				byOperator[e.Action]++
			}
			since = e.ID
		}
	}
	for action, want := range map[string]int{"app_disabled": 1, "app_enabled": 1, "device_revoked": 2, "settings_changed": 2} {
		if byOperator[action] < want {
			t.Errorf("audit by the operator: %v; want at least %d %s", byOperator, want, action)
		}
	}
}
