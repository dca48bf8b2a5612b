package syncd

// This file is the admin step-up (DESIGN §5): TOTP enrolment and the
// check of a code, with its lockout.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// keyTOTPUsed marks a TOTP code as used, so that it is not accepted twice.
func keyTOTPUsed(tenant, account, code string) string {
	return "therasync:totp-used:" + fmt.Sprint(len(tenant)) + ":" + tenant + ":" + account + ":" + code
}

// keyStepUpFailures counts a tenant's wrong step-up codes in the current
// window.
func keyStepUpFailures(tenant string) string { return "therasync:totp-fails:" + tenant }

// keyStepUpLock refuses a tenant's step-ups while it exists.
func keyStepUpLock(tenant string) string { return "therasync:totp-lock:" + tenant }

// maxStepUpFailures wrong step-up codes of a tenant within the step-up
// window lock its step-ups for a window (DESIGN §5).
const maxStepUpFailures = 5

// stepUpScript counts a tenant's wrong step-up codes and locks its
// step-ups, in one atomic step.
//
//	KEYS[1] wrong codes in the current window   KEYS[2] the lock
//	ARGV[1] "1" when the code tried is right    ARGV[2] wrong codes that lock
//	ARGV[3] the window ms: the counting period and the lock's duration
//
// Returns 1 to accept a right code, 0 for a wrong one (counted; the one
// that reaches ARGV[2] sets the lock and starts a new count), and -ms left
// while the lock holds, for a right code as for a wrong one.
var stepUpScript = redis.NewScript(`
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return -wait end
if ARGV[1] == '1' then return 1 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
end
return 0
`)

// stepUpLockedError refuses step-ups of a tenant that tried too many wrong
// codes.
type stepUpLockedError struct{ RetryAfter time.Duration }

// Error says when step-ups are possible again.
func (e *stepUpLockedError) Error() string {
	return fmt.Sprintf("too many wrong TOTP codes; step-ups are refused for %s", e.RetryAfter.Round(time.Second))
}

// stepUp checks the X-TOTP header for the step-up of a full backup or a
// key rotation: a current code of an enrolled account that is an admin now.
func (s *Server) stepUp(ctx context.Context, t *store.Tenant, r *http.Request) error {
	enrolled, err := t.TOTPEnrolments(ctx)
	if err != nil {
		return err
	}
	return s.checkTOTP(ctx, t, r, enrolled, true)
}

// checkTOTP checks the X-TOTP header against the enrolments: a current code
// of one of them (with adminsOnly, of one whose account is an admin now).
// A code is accepted once. Wrong codes are counted per tenant: past
// maxStepUpFailures within the step-up window, every code, right or wrong,
// is refused with a *stepUpLockedError until the window ends. A missing,
// wrong or used code and a tenant without a fitting enrolment all answer
// errTOTPRequired, so that the answer does not tell who is enrolled.
func (s *Server) checkTOTP(ctx context.Context, t *store.Tenant, r *http.Request, enrolled []store.TOTPEnrolment, adminsOnly bool) error {
	if s.totpBox == nil {
		return errNoSecret
	}
	if s.cfg.Redis == nil {
		return errors.New("the step-up needs Redis for its limits and its replay check")
	}
	code := strings.TrimSpace(r.Header.Get(headerTOTP))
	if code == "" {
		return errTOTPRequired
	}
	// Every secret is tried, so that the time taken does not tell which
	// one matched.
	matched := ""
	for _, e := range enrolled {
		secret, err := s.totpBox.Open(e.Secret)
		if err != nil {
			return fmt.Errorf("open totp secret of %s: %w", e.AccountID, err)
		}
		if totp.Validate(code, string(secret)) && (e.Admin || !adminsOnly) && matched == "" {
			matched = e.AccountID
		}
	}
	right := "0"
	if matched != "" {
		right = "1"
	}
	res, err := stepUpScript.Run(ctx, s.cfg.Redis, []string{keyStepUpFailures(t.ID()), keyStepUpLock(t.ID())},
		right, maxStepUpFailures, s.cfg.StepUpWindow.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("step-up limit: %w", err)
	}
	switch {
	case res < 0:
		return &stepUpLockedError{RetryAfter: time.Duration(-res) * time.Millisecond}
	case res == 0:
		s.audit(ctx, t, store.AuditEntry{Actor: "practice", Action: "totp_failed", Detail: r.Pattern, Addr: clientAddr(r)})
		return errTOTPRequired
	}
	fresh, err := s.cfg.Redis.SetNX(ctx, keyTOTPUsed(t.ID(), matched, code), 1, 2*time.Minute).Result()
	if err != nil {
		return fmt.Errorf("mark totp code used: %w", err)
	}
	if !fresh {
		return errTOTPRequired // replayed
	}
	return nil
}

// handleEnrolTOTP serves POST /v1/practice/accounts/{id}/totp: it enrols an
// admin for the step-up. Once any account of the tenant is enrolled
// (whatever its role now, even deleted), every further enrolment needs a
// current code of an enrolled account, so that the practice key alone can
// neither replace nor add a second factor: demoting or deleting the
// enrolled admins does not reopen enrolment.
func (s *Server) handleEnrolTOTP(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings) {
	ctx := r.Context()
	if s.totpBox == nil {
		s.fail(w, r, errNoSecret)
		return
	}
	acc, err := t.Account(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, fmt.Errorf("account %q: %w", r.PathValue("id"), err))
		return
	}
	if acc.Role != model.RoleAdmin {
		s.fail(w, r, badRequest("only admin accounts enrol TOTP; %q is %q", acc.ID, acc.Role))
		return
	}
	enrolled, err := t.TOTPEnrolments(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	first := len(enrolled) == 0
	if !first {
		if err := s.checkTOTP(ctx, t, r, enrolled, false); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	name := acc.Email
	if name == "" {
		name = acc.ID
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Therasync " + st.Name, AccountName: name})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	img, err := key.Image(256, 256)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		s.fail(w, r, err)
		return
	}
	// A first enrolment is stored only if it still is the first.
	if err := t.SetTOTP(ctx, acc.ID, s.totpBox.Seal([]byte(key.Secret())), first); err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(ctx, t, store.AuditEntry{Actor: "practice", AccountID: acc.ID, Action: "totp_enrolled", Addr: clientAddr(r)})
	writeJSON(w, http.StatusOK, map[string]string{"otpauth_uri": key.URL(), "qr_png": base64.StdEncoding.EncodeToString(buf.Bytes())})
}
