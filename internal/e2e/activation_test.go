package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
	"github.com/therasync/therasync/store"
)

// codeStatus is GET /v1/practice/accounts/{id}/access-code.
type codeStatus struct {
	SentAt     *time.Time `json:"sent_at"`
	Delivery   string     `json:"delivery"`
	Failure    string     `json:"failure"`
	Activation string     `json:"activation"`
	Blocked    string     `json:"blocked"`
	Reason     string     `json:"reason"`
}

func (sys *system) codeStatus(account string) codeStatus {
	sys.t.Helper()
	code, b := sys.do("GET", "/v1/practice/accounts/"+account+"/access-code", nil)
	var cs codeStatus
	if err := json.Unmarshal(b, &cs); code != 200 || err != nil {
		sys.t.Fatalf("access-code status of %s = %d %s", account, code, b)
	}
	return cs
}

// waitStatus waits until account's access-code status satisfies ok.
func (sys *system) waitStatus(account string, ok func(codeStatus) bool) codeStatus {
	sys.t.Helper()
	var cs codeStatus
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(30 * time.Millisecond) {
		if cs = sys.codeStatus(account); ok(cs) {
			return cs
		}
	}
	sys.t.Fatalf("access-code status of %s = %+v; never what was expected\n%s", account, cs, sys.logs)
	return cs
}

// TestActivation is the seed product's "App aktivieren", as a practice does
// it: an account pushed with an email and app_enabled and nothing else gets
// its shard and, by itself, the mail with the code; the phone logs in with
// it. Every precondition that fails is visible to the practice.
func TestActivation(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.activation = true })
	sys.startWorker(time.Hour)
	before := sys.outbox()
	sys.push(up("accounts", "acc-neu", map[string]any{"email": "neu@praxis.de", "app_enabled": true}))
	m := sys.waitMail(before, "Zugangscode")
	code := regexp.MustCompile(`(?m)^    (\d{6,10})$`).FindStringSubmatch(m)
	if code == nil || !strings.Contains(m, "neu@praxis.de") {
		t.Fatalf("activation mail:\n%s", m)
	}
	cs := sys.waitStatus("acc-neu", func(cs codeStatus) bool { return cs.Delivery == "delivered" })
	if cs.SentAt == nil || cs.Activation != "" || cs.Blocked != "" {
		t.Errorf("status after the activation mail = %+v; want sent, delivered, nothing pending or blocked", cs)
	}
	c, err := device.Open(t.TempDir(), sys.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(t.Context(), "neu@praxis.de", code[1], "Telefon", "test"); err != nil {
		t.Fatalf("phone login with the activation code = %v", err)
	}
	if st := c.State(); st.Role != "member" || st.State != device.StateActive {
		t.Errorf("logged in as %+v; want an active member (the default role)", st)
	}
	// The mail goes once per activation: another build sends none.
	sys.push(up("profiles", "pat-1", map[string]any{"owner_id": "acc-neu"}))
	sys.do("POST", "/v1/practice/shards/build", map[string]any{"account_id": "acc-neu"})
	time.Sleep(500 * time.Millisecond)
	if again := sys.codeStatus("acc-neu"); again.SentAt == nil || !again.SentAt.Equal(*cs.SentAt) {
		t.Errorf("after a rebuild the last code was sent at %v; want still %v (no second mail)", again.SentAt, cs.SentAt)
	}

	t.Run("no email", func(t *testing.T) {
		sys.push(up("accounts", "acc-ohne", map[string]any{"name": "Ohne Mail", "app_enabled": true}))
		cs := sys.waitStatus("acc-ohne", func(cs codeStatus) bool { return cs.Blocked == "no_email" })
		if cs.Activation != "pending" || cs.SentAt != nil || !strings.Contains(cs.Reason, "email") {
			t.Errorf("status without email = %+v; want pending, blocked no_email, nothing sent", cs)
		}
	})
	t.Run("app disabled", func(t *testing.T) {
		sys.push(up("accounts", "acc-aus", map[string]any{"email": "aus@praxis.de"}))
		cs := sys.waitStatus("acc-aus", func(cs codeStatus) bool { return cs.Blocked == "app_disabled" })
		if cs.Activation != "" || cs.SentAt != nil {
			t.Errorf("status with the app disabled = %+v; want blocked app_disabled, nothing sent", cs)
		}
	})
	t.Run("license missing", func(t *testing.T) {
		if _, _, err := sys.tenant.SetSettings(t.Context(), storeLicenses("sync"), "test", ""); err != nil {
			t.Fatal(err)
		}
		defer sys.tenant.SetSettings(t.Context(), storeLicenses("sync", "app"), "test", "")
		sys.push(up("accounts", "acc-lizenz", map[string]any{"email": "lizenz@praxis.de", "app_enabled": true}))
		cs := sys.waitStatus("acc-lizenz", func(cs codeStatus) bool { return cs.Blocked == "license_missing" })
		if cs.Activation != "pending" || cs.SentAt != nil {
			t.Errorf("status without the app license = %+v; want pending, blocked license_missing", cs)
		}
	})
	t.Run("delivery failed", func(t *testing.T) {
		// The outbox cannot be written: a file where its directory was.
		out := filepath.Join(sys.data, "outbox")
		if err := os.Rename(out, out+".keep"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer func() { os.Remove(out); os.Rename(out+".keep", out) }()
		sys.push(up("accounts", "acc-fehl", map[string]any{"email": "fehl@praxis.de", "app_enabled": true}))
		cs := sys.waitStatus("acc-fehl", func(cs codeStatus) bool { return cs.Delivery == "failed" })
		if cs.SentAt == nil || cs.Failure == "" || regexp.MustCompile(`(^|\D)\d{6}(\D|$)`).MatchString(cs.Failure) {
			t.Errorf("status after a failed delivery = %+v; want failed with a reason (and no code in it)", cs)
		}
	})
}

func storeLicenses(l ...string) store.SettingsChange { return store.SettingsChange{Licenses: l} }

// TestActivationAfterPracticeCode: a code the practice sent before the
// shard was built is the activation's; the build sends no second code
// that would replace it.
func TestActivationAfterPracticeCode(t *testing.T) {
	// No resend limit in the way: the build may come long after the code.
	sys := newSystem(t, func(s *system) { s.activation, s.resend = true, 10*time.Millisecond })
	sys.push(up("accounts", "acc-vorab", map[string]any{"email": "vorab@praxis.de", "app_enabled": true}))
	if cs := sys.codeStatus("acc-vorab"); cs.Activation != "pending" || cs.Blocked != "shard_not_ready" {
		t.Errorf("status before the build = %+v; want pending, shard_not_ready", cs)
	}
	if code, b := sys.do("POST", "/v1/practice/accounts/acc-vorab/access-code", nil); code != 200 {
		t.Fatalf("send code = %d %s", code, b)
	}
	sent := sys.codeStatus("acc-vorab")
	sys.startWorker(time.Hour) // delivers the mail, builds the shard
	m := regexp.MustCompile(`(?m)^    (\d{6,10})$`).FindStringSubmatch(sys.waitMail(nil, "Zugangscode"))
	if m == nil {
		t.Fatal("no code in the practice's mail")
	}
	code := m[1]
	sys.waitStatus("acc-vorab", func(cs codeStatus) bool { return cs.Blocked == "" })
	time.Sleep(300 * time.Millisecond)
	if again := sys.codeStatus("acc-vorab"); again.SentAt == nil || !again.SentAt.Equal(*sent.SentAt) || again.Activation != "" {
		t.Errorf("status after the build = %+v; want the practice's code kept (sent at %v), nothing pending", again, sent.SentAt)
	}
	if code, b := sys.do("POST", "/v1/device/login", map[string]any{"email": "vorab@praxis.de", "code": code, "device_id": "p1", "device_name": "P", "platform": "test"}); code != 200 {
		t.Errorf("login with the practice's code = %d %s", code, b)
	}
}

// TestActivationRetried: an activation that could not send its mail when
// its shard was built sends it on a later tick, once it can — without any
// further build or push.
func TestActivationRetried(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.activation, s.resend = true, 2*time.Second })
	sys.startWorker(time.Second)
	t.Run("license added later", func(t *testing.T) {
		if _, _, err := sys.tenant.SetSettings(t.Context(), storeLicenses("sync"), "test", ""); err != nil {
			t.Fatal(err)
		}
		sys.push(up("accounts", "acc-spaet", map[string]any{"email": "spaet@praxis.de", "app_enabled": true}))
		sys.waitStatus("acc-spaet", func(cs codeStatus) bool { return cs.Blocked == "license_missing" && cs.Activation == "pending" })
		before := sys.outbox()
		if _, _, err := sys.tenant.SetSettings(t.Context(), storeLicenses("sync", "app"), "test", ""); err != nil {
			t.Fatal(err)
		}
		if m := sys.waitMail(before, "spaet@praxis.de"); !strings.Contains(m, "Zugangscode") {
			t.Errorf("mail after the license came = %s", m)
		}
		sys.waitStatus("acc-spaet", func(cs codeStatus) bool { return cs.Activation == "" && cs.Delivery == "delivered" })
	})
	t.Run("off and on within the resend interval", func(t *testing.T) {
		before := sys.outbox()
		sys.push(up("accounts", "acc-wieder", map[string]any{"email": "wieder@praxis.de", "app_enabled": true}))
		sys.waitMail(before, "wieder@praxis.de")
		first := sys.waitStatus("acc-wieder", func(cs codeStatus) bool { return cs.Activation == "" && cs.SentAt != nil })
		sys.push(up("accounts", "acc-wieder", map[string]any{"app_enabled": false}))
		sys.push(up("accounts", "acc-wieder", map[string]any{"app_enabled": true}))
		// The new activation gets its own mail once the interval is over,
		// not "a code went out a moment ago".
		again := sys.waitStatus("acc-wieder", func(cs codeStatus) bool {
			return cs.Activation == "" && cs.SentAt != nil && cs.SentAt.After(*first.SentAt)
		})
		if again.Delivery == "failed" {
			t.Errorf("second activation's mail failed: %+v", again)
		}
	})
}
