package syncd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/therasync/therasync/syncd"
)

// totpSecret is the server secret of the step-up tests.
var totpSecret = []byte("totp-test-secret-0123456789abcdef-0123")

// stepUp sends a practice request with the X-TOTP header (none for "") and
// returns status, error code, body and the Retry-After header.
func (e *env) stepUp(tb testing.TB, method, path, code string) (status int, errCode string, body []byte, retryAfter string) {
	tb.Helper()
	req, err := http.NewRequest(method, e.URL+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.Key)
	if code != "" {
		req.Header.Set("X-TOTP", code)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	var eb struct{ Error string }
	json.Unmarshal(body, &eb)
	if resp.Header.Get("Content-Type") != "application/json" {
		body = []byte(fmt.Sprintf("(%d bytes of %s)", len(body), resp.Header.Get("Content-Type")))
	}
	return resp.StatusCode, eb.Error, body, resp.Header.Get("Retry-After")
}

// enrol enrols account with the code (none for "") and returns its TOTP
// secret, failing unless the enrolment succeeds.
func (e *env) enrol(tb testing.TB, account, code string) string {
	tb.Helper()
	st, _, body, _ := e.stepUp(tb, "POST", "/v1/practice/accounts/"+account+"/totp", code)
	var r struct {
		URI string `json:"otpauth_uri"`
	}
	json.Unmarshal(body, &r)
	u, err := url.Parse(r.URI)
	if st != http.StatusOK || err != nil || u.Query().Get("secret") == "" {
		tb.Fatalf("enrol %s = %d %s", account, st, body)
	}
	return u.Query().Get("secret")
}

// totpCode returns the secret's code for now+d; totp.Validate takes the codes
// of the previous, the current and the next period. A code made at the
// moment of use with d = 0 or 30s stays current for the test's seconds.
func totpCode(tb testing.TB, secret string, d time.Duration) string {
	tb.Helper()
	c, err := totp.GenerateCode(secret, time.Now().Add(d))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newStepUpEnv(tb testing.TB, window time.Duration) *liveEnv {
	tb.Helper()
	return newTenantEnv(tb, syncd.Config{Secret: totpSecret, StepUpWindow: window})
}

// TestEnrolmentOutlivesRoleChanges: with the practice key alone, demoting
// or deleting the enrolled admin does not reopen enrolment for a new admin,
// and the step-up needs an enrolled account that is an admin now.
func TestEnrolmentOutlivesRoleChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// gone demotes or deletes the enrolled a1, restore undoes it.
		gone, restore string
	}{
		{"demoted", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"member"}}]`,
			`[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin"}}]`},
		{"deleted", `[{"entity":"accounts","op":"delete","id":"a1"}]`,
			`[{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"Admin","role":"admin"}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStepUpEnv(t, 0)
			a1 := e.enrol(t, "a1", "")
			// The attack: a2 is an admin too; demote every enrolled admin,
			// enrol a fresh admin, restore the roles.
			e.push(t, "demote", `[{"entity":"accounts","op":"upsert","id":"a2","fields":{"role":"member"}}]`)
			e.push(t, "gone", tc.gone)
			e.push(t, "create", `[{"entity":"accounts","op":"upsert","id":"x9","fields":{"name":"Neu","role":"admin"}}]`)
			if st, code, body, _ := e.stepUp(t, "POST", "/v1/practice/accounts/x9/totp", ""); st != 403 || code != "totp_required" {
				t.Fatalf("enrol x9 after a1 was %s, without a code = %d %s; want 403 totp_required", tc.name, st, body)
			}
			if st, code, body, _ := e.stepUp(t, "POST", "/v1/practice/accounts/x9/totp", "abcdef"); st != 403 || code != "totp_required" {
				t.Errorf("enrol x9 with a wrong code = %d %s; want 403 totp_required", st, body)
			}
			// The step-up needs an admin now: a1's code does not serve
			// while a1 is no admin.
			if st, code, body, _ := e.stepUp(t, "GET", "/v1/practice/backup?as=x9", totpCode(t, a1, 0)); st != 403 || code != "totp_required" {
				t.Errorf("full backup with the code of a1 (%s) = %d %s; want 403 totp_required", tc.name, st, body)
			}
			// Enrolling another account takes the code of any enrolled
			// one, whatever its role now: a1 still holds the factor.
			x9 := e.enrol(t, "x9", totpCode(t, a1, 0))
			if st, _, body, _ := e.stepUp(t, "GET", "/v1/practice/backup?as=x9", totpCode(t, x9, 0)); st != 200 {
				t.Errorf("full backup with x9's code = %d %s; want 200", st, body)
			}
			e.push(t, "restore", tc.restore)
			if st, _, body, _ := e.stepUp(t, "GET", "/v1/practice/backup?as=a1", totpCode(t, a1, 30*time.Second)); st != 200 {
				t.Errorf("full backup with a1's code once a1 is an admin again = %d %s; want 200", st, body)
			}
		})
	}
}

// TestStepUpAnswersNameNoAccount: a missing, a wrong and a used code answer
// alike, naming no account.
func TestStepUpAnswersNameNoAccount(t *testing.T) {
	e := newStepUpEnv(t, 0)
	used := totpCode(t, e.enrol(t, "a1", ""), 0)
	if st, _, body, _ := e.stepUp(t, "POST", "/v1/practice/key/rotate", used); st != 200 {
		t.Fatalf("rotate = %d %s", st, body)
	} else {
		var r struct {
			Key string `json:"practice_key"`
		}
		json.Unmarshal(body, &r)
		e.Key = r.Key
	}
	var first []byte
	for _, tc := range []struct{ name, code string }{{"missing", ""}, {"wrong", "123"}, {"used", used}} {
		t.Run(tc.name, func(t *testing.T) {
			st, code, body, _ := e.stepUp(t, "POST", "/v1/practice/key/rotate", tc.code)
			if st != 403 || code != "totp_required" || bytes.Contains(body, []byte("a1")) {
				t.Errorf("rotate with a %s code = %d %s; want 403 totp_required naming no account", tc.name, st, body)
			}
			if !bytes.Contains(body, []byte("POST /v1/practice/accounts/{id}/totp")) {
				t.Errorf("totp_required says %s; want it to say how to enrol", body)
			}
			if first == nil {
				first = body
			} else if !bytes.Equal(body, first) {
				t.Errorf("a %s code answers %s; a missing one %s", tc.name, body, first)
			}
		})
	}
}

// TestStepUpLockout: five wrong codes lock the tenant's step-ups for the
// window, a right code included (429 with Retry-After); then a right code
// passes again.
func TestStepUpLockout(t *testing.T) {
	const window = 2 * time.Second
	e := newStepUpEnv(t, window)
	secret := e.enrol(t, "a1", "")
	wrong := []struct{ method, path string }{ // enrolments count alike
		{"GET", "/v1/practice/backup?as=a1"},
		{"POST", "/v1/practice/accounts/a2/totp"},
		{"POST", "/v1/practice/key/rotate"},
		{"GET", "/v1/practice/backup?as=a1"},
		{"POST", "/v1/practice/accounts/a2/totp"},
	}
	for i, w := range wrong {
		if st, code, body, _ := e.stepUp(t, w.method, w.path, strconv.Itoa(100000+i)); st != 403 || code != "totp_required" {
			t.Fatalf("wrong code %d (%s %s) = %d %s; want 403 totp_required", i+1, w.method, w.path, st, body)
		}
	}
	right := totpCode(t, secret, 30*time.Second) // current for the whole test
	locked := time.Now()
	st, code, body, retry := e.stepUp(t, "GET", "/v1/practice/backup?as=a1", right)
	secs, _ := strconv.Atoi(retry)
	if st != 429 || code != "too_many_attempts" || secs < 1 || secs > int(window/time.Second) {
		t.Fatalf("a right code after 5 wrong ones = %d %s, Retry-After %q; want 429 too_many_attempts, Retry-After 1..%d", st, body, retry, int(window/time.Second))
	}
	if st, _, _, _ := e.stepUp(t, "POST", "/v1/practice/key/rotate", totpCode(t, secret, 0)); st != 429 {
		t.Errorf("key rotation during the lock = %d; want 429", st)
	}
	// The refused right code was not used up: it passes once the lock ends.
	for {
		st, _, body, _ = e.stepUp(t, "GET", "/v1/practice/backup?as=a1", right)
		if st != 429 {
			break
		}
		if time.Since(locked) > 3*window {
			t.Fatalf("still locked %s after the lock began; the window is %s", time.Since(locked), window)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st != 200 {
		t.Errorf("the right code after the lock = %d %s; want 200", st, body)
	}
	if time.Since(locked) < window-200*time.Millisecond {
		t.Errorf("the lock lifted after %s; want about %s", time.Since(locked), window)
	}
	_, audit := e.do(t, "GET", "/v1/practice/audit?limit=1000", e.Key, nil)
	if n := strings.Count(string(audit), `"totp_failed"`); n != 5 {
		t.Errorf("audit has %d totp_failed lines; want 5", n)
	}
}

// TestStepUpReplay: a code is accepted once, also across step-ups.
func TestStepUpReplay(t *testing.T) {
	e := newStepUpEnv(t, 0)
	used := totpCode(t, e.enrol(t, "a1", ""), 30*time.Second)
	if st, _, body, _ := e.stepUp(t, "GET", "/v1/practice/backup?as=a1", used); st != 200 {
		t.Fatalf("backup = %d %s", st, body)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/practice/backup?as=a1"},
		{"POST", "/v1/practice/key/rotate"},
		{"POST", "/v1/practice/accounts/a2/totp"},
	} {
		if st, code, body, _ := e.stepUp(t, tc.method, tc.path, used); st != 403 || code != "totp_required" {
			t.Errorf("%s %s with a used code = %d %s; want 403 totp_required", tc.method, tc.path, st, body)
		}
	}
}
