package syncd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// Mailer enqueues mails for the worker to send.
type Mailer interface {
	SendCode(ctx context.Context, tenant, account, code string, expires time.Time) error
	SendLoginNotice(ctx context.Context, tenant, account, device string, at time.Time) error
}

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

// The step-up's header, and the longest device name and platform a login
// takes.
const (
	headerTOTP          = "X-TOTP"
	maxDeviceNameLength = 100
)

var (
	errNoEmail       = errors.New("the account has no valid email address")
	errShardNotReady = errors.New("the account's shard is not built yet; try again shortly")
	errTOTPRequired  = errors.New("missing, wrong or used TOTP code: this needs a current code of an enrolled admin in the X-TOTP header")
	errNoSecret      = errors.New("the server has no SECRET configured for TOTP")
)

// audit appends e to the tenant's audit log. A failure is logged, not
// returned: the action it records has already happened.
func (s *Server) audit(ctx context.Context, t *store.Tenant, e store.AuditEntry) {
	if err := t.Audit(ctx, e); err != nil {
		s.log.Error("audit", "tenant", t.ID(), "action", e.Action, "err", err)
	}
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// validEmail reports whether s is one plain, syntactically valid address.
func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && strings.Contains(s, "@")
}

type codeStatus struct {
	SentAt    *time.Time `json:"sent_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Valid     bool       `json:"valid"`
}

// handleSendCode serves POST /v1/practice/accounts/{id}/access-code.
func (s *Server) handleSendCode(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings) {
	ctx := r.Context()
	if s.cfg.Codes == nil || s.cfg.Mail == nil {
		s.fail(w, r, errors.New("access codes are not configured"))
		return
	}
	acc, err := s.appAccount(ctx, t, st, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code, expires, err := s.cfg.Codes.Issue(ctx, t.ID(), acc.ID, acc.Email)
	var tooSoon *authcode.TooSoonError
	if errors.As(err, &tooSoon) {
		secs := int(tooSoon.RetryAfter.Seconds() + 0.999)
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": wire.CodeTooManyAttempts, "message": tooSoon.Error(), "retry_after": secs})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sent := expires.Add(-s.cfg.Codes.TTL())
	if err := t.RecordCodeSent(ctx, acc.ID, sent, expires); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Mail.SendCode(ctx, t.ID(), acc.ID, code, expires); err != nil {
		s.fail(w, r, fmt.Errorf("send code: %w", err))
		return
	}
	s.audit(ctx, t, store.AuditEntry{Actor: "practice", AccountID: acc.ID, Action: "code_sent", Addr: clientAddr(r)})
	writeJSON(w, http.StatusOK, codeStatus{SentAt: &sent, ExpiresAt: &expires, Valid: true})
}

// appAccount returns the account if it can use the app: the tenant holds
// both licenses, the account exists, its app access is enabled and it has a
// valid email.
func (s *Server) appAccount(ctx context.Context, t *store.Tenant, st store.Settings, id string) (store.Account, error) {
	if err := appLicenses(st); err != nil {
		return store.Account{}, err
	}
	acc, err := t.Account(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Account{}, fmt.Errorf("account %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Account{}, err
	}
	if !acc.AppEnabled {
		return acc, fmt.Errorf("account %q: %w", id, errAppDisabled)
	}
	if !validEmail(acc.Email) {
		return acc, fmt.Errorf("account %q: %w", id, errNoEmail)
	}
	return acc, nil
}

// appLicenses refuses a tenant without both licenses the app needs.
func appLicenses(st store.Settings) error {
	for _, l := range []string{store.LicenseSync, store.LicenseApp} {
		if !st.HasLicense(l) {
			return fmt.Errorf("the practice group holds no %q license: %w", l, store.ErrLicenseMissing)
		}
	}
	return nil
}

// handleCodeStatus serves GET /v1/practice/accounts/{id}/access-code.
func (s *Server) handleCodeStatus(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := t.Account(ctx, id); err != nil {
		s.fail(w, r, fmt.Errorf("account %q: %w", id, err))
		return
	}
	sent, expires, err := t.LastCodeSent(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, codeStatus{})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	live := false
	if s.cfg.Codes != nil {
		if live, err = s.cfg.Codes.Live(ctx, t.ID(), id); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, codeStatus{SentAt: &sent, ExpiresAt: &expires, Valid: live && time.Now().Before(expires)})
}

// handleDevices serves GET /v1/practice/accounts/{id}/devices.
func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	id := r.PathValue("id")
	if _, err := t.Account(r.Context(), id); err != nil {
		s.fail(w, r, fmt.Errorf("account %q: %w", id, err))
		return
	}
	ds, err := t.Devices(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": ds})
}

type revokeRequest struct {
	Wipe bool `json:"wipe"`
}

// handleRevoke serves POST /v1/practice/devices/{id}/revoke.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	var req revokeRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	d, err := t.RevokeDevice(r.Context(), r.PathValue("id"), req.Wipe, "practice", clientAddr(r))
	if err != nil {
		s.fail(w, r, fmt.Errorf("device %q: %w", r.PathValue("id"), err))
		return
	}
	s.publishRevocation(r.Context(), Revocation{Tenant: t.ID(), AccountID: d.AccountID, DeviceID: d.ID, Wipe: d.Wipe})
	writeJSON(w, http.StatusOK, d)
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

// handleRotateKey serves POST /v1/practice/key/rotate (step-up required).
func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	if err := s.stepUp(r.Context(), t, r); err != nil {
		s.fail(w, r, err)
		return
	}
	key, err := t.RotateKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r.Context(), t, store.AuditEntry{Actor: "practice", Action: "key_rotated", Addr: clientAddr(r)})
	s.publishRevocation(r.Context(), Revocation{Tenant: t.ID(), Practice: true, Current: fingerprint(keyHash(key))})
	writeJSON(w, http.StatusOK, map[string]string{"practice_key": key})
}

// handleAudit serves GET /v1/practice/audit?since=ID&limit=N.
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	since, err := queryInt(r.URL.Query().Get("since"), "since", 0, 0, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := queryInt(r.URL.Query().Get("limit"), "limit", 100, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	es, err := t.AuditLog(r.Context(), since, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": es})
}
