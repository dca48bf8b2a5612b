package syncd

// This file is the practice's access codes: sending one and its status.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

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

// The step-up's header, and the longest device name and platform a login
// takes.
const (
	headerTOTP          = "X-TOTP"
	maxDeviceNameLength = 100
)

var (
	errNoEmail       = errors.New("the account has no valid email address")
	errShardNotReady = errors.New("the account's shard is not built yet; try again shortly")
	errTOTPRequired  = errors.New("missing, wrong or used TOTP code: this needs a current code of an enrolled admin in the X-TOTP header " +
		"(enrol an admin with POST /v1/practice/accounts/{id}/totp and add the otpauth URI or QR code it answers to an authenticator app)")
	errNoSecret = errors.New("the server has no SECRET configured for TOTP")
)

type codeStatus struct {
	SentAt    *time.Time `json:"sent_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Valid     bool       `json:"valid"`
	// Delivery is what became of the newest code's mail: queued,
	// delivered or failed (with DeliveredAt, or FailedAt and Failure).
	Delivery    string     `json:"delivery,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	FailedAt    *time.Time `json:"failed_at,omitempty"`
	Failure     string     `json:"failure,omitempty"`
	// Activation is pending while the app was enabled and its code mail
	// waits for the preconditions (Blocked says which one fails).
	Activation string `json:"activation,omitempty"`
	// Blocked is the error code of the first precondition of DESIGN §5
	// that fails now (license_missing, app_disabled, no_email,
	// shard_not_ready), with Reason in words; empty when a code can be sent.
	Blocked string `json:"blocked,omitempty"`
	Reason  string `json:"reason,omitempty"`
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
	// A code the practice sent is the activation's too: the worker sends
	// no second one after the build (it would replace this one).
	if err := t.ActivationDone(ctx, acc.ID); err != nil {
		s.fail(w, r, err)
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
	if !model.ValidEmail(acc.Email) {
		return acc, fmt.Errorf("account %q: %w", id, errNoEmail)
	}
	return acc, nil
}

// appLicenses refuses a tenant without the licenses the app needs
// (model.AppLicenses, the list DeviceMaySync checks too).
func appLicenses(st store.Settings) error {
	if l := model.MissingAppLicense(st.Licenses); l != "" {
		return fmt.Errorf("the practice group holds no %q license: %w", l, store.ErrLicenseMissing)
	}
	return nil
}

// handleCodeStatus serves GET /v1/practice/accounts/{id}/access-code:
// when the last code was sent, what became of its mail, and why no code
// can be sent now, if so.
func (s *Server) handleCodeStatus(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings) {
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := t.Account(ctx, id); err != nil {
		s.fail(w, r, fmt.Errorf("account %q: %w", id, err))
		return
	}
	var cs codeStatus
	if _, err := s.appAccount(ctx, t, st, id); err != nil {
		cs.Blocked, cs.Reason = errorCode(err), publicMessage(err)
	} else if _, err := t.LatestShard(ctx, id); errors.Is(err, store.ErrNotFound) {
		cs.Blocked, cs.Reason = wire.CodeShardNotReady, errShardNotReady.Error()
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	pending, err := t.ActivationPending(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if pending {
		cs.Activation = "pending"
	}
	m, err := t.LastCodeSent(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, cs)
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
	cs.SentAt, cs.ExpiresAt, cs.Valid = &m.SentAt, &m.ExpiresAt, live && time.Now().Before(m.ExpiresAt)
	cs.Delivery, cs.DeliveredAt, cs.FailedAt, cs.Failure = "queued", m.DeliveredAt, m.FailedAt, m.Failure
	switch {
	case m.DeliveredAt != nil:
		cs.Delivery = "delivered"
	case m.FailedAt != nil:
		cs.Delivery = "failed"
	}
	writeJSON(w, http.StatusOK, cs)
}
