package syncd

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

type loginRequest struct {
	Email      string `json:"email"`
	Code       string `json:"code"`
	DeviceID   string `json:"device_id"`
	DeviceName string `json:"device_name"`
	Platform   string `json:"platform"`
}

type shardRef struct {
	Seq    int64  `json:"seq"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// History is the history id of the log the shard was built from (the
	// shard's sync_meta.history): the device sends it with its cursor.
	History string `json:"history"`
}

type loginResponse struct {
	Token     string   `json:"token"`
	TenantID  string   `json:"tenant_id"`
	AccountID string   `json:"account_id"`
	Role      string   `json:"role"`
	Shard     shardRef `json:"shard"`
}

func (req loginRequest) validate() error {
	switch {
	case strings.TrimSpace(req.Email) == "":
		return badRequest("email is missing")
	case strings.TrimSpace(req.Code) == "":
		return badRequest("code is missing")
	case len(req.Code) > 32:
		return badRequest("code is too long")
	case len(req.DeviceName) > maxDeviceNameLength || len(req.Platform) > maxDeviceNameLength:
		return badRequest("device_name and platform have at most %d bytes", maxDeviceNameLength)
	}
	if err := model.ValidID(req.DeviceID); err != nil {
		return badRequest("device_id: %v", err)
	}
	return nil
}

// handleLogin serves POST /v1/device/login: email + code + device id for a
// device token. Unknown emails and wrong, expired or used codes answer the
// same, in about the same time: a failed login's audit line is written in
// the background (auditWriter). A code is consumed only when the login
// succeeds.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.cfg.Codes == nil {
		s.fail(w, r, errors.New("access codes are not configured"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBodyBytes)
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := req.validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	addr := clientAddr(r)
	code := strings.TrimSpace(req.Code)
	h, err := s.codeHolder(ctx, req, code, addr)
	if err != nil {
		s.metrics.logins.WithLabelValues(errorCode(err)).Inc()
		s.fail(w, r, err)
		return
	}
	t, err := s.cfg.Store.Tenant(ctx, h.Tenant)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.login(r, t, h, req, code, addr)
	if err != nil {
		s.audits.add(t.ID(), store.AuditEntry{Actor: "device", AccountID: h.Account, DeviceID: req.DeviceID, Action: "login_failed", Detail: errorCode(err), Addr: addr})
		s.metrics.logins.WithLabelValues(errorCode(err)).Inc()
		s.fail(w, r, err)
		return
	}
	s.metrics.logins.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, res)
}

// codeHolder returns the account whose code for req.Email is code. A
// wrong code counts against every account with that email (and against
// the email when none has it, so unknown emails lock like known ones), and
// each such account gets an audit line.
func (s *Server) codeHolder(ctx context.Context, req loginRequest, code, addr string) (authcode.Holder, error) {
	holders, err := s.cfg.Codes.Holders(ctx, req.Email)
	if err != nil {
		return authcode.Holder{}, err
	}
	if len(holders) == 0 {
		return authcode.Holder{}, s.cfg.Codes.Fail(ctx, req.Email, code, addr)
	}
	var last error
	for _, c := range holders {
		if last = s.cfg.Codes.Check(ctx, c, code, addr); last == nil {
			return c, nil
		}
	}
	for _, c := range holders {
		s.audits.add(c.Tenant, store.AuditEntry{Actor: "device", AccountID: c.Account, DeviceID: req.DeviceID, Action: "login_failed", Detail: errorCode(last), Addr: addr})
	}
	return authcode.Holder{}, last
}

// login checks the preconditions of DESIGN §5 for a verified code, then
// consumes it and issues the device token.
func (s *Server) login(r *http.Request, t *store.Tenant, h authcode.Holder, req loginRequest, code, addr string) (loginResponse, error) {
	ctx := r.Context()
	st, err := t.Settings(ctx)
	if err != nil {
		return loginResponse{}, err
	}
	acc, err := s.appAccount(ctx, t, st, h.Account)
	if errors.Is(err, store.ErrNotFound) {
		return loginResponse{}, authcode.ErrInvalidCode // the account is gone
	}
	if err != nil {
		return loginResponse{}, err
	}
	// The shard the device will download must be there, of its recorded
	// size (the download checks its sha256).
	f, sh, err := s.openShard(ctx, t, acc, false)
	if errors.Is(err, errShardNotReady) {
		// Make sure a build is on its way; the code stays valid.
		if ids, err := t.RequestBuilds(ctx, acc.ID); err == nil {
			s.enqueueBuilds(ctx, t.ID(), ids)
		}
		return loginResponse{}, errShardNotReady
	}
	if err != nil {
		return loginResponse{}, err
	}
	f.Close()
	// The device id must be free for the account before the code is
	// spent (LoginDevice checks again in its transaction).
	replaces, err := t.CheckDeviceLogin(ctx, acc.ID, req.DeviceID)
	if err != nil {
		return loginResponse{}, err
	}
	if err := s.cfg.Codes.Consume(ctx, h, code, addr); err != nil {
		return loginResponse{}, err
	}
	token, isNew, err := t.LoginDevice(ctx, acc.ID, req.DeviceID, req.DeviceName, req.Platform)
	if err != nil {
		return loginResponse{}, err
	}
	if replaces {
		// The token the device held is replaced: its sockets end (were it
		// replaced unseen by a racing login, the access epoch still ends
		// them).
		s.publishRevocation(ctx, Revocation{Tenant: t.ID(), DeviceID: req.DeviceID, TokenEnded: true, Current: fingerprint(keyHash(token))})
	}
	s.audit(ctx, t, store.AuditEntry{Actor: "device", AccountID: acc.ID, DeviceID: req.DeviceID, Action: "login", Detail: req.Platform, Addr: addr})
	if isNew && s.cfg.Mail != nil {
		name := req.DeviceName
		if name == "" {
			name = req.DeviceID
		}
		if err := s.cfg.Mail.SendLoginNotice(ctx, t.ID(), acc.ID, name, time.Now()); err != nil {
			s.log.Error("enqueue login notice", "tenant", t.ID(), "account", acc.ID, "err", err)
		}
	}
	return loginResponse{Token: token, TenantID: t.ID(), AccountID: acc.ID, Role: acc.Role,
		Shard: shardRef{Seq: sh.Seq, Size: sh.Size, SHA256: sh.SHA256, History: sh.History}}, nil
}

// deviceHandler is a handler of the device API, called for an
// authenticated device allowed to sync.
type deviceHandler func(w http.ResponseWriter, r *http.Request, t *store.Tenant, d store.Device, acc store.Account)

// device authenticates the device token of the request and refuses
// revoked devices and disabled accounts with device_revoked.
func (s *Server) device(h deviceHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, d, acc, err := s.deviceAccess(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, t, d, acc)
	}
}

// deviceAccess authenticates the request's device and checks that it may
// sync (store.Tenant.DeviceAccess); a revoked device comes back with
// store.ErrRevoked and its tenant and device.
func (s *Server) deviceAccess(r *http.Request) (*store.Tenant, store.Device, store.Account, error) {
	t, d, err := s.authDevice(r)
	if err != nil {
		return nil, d, store.Account{}, err
	}
	acc, err := t.DeviceAccess(r.Context(), d)
	return t, d, acc, err
}

// authDevice authenticates the request's device token.
func (s *Server) authDevice(r *http.Request) (*store.Tenant, store.Device, error) {
	token, ok := bearer(r)
	if !ok {
		return nil, store.Device{}, fmt.Errorf("missing device token: %w", store.ErrUnauthorized)
	}
	return s.cfg.Store.AuthenticateDevice(r.Context(), token)
}

// handleShard serves GET /v1/device/shard: the newest shard file of the
// device's account, with its sha256 as ETag, Range requests and gzip. A
// file whose content is not what its record says is never served
// (openShard).
func (s *Server) handleShard(w http.ResponseWriter, r *http.Request, t *store.Tenant, d store.Device, acc store.Account) {
	ctx := r.Context()
	f, sh, err := s.openShard(ctx, t, acc, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	etag := `"` + sh.SHA256 + `"`
	h := w.Header()
	h.Set("Content-Type", "application/vnd.sqlite3")
	h.Set("X-Therasync-Seq", fmt.Sprint(sh.Seq))
	h.Set("X-Therasync-SHA256", sh.SHA256)
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Vary", "Accept-Encoding")
	full := r.Header.Get("Range") == ""
	if full && r.Method == http.MethodGet {
		s.audit(ctx, t, store.AuditEntry{Actor: "device", AccountID: acc.ID, DeviceID: d.ID, Action: "shard_download", Detail: fmt.Sprintf("seq %d", sh.Seq), Addr: clientAddr(r)})
		if err := t.TouchDevice(ctx, d.ID); err != nil {
			s.log.Warn("touch device", "tenant", t.ID(), "device", d.ID, "err", err)
		}
	}
	if full && acceptsGzip(r) && !matchesETag(r.Header.Get("If-None-Match"), sh.SHA256) {
		h.Set("ETag", `"`+sh.SHA256+`-gzip"`)
		h.Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		// Past the header nothing can be reported but by breaking the
		// body, which the client detects by the sha256 of what it got.
		zw := gzip.NewWriter(w)
		if _, err := io.Copy(zw, f); err != nil {
			s.log.Warn("shard download interrupted", "tenant", t.ID(), "device", d.ID, "err", err)
			return
		}
		zw.Close()
		return
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, "shard.db", sh.BuiltAt, f)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// matchesETag reports whether If-None-Match names the shard, in either
// encoding.
func matchesETag(header, sha string) bool {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == `"`+sha+`"` || tag == `"`+sha+`-gzip"` || tag == "*" {
			return true
		}
	}
	return false
}

// handleLogout serves POST /v1/device/logout: the token stops working. A
// revoked device may log out too.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	t, d, err := s.authDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := t.LogoutDevice(r.Context(), d.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	s.publishRevocation(r.Context(), Revocation{Tenant: t.ID(), DeviceID: d.ID, TokenEnded: true})
	s.audit(r.Context(), t, store.AuditEntry{Actor: "device", AccountID: d.AccountID, DeviceID: d.ID, Action: "logout", Addr: clientAddr(r)})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}
