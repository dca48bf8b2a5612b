package e2e_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pquerna/otp/totp"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// req sends a request with an explicit bearer token and headers.
func (sys *system) req(method, path, token string, body any, hdr map[string]string) (*http.Response, []byte) {
	sys.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, sys.url+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		sys.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// sendCode asks for an access code for account and returns it, read from
// the mail the worker wrote into the outbox.
func (sys *system) sendCode(account string) string {
	sys.t.Helper()
	before := sys.outbox()
	code, b := sys.do("POST", "/v1/practice/accounts/"+account+"/access-code", nil)
	if code != 200 {
		sys.t.Fatalf("send code to %s = %d %s", account, code, b)
	}
	m := sys.waitMail(before, "Zugangscode")
	match := regexp.MustCompile(`(?m)^    (\d{6,10})$`).FindStringSubmatch(m)
	if match == nil {
		sys.t.Fatalf("no code in the mail:\n%s", m)
	}
	return match[1]
}

func (sys *system) outbox() []string {
	files, _ := filepath.Glob(filepath.Join(sys.data, "outbox", "*.eml"))
	return files
}

// waitMail waits for a mail, not among old, whose text contains want.
func (sys *system) waitMail(old []string, want string) string {
	sys.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		files := sys.outbox()
		for i := len(files) - 1; i >= 0; i-- {
			if slices.Contains(old, files[i]) {
				continue
			}
			b, _ := os.ReadFile(files[i])
			if text := decodeMail(string(b)); strings.Contains(text, want) {
				return text
			}
		}
		if time.Now().After(deadline) {
			sys.t.Fatalf("no mail containing %q among %d in the outbox\n%s", want, len(files), sys.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// decodeMail returns a mail's headers and decoded text body.
func decodeMail(raw string) string {
	head, body, _ := strings.Cut(strings.ReplaceAll(raw, "\r\n", "\n"), "\n\n")
	if strings.Contains(head, "Content-Transfer-Encoding: quoted-printable") {
		body = strings.ReplaceAll(body, "=\n", "")
		body = regexp.MustCompile(`=([0-9A-F]{2})`).ReplaceAllStringFunc(body, func(s string) string {
			b, _ := hex.DecodeString(s[1:])
			return string(b)
		})
	}
	if strings.Contains(head, "Content-Transfer-Encoding: base64") {
		b, _ := base64.StdEncoding.DecodeString(strings.ReplaceAll(body, "\n", ""))
		body = string(b)
	}
	return head + "\n\n" + body
}

type login struct {
	Token     string `json:"token"`
	TenantID  string `json:"tenant_id"`
	AccountID string `json:"account_id"`
	Role      string `json:"role"`
	Shard     struct {
		Seq    int64  `json:"seq"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"shard"`
}

func (sys *system) login(email, code, device string) (int, login, []byte) {
	sys.t.Helper()
	resp, b := sys.req("POST", "/v1/device/login", "", map[string]string{"email": email, "code": code, "device_id": device, "device_name": "Pixel von " + device, "platform": "android"}, nil)
	var l login
	json.Unmarshal(b, &l)
	return resp.StatusCode, l, b
}

func errCode(b []byte) string {
	var e struct{ Error string }
	json.Unmarshal(b, &e)
	return e.Error
}

// readyAccount seeds the group, enables m1's app and waits for its shard.
func readyAccount(sys *system) {
	sys.t.Helper()
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	sys.waitShard("m1", sys.seq(), 5*time.Second)
}

// TestDeviceLoginEndToEnd: send a code, read it from the outbox, log in,
// download the shard, log out; nothing holds a code or token in plain text.
func TestDeviceLoginEndToEnd(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	readyAccount(sys)

	code := sys.sendCode("m1")
	mailText := sys.waitMail(nil, code)
	var status struct {
		SentAt    time.Time `json:"sent_at"`
		ExpiresAt time.Time `json:"expires_at"`
		Valid     bool      `json:"valid"`
	}
	_, b := sys.do("GET", "/v1/practice/accounts/m1/access-code", nil)
	json.Unmarshal(b, &status)
	if !status.Valid || status.ExpiresAt.Sub(status.SentAt) != 15*time.Minute {
		t.Errorf("code status = %s; want valid for 15 minutes", b)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if want := status.ExpiresAt.In(berlin).Format("15:04") + " Uhr"; !strings.Contains(mailText, want) || !strings.Contains(mailText, "English") {
		t.Errorf("mail lacks the expiry %q in the tenant's time zone or the English line:\n%s", want, mailText)
	}
	if code2, b := sys.do("POST", "/v1/practice/accounts/m1/access-code", nil); code2 != 429 || !strings.Contains(string(b), `"retry_after"`) {
		t.Errorf("second code within a minute = %d %s; want 429 with retry_after", code2, b)
	}

	st, l, b := sys.login("J@X.de", code, "phone-1")
	if st != 200 || l.Token == "" || l.AccountID != "m1" || l.Role != "member" || l.TenantID != sys.tenant.ID() {
		t.Fatalf("login = %d %s", st, b)
	}
	_, info := sys.do("GET", "/v1/practice/accounts/m1/shard", nil)
	var si shardInfo
	json.Unmarshal(info, &si)
	if l.Shard.Seq != si.Seq || l.Shard.SHA256 != si.SHA256 || l.Shard.Size != si.Size {
		t.Errorf("login shard = %+v; want the newest shard %+v", l.Shard, si)
	}
	if len(l.Token) < 43 {
		t.Errorf("token %d chars; want ≥ 256 random bits", len(l.Token))
	}

	// Download: full, conditional, ranged, gzip.
	resp, body := sys.req("GET", "/v1/device/shard", l.Token, nil, nil)
	sum := sha256.Sum256(body)
	if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != l.Shard.SHA256 || resp.Header.Get("ETag") != `"`+l.Shard.SHA256+`"` {
		t.Fatalf("shard download = %d, sha256 %x, ETag %s; want the login's sha256", resp.StatusCode, sum, resp.Header.Get("ETag"))
	}
	if resp, _ := sys.req("GET", "/v1/device/shard", l.Token, nil, map[string]string{"If-None-Match": `"` + l.Shard.SHA256 + `"`}); resp.StatusCode != 304 {
		t.Errorf("conditional download = %d; want 304", resp.StatusCode)
	}
	resp, part := sys.req("GET", "/v1/device/shard", l.Token, nil, map[string]string{"Range": "bytes=100-"})
	if resp.StatusCode != 206 || !bytes.Equal(part, body[100:]) {
		t.Errorf("ranged download = %d, %d bytes; want 206 with the rest after byte 100", resp.StatusCode, len(part))
	}
	resp, gz := sys.req("GET", "/v1/device/shard", l.Token, nil, map[string]string{"Accept-Encoding": "gzip"})
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip download: %v, Content-Encoding %q", err, resp.Header.Get("Content-Encoding"))
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, body) || len(gz) >= len(body) {
		t.Errorf("gzip download: %d bytes unzipping to %d; want the shard, smaller", len(gz), len(unzipped))
	}

	// Single use; the new device got a notice mail.
	if st, _, b := sys.login("j@x.de", code, "phone-2"); st != 401 || errCode(b) != "invalid_code" {
		t.Errorf("the same code again = %d %s; want 401 invalid_code", st, b)
	}
	sys.waitMail(nil, "Pixel von phone-1")

	_, b = sys.do("GET", "/v1/practice/accounts/m1/devices", nil)
	if !strings.Contains(string(b), `"device_id":"phone-1"`) || !strings.Contains(string(b), `"state":"active"`) {
		t.Errorf("devices = %s; want phone-1 active", b)
	}
	if resp, b := sys.req("POST", "/v1/device/logout", l.Token, nil, nil); resp.StatusCode != 200 {
		t.Fatalf("logout = %d %s", resp.StatusCode, b)
	}
	if resp, b := sys.req("GET", "/v1/device/shard", l.Token, nil, nil); resp.StatusCode != 401 || errCode(b) != "unauthorized" {
		t.Errorf("download after logout = %d %s; want 401 unauthorized", resp.StatusCode, b)
	}

	// The audit log tells the story without secrets; failed logins are
	// written in the background, within about 100 ms.
	deadline := time.Now().Add(5 * time.Second)
	for _, action := range []string{"code_sent", "login_failed", `"login"`, "shard_download", "logout"} {
		for {
			_, audit := sys.do("GET", "/v1/practice/audit?since=0", nil)
			if strings.Contains(string(audit), action) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("audit lacks %s: %s", action, audit)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sys.noSecretsAnywhere(code, l.Token)
}

// noSecretsAnywhere fails if a secret appears in plain text in Redis, in
// any SQLite file (WAL included) of the data directory, or in the logs. The
// outbox is left out: the mail is where the code belongs.
func (sys *system) noSecretsAnywhere(secrets ...string) {
	sys.t.Helper()
	ctx := context.Background()
	keys, err := sys.rdb.Keys(ctx, "*").Result()
	if err != nil {
		sys.t.Fatal(err)
	}
	var redisDump strings.Builder
	for _, k := range keys {
		v, _ := sys.rdb.Dump(ctx, k).Result()
		redisDump.WriteString(k + "\x00" + v + "\x00")
	}
	var files []string
	filepath.Walk(sys.data, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !strings.Contains(p, string(filepath.Separator)+"outbox"+string(filepath.Separator)) {
			files = append(files, p)
		}
		return nil
	})
	for _, secret := range secrets {
		if strings.Contains(redisDump.String(), secret) {
			sys.t.Errorf("Redis holds %q in plain text", secret)
		}
		if strings.Contains(sys.logs.String(), secret) {
			sys.t.Errorf("the logs hold %q", secret)
		}
		_, tail, _ := strings.Cut(secret, ".") // a token's secret part
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte(secret)) || (tail != "" && bytes.Contains(b, []byte(tail))) {
				sys.t.Errorf("%s holds %q in plain text", f, secret)
			}
		}
	}
	if len(files) < 3 || len(keys) == 0 {
		sys.t.Errorf("searched %d files and %d Redis keys; the search looked at nothing", len(files), len(keys))
	}
}

func TestConcurrentLoginsOneCode(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	readyAccount(sys)
	code := sys.sendCode("m1")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens []string
		codes  = map[int]int{}
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, l, _ := sys.login("j@x.de", code, fmt.Sprint("phone-", i))
			mu.Lock()
			defer mu.Unlock()
			codes[st]++
			if st == 200 {
				tokens = append(tokens, l.Token)
			}
		}()
	}
	wg.Wait()
	if len(tokens) != 1 || codes[401] != 49 {
		t.Errorf("50 concurrent logins with one code: %v; want exactly one token and 49 × 401", codes)
	}
}

func TestWrongGuessesAndSameAnswers(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	readyAccount(sys)
	code := sys.sendCode("m1")
	wrong := fmt.Sprintf("%06d", (mustAtoi(code)+1)%1000000)
	stUnknown, _, bUnknown := sys.login("nobody@x.de", wrong, "phone-x")
	stWrong, _, bWrong := sys.login("j@x.de", wrong, "phone-x")
	if stUnknown != 401 || stUnknown != stWrong || !bytes.Equal(bUnknown, bWrong) {
		t.Errorf("unknown email = %d %s; wrong code = %d %s; want the same 401 answer", stUnknown, bUnknown, stWrong, bWrong)
	}
	for range 4 {
		sys.login("j@x.de", wrong, "phone-x")
	}
	if st, _, b := sys.login("j@x.de", code, "phone-x"); st != 401 || errCode(b) != "invalid_code" {
		t.Errorf("right code after 5 wrong guesses = %d %s; want 401 invalid_code (void)", st, b)
	}
	for _, body := range []map[string]string{
		{"email": "j@x.de", "code": code},
		{"code": code, "device_id": "d"},
		{"email": "j@x.de", "device_id": "d"},
	} {
		if resp, b := sys.req("POST", "/v1/device/login", "", body, nil); resp.StatusCode != 400 {
			t.Errorf("login %v = %d %s; want 400", body, resp.StatusCode, b)
		}
	}
}

func mustAtoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestShardNotReadyKeepsCode: a login before the shard is built fails with
// shard_not_ready, and the code still works once it is.
func TestShardNotReadyKeepsCode(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	// No worker yet: the code is issued (the mail waits in the queue), the
	// shard is not built.
	code, expires, err := sys.codes.Issue(context.Background(), sys.tenant.ID(), "m1", "j@x.de")
	if err != nil || expires.IsZero() {
		t.Fatal(err)
	}
	if st, _, b := sys.login("j@x.de", code, "phone-1"); st != 409 || errCode(b) != "shard_not_ready" {
		t.Fatalf("login before the shard = %d %s; want 409 shard_not_ready", st, b)
	}
	sys.startWorker(time.Hour)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	if st, _, b := sys.login("j@x.de", code, "phone-1"); st != 200 {
		t.Errorf("login with the same code once the shard is built = %d %s; want 200", st, b)
	}
}

// TestTamperedShardIsRebuilt: a shard file changed on disk after its
// build is not handed out: the download answers shard_not_ready (a login
// checks only the file's size, so that it never hashes a large shard; the
// download hashes each file version once), the worker rebuilds the shard
// although its seq is current, and then the download matches its sha256.
func TestTamperedShardIsRebuilt(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	readyAccount(sys)
	old := sys.waitShard("m1", sys.seq(), 5*time.Second)
	path := filepath.Join(sys.data, shardbuilder.ShardDir(sys.tenant.ID(), "m1"), fmt.Sprintf("%d.db", old.Seq))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[len(b)/2:], "tampered")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, err := sys.codes.Issue(context.Background(), sys.tenant.ID(), "m1", "j@x.de")
	if err != nil {
		t.Fatal(err)
	}
	st, l, body := sys.login("j@x.de", code, "phone-1")
	if st != 200 {
		t.Fatalf("login = %d %s", st, body)
	}
	if resp, b := sys.req("GET", "/v1/device/shard", l.Token, nil, nil); resp.StatusCode != 409 || errCode(b) != "shard_not_ready" {
		t.Fatalf("download of the tampered shard = %d %s; want 409 shard_not_ready", resp.StatusCode, b)
	}
	deadline := time.Now().Add(5 * time.Second)
	var rebuilt shardInfo
	for rebuilt = sys.waitShard("m1", old.Seq, time.Second); rebuilt.SHA256 == old.SHA256; rebuilt = sys.waitShard("m1", old.Seq, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("the tampered shard was not rebuilt within 5s\n%s", sys.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, shard := sys.req("GET", "/v1/device/shard", l.Token, nil, nil)
	sum := sha256.Sum256(shard)
	if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != rebuilt.SHA256 {
		t.Errorf("download after the rebuild = %d, sha256 %x; want 200 with the rebuilt %s (not the old %s)", resp.StatusCode, sum, rebuilt.SHA256, old.SHA256)
	}
	if n := strings.Count(sys.logs.String(), "shard refused"); n != 1 {
		t.Errorf("the tampered shard was logged %d times; want once\n%s", n, sys.logs)
	}
}

func TestCodeExpiry(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.codeTTL = 300 * time.Millisecond })
	sys.startWorker(time.Hour)
	readyAccount(sys)
	code := sys.sendCode("m1")
	time.Sleep(400 * time.Millisecond)
	if st, _, b := sys.login("j@x.de", code, "phone-1"); st != 401 || errCode(b) != "invalid_code" {
		t.Errorf("login with an expired code = %d %s; want 401 invalid_code", st, b)
	}
	_, b := sys.do("GET", "/v1/practice/accounts/m1/access-code", nil)
	if !strings.Contains(string(b), `"valid":false`) {
		t.Errorf("status of an expired code = %s; want valid false", b)
	}
}

func TestSendCodePreconditions(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "noemail", map[string]any{"name": "N", "role": "member", "app_enabled": true, "email": "not-an-address"}))
	for _, tt := range []struct {
		account string
		status  int
		code    string
	}{
		{"m2", 403, "app_disabled"},
		{"noemail", 403, "no_email"},
		{"ghost", 404, "not_found"},
	} {
		if st, b := sys.do("POST", "/v1/practice/accounts/"+tt.account+"/access-code", nil); st != tt.status || errCode(b) != tt.code {
			t.Errorf("send code to %s = %d %s; want %d %s", tt.account, st, b, tt.status, tt.code)
		}
	}
	// A tenant without the app license.
	st, key, err := sys.store.CreateTenant(context.Background(), store.NewTenant{Name: "Q", Licenses: []string{"sync"}})
	if err != nil {
		t.Fatal(err)
	}
	sys.key = key
	_ = st
	sys.push(up("accounts", "m9", map[string]any{"name": "M", "email": "m9@x.de", "role": "member", "app_enabled": true}))
	if st, b := sys.do("POST", "/v1/practice/accounts/m9/access-code", nil); st != 403 || errCode(b) != "license_missing" {
		t.Errorf("send code without the app license = %d %s; want 403 license_missing", st, b)
	}
}

// TestRevocation: a revoked device and a disabled account are refused with
// device_revoked; re-enabling the account lets the same token work again.
func TestRevocation(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.resend = 10 * time.Millisecond })
	sys.startWorker(time.Hour)
	readyAccount(sys)
	_, a, _ := sys.login("j@x.de", sys.sendCode("m1"), "phone-a")
	time.Sleep(20 * time.Millisecond)
	code := sys.sendCode("m1")
	_, b2, raw := sys.login("j@x.de", code, "phone-b")
	if a.Token == "" || b2.Token == "" {
		t.Fatalf("logins failed: %s", raw)
	}
	download := func(token string) (int, string) {
		resp, b := sys.req("GET", "/v1/device/shard", token, nil, nil)
		return resp.StatusCode, errCode(b)
	}
	sub := sys.rdb.Subscribe(context.Background(), "therasync:revocations")
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}

	if st, b := sys.do("POST", "/v1/practice/devices/phone-a/revoke", map[string]bool{"wipe": true}); st != 200 || !strings.Contains(string(b), `"state":"wiped"`) {
		t.Fatalf("revoke = %d %s", st, b)
	}
	if msg := receive(t, sub); !strings.Contains(msg, `"device_id":"phone-a"`) || !strings.Contains(msg, `"wipe":true`) {
		t.Errorf("revocation event = %s; want phone-a with wipe", msg)
	}
	if st, code := download(a.Token); st != 403 || code != "device_revoked" {
		t.Errorf("download by the revoked device = %d %s; want 403 device_revoked", st, code)
	}
	if st, _ := download(b2.Token); st != 200 {
		t.Errorf("download by the other device = %d; want 200", st)
	}

	sys.push(up("accounts", "m1", map[string]any{"app_enabled": false}))
	if msg := receive(t, sub); !strings.Contains(msg, `"account_id":"m1"`) || strings.Contains(msg, "device_id") {
		t.Errorf("revocation event of the disabled account = %s; want every device of m1", msg)
	}
	if st, code := download(b2.Token); st != 403 || code != "device_revoked" {
		t.Errorf("download after disabling the app = %d %s; want 403 device_revoked", st, code)
	}
	sys.push(up("accounts", "m1", map[string]any{"app_enabled": true}))
	if st, _ := download(b2.Token); st != 200 {
		t.Errorf("download with the same token after re-enabling = %d; want 200", st)
	}
	if st, code := download(a.Token); st != 403 || code != "device_revoked" {
		t.Errorf("the revoked device after re-enabling the account = %d %s; want still 403", st, code)
	}
	_, audit := sys.do("GET", "/v1/practice/audit", nil)
	for _, action := range []string{"device_revoked", "app_disabled", "app_enabled"} {
		if !strings.Contains(string(audit), action) {
			t.Errorf("audit lacks %s", action)
		}
	}
	if st, b := sys.do("POST", "/v1/practice/devices/nope/revoke", nil); st != 404 {
		t.Errorf("revoke of an unknown device = %d %s; want 404", st, b)
	}
}

// receive returns the next message's payload on a subscription.
func receive(tb testing.TB, sub *redis.PubSub) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		tb.Fatalf("no revocation event: %v", err)
	}
	return msg.Payload
}

// TestTOTPStepUp: an admin enrols; a full backup and a key rotation need a
// current code, which is accepted once.
func TestTOTPStepUp(t *testing.T) {
	sys := newSystem(t)
	seedGroup(sys)
	sys.push(up("accounts", "a1", map[string]any{"name": "Admin", "email": "a@x.de", "role": "admin"}))
	if st, b := sys.do("GET", "/v1/practice/backup?as=a1", nil); st != 403 || errCode(b) != "totp_required" {
		t.Fatalf("admin backup before enrolment = %d %s; want 403 totp_required", st, b)
	}
	if st, b := sys.do("POST", "/v1/practice/accounts/m1/totp", nil); st != 400 {
		t.Errorf("enrol a member = %d %s; want 400", st, b)
	}
	st, b := sys.do("POST", "/v1/practice/accounts/a1/totp", nil)
	var enrol struct {
		URI string `json:"otpauth_uri"`
		QR  string `json:"qr_png"`
	}
	json.Unmarshal(b, &enrol)
	u, err := url.Parse(enrol.URI)
	if st != 200 || err != nil || u.Scheme != "otpauth" {
		t.Fatalf("enrol = %d %s", st, b)
	}
	png64, _ := base64.StdEncoding.DecodeString(enrol.QR)
	if _, err := png.Decode(bytes.NewReader(png64)); err != nil {
		t.Errorf("QR image: %v", err)
	}
	secret := u.Query().Get("secret")
	now, _ := totp.GenerateCode(secret, time.Now())
	next, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))

	if resp, _ := sys.req("GET", "/v1/practice/backup?as=a1", sys.key, nil, map[string]string{"X-TOTP": "000000"}); resp.StatusCode != 403 && now != "000000" {
		t.Errorf("admin backup with a wrong code = %d; want 403", resp.StatusCode)
	}
	if resp, body := sys.req("GET", "/v1/practice/backup?as=a1", sys.key, nil, map[string]string{"X-TOTP": now}); resp.StatusCode != 200 || len(body) == 0 {
		t.Errorf("admin backup with a current code = %d; want 200", resp.StatusCode)
	}
	if resp, b := sys.req("GET", "/v1/practice/backup?as=a1", sys.key, nil, map[string]string{"X-TOTP": now}); resp.StatusCode != 403 || errCode(b) != "totp_required" {
		t.Errorf("the same code again = %d %s; want 403 totp_required", resp.StatusCode, b)
	}
	if st, _ := sys.do("GET", "/v1/practice/backup?as=m1", nil); st != 200 {
		t.Errorf("a member's backup = %d; want 200 without step-up", st)
	}
	// Re-enrolment needs the step-up once someone is enrolled.
	if st, b := sys.do("POST", "/v1/practice/accounts/a1/totp", nil); st != 403 || errCode(b) != "totp_required" {
		t.Errorf("re-enrol without a code = %d %s; want 403 totp_required", st, b)
	}
	if st, b := sys.do("POST", "/v1/practice/key/rotate", nil); st != 403 {
		t.Errorf("key rotation without a code = %d %s; want 403", st, b)
	}
	resp, b := sys.req("POST", "/v1/practice/key/rotate", sys.key, nil, map[string]string{"X-TOTP": next})
	var rot struct {
		Key string `json:"practice_key"`
	}
	json.Unmarshal(b, &rot)
	if resp.StatusCode != 200 || rot.Key == "" {
		t.Fatalf("key rotation = %d %s", resp.StatusCode, b)
	}
	old := sys.key
	if st, _ := sys.do("GET", "/v1/practice/changes", nil); st != 401 {
		t.Errorf("old key after rotation = %d; want 401", st)
	}
	sys.key = rot.Key
	if st, _ := sys.do("GET", "/v1/practice/changes", nil); st != 200 {
		t.Errorf("new key = %d; want 200", st)
	}
	_, audit := sys.do("GET", "/v1/practice/audit", nil)
	for _, action := range []string{"totp_enrolled", "backup_export", "key_rotated"} {
		if !strings.Contains(string(audit), action) {
			t.Errorf("audit lacks %s", action)
		}
	}
	sys.noSecretsAnywhere(secret, rot.Key, old)
}

// TestDeviceIDBelongsToItsAccount: a device id belongs to the account that
// logged it in (DESIGN §5): another account's login with it is refused
// with 409 unless the device logged out, the refused login spends no code,
// and no login clears a revocation or a pending wipe.
func TestDeviceIDBelongsToItsAccount(t *testing.T) {
	sys := newSystem(t, func(s *system) { s.resend = 10 * time.Millisecond })
	sys.startWorker(time.Hour)
	readyAccount(sys)
	sys.push(up("accounts", "m2", map[string]any{"app_enabled": true}))
	sys.waitShard("m2", sys.seq(), 5*time.Second)
	code := func(account string) string {
		time.Sleep(20 * time.Millisecond) // the resend limit
		return sys.sendCode(account)
	}
	login := func(email, c, device string, want int, wantCode string) login {
		t.Helper()
		st, l, b := sys.login(email, c, device)
		if st != want || want != 200 && errCode(b) != wantCode {
			t.Fatalf("login of %s on %s = %d %s; want %d %s", email, device, st, b, want, wantCode)
		}
		return l
	}
	lost := login("j@x.de", code("m1"), "tab-1", 200, "")

	m2code := code("m2")
	login("l@x.de", m2code, "tab-1", 409, "conflict")
	if st, b := sys.do("POST", "/v1/practice/devices/tab-1/revoke", map[string]bool{"wipe": true}); st != 200 {
		t.Fatalf("revoke = %d %s", st, b)
	}
	login("l@x.de", m2code, "tab-1", 409, "conflict") // the code was not spent
	// The lost phone still gets its wipe.
	h := http.Header{}
	h.Set("Authorization", "Bearer "+lost.Token)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(sys.url, "http")+"/v1/device/sync?cursor=0", h)
	if err != nil {
		t.Fatalf("the lost phone's connection: %v", err)
	}
	_, wipe, _ := ws.ReadMessage()
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !strings.Contains(string(wipe), `"wipe"`) || !errors.As(err, &ce) || ce.Code != 4003 {
		t.Errorf("the lost phone got %s then %v; want the wipe and 4003", wipe, err)
	}
	ws.Close()
	if _, b := sys.do("GET", "/v1/practice/accounts/m1/devices", nil); !strings.Contains(string(b), `"device_id":"tab-1"`) || !strings.Contains(string(b), `"state":"wiped"`) {
		t.Errorf("m1's devices = %s; want tab-1, wiped", b)
	}
	// Its own account cannot lift the revocation by logging in again.
	login("j@x.de", code("m1"), "tab-1", 403, "device_revoked")
	login("l@x.de", m2code, "tab-2", 200, "")

	// A device that logged out is free for another account.
	free := login("j@x.de", code("m1"), "tab-3", 200, "")
	if st, _ := sys.req("POST", "/v1/device/logout", free.Token, nil, nil); st.StatusCode != 200 {
		t.Fatalf("logout = %d", st.StatusCode)
	}
	login("l@x.de", code("m2"), "tab-3", 200, "")
	if _, b := sys.do("GET", "/v1/practice/accounts/m2/devices", nil); !strings.Contains(string(b), `"device_id":"tab-3"`) {
		t.Errorf("m2's devices = %s; want tab-3", b)
	}
	// A revoked device stays revoked, logged out or not.
	rev := login("j@x.de", code("m1"), "tab-4", 200, "")
	sys.do("POST", "/v1/practice/devices/tab-4/revoke", nil)
	if st, _ := sys.req("POST", "/v1/device/logout", rev.Token, nil, nil); st.StatusCode != 200 {
		t.Fatalf("logout of a revoked device = %d", st.StatusCode)
	}
	login("l@x.de", code("m2"), "tab-4", 403, "device_revoked")
}
