package syncd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// apiError is the JSON body of every error answer.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

// classify maps an error to its status, error code and message. It is the
// one place where store, model and authcode errors become HTTP answers;
// internal is true for errors that are the server's fault.
func classify(err error) (status int, code, msg string, internal bool) {
	var (
		maxBytes *http.MaxBytesError
		tooMany  *tooManyError
		locked   *stepUpLockedError
	)
	msg = publicMessage(err)
	switch {
	case errors.As(err, &tooMany):
		return http.StatusTooManyRequests, wire.CodeTooManyAttempts, msg, false
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBytes.Limit), false
	case errors.Is(err, errSlowBody):
		return http.StatusRequestTimeout, wire.CodeRequestTimeout, msg, false
	case errors.Is(err, model.ErrInvalid), errors.Is(err, errBadRequest):
		return http.StatusBadRequest, wire.CodeBadRequest, msg, false
	case errors.Is(err, authcode.ErrInvalidCode):
		return http.StatusUnauthorized, wire.CodeInvalidCode, "wrong, expired or used code, or unknown email", false
	case errors.Is(err, authcode.ErrTooManyAttempts):
		return http.StatusTooManyRequests, wire.CodeTooManyAttempts, "too many wrong codes; logins are refused for a while", false
	case errors.Is(err, store.ErrRevoked):
		return http.StatusForbidden, wire.CodeDeviceRevoked, "this device's access was withdrawn by the practice", false
	case errors.Is(err, errAppDisabled):
		return http.StatusForbidden, wire.CodeAppDisabled, msg, false
	case errors.Is(err, errNoEmail):
		return http.StatusForbidden, wire.CodeNoEmail, msg, false
	case errors.Is(err, errShardNotReady):
		return http.StatusConflict, wire.CodeShardNotReady, msg, false
	case errors.Is(err, errTOTPRequired), errors.Is(err, store.ErrTOTPEnrolled):
		// One message for every reason, naming no account.
		return http.StatusForbidden, wire.CodeTOTPRequired, errTOTPRequired.Error(), false
	case errors.As(err, &locked):
		return http.StatusTooManyRequests, wire.CodeTooManyAttempts, locked.Error(), false
	case errors.Is(err, model.ErrErased):
		// Only RefuseErased's refusal: CanWrite's, checked first, keeps a
		// member's words uniform for rows it does not see.
		return http.StatusForbidden, wire.CodeErased, msg, false
	case errors.Is(err, model.ErrForbidden):
		return http.StatusForbidden, wire.CodeForbidden, msg, false
	case errors.Is(err, model.ErrAlreadyCheckedIn):
		return http.StatusConflict, wire.CodeAlreadyCheckedIn, msg, false
	case errors.Is(err, model.ErrCourseFull):
		return http.StatusConflict, wire.CodeCourseFull, msg, false
	case errors.Is(err, model.ErrNoUnitsLeft):
		return http.StatusConflict, wire.CodeNoUnitsLeft, msg, false
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, wire.CodeConflict, msg, false
	case errors.Is(err, store.ErrUnauthorized):
		return http.StatusUnauthorized, wire.CodeUnauthorized, "missing or invalid key or token", false
	case errors.Is(err, store.ErrLicenseMissing):
		return http.StatusForbidden, wire.CodeLicenseMissing, msg, false
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, wire.CodeNotFound, msg, false
	case errors.Is(err, store.ErrClosed):
		return http.StatusServiceUnavailable, wire.CodeUnavailable, "server is shutting down", false
	}
	return http.StatusInternalServerError, wire.CodeInternal, "internal error", true
}

// sentinels are the errors whose text classify's code already says; their
// text at the end of a message (": bad request", ": invalid change") is
// internal wrapping, not news for the caller.
// Sentinels that are whole sentences ("the account has no valid email
// address") are not listed: they are the message.
var sentinels = []error{
	errBadRequest, model.ErrInvalid, model.ErrForbidden, store.ErrConflict, store.ErrLicenseMissing,
}

// publicMessage is err's text without the sentinel suffixes its wrapping
// added; a message that is only a sentinel stays as it is.
func publicMessage(err error) string {
	msg := err.Error()
	for trimmed := true; trimmed; {
		trimmed = false
		for _, s := range sentinels {
			if m, ok := strings.CutSuffix(msg, ": "+s.Error()); ok && m != "" {
				msg, trimmed = m, true
			}
		}
	}
	return msg
}

// errorCode returns the error code an error answers with.
func errorCode(err error) string {
	_, code, _, _ := classify(err)
	return code
}

// fail answers with err's status and error code, and logs errors that are
// the server's fault.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg, internal := classify(err)
	if internal {
		if r.Context().Err() != nil {
			return // the client is gone; there is nobody to answer
		}
		s.log.Error("request failed", "route", r.Pattern, "err", err)
	}
	if code == wire.CodeShardNotReady {
		w.Header().Set("Retry-After", "5")
	}
	var tooMany *tooManyError
	if errors.As(err, &tooMany) {
		w.Header().Set("Retry-After", fmt.Sprint(int(tooMany.retryAfter.Seconds()+0.999)))
	}
	var locked *stepUpLockedError
	if errors.As(err, &locked) {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(locked.RetryAfter.Seconds()))))
	}
	writeError(w, status, code, msg)
}

// errBadRequest marks errors in a request's form (query, JSON).
var errBadRequest = errors.New("bad request")

// errEmptyBody is a request without a body (a bad request where one is
// needed).
var errEmptyBody = fmt.Errorf("the request body is empty; want a JSON object: %w", errBadRequest)

// errSlowBody refuses a request whose body did not arrive within its read
// deadline.
var errSlowBody = errors.New("the request body did not arrive in time")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errBadRequest)
}

// statusWriter records the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (sw *statusWriter) WriteHeader(code int) {
	if sw.status == 0 {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	return sw.ResponseWriter.Write(b)
}

func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// Hijack lets a WebSocket take the connection over.
func (sw *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := sw.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over")
	}
	sw.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

// bodyKind says how long a route's request body may take to arrive.
type bodyKind int

const (
	// smallBody is a few KiB at most: Config.BodyReadTimeout.
	smallBody bodyKind = iota
	// bigBody is a practice push of up to MaxBodyBytes: the server's
	// ReadTimeout only.
	bigBody
)

// handle registers h for pattern, counted, timed and logged, with a small
// body.
func (s *Server) handle(pattern string, h http.HandlerFunc) { s.handleBody(pattern, smallBody, h) }

// handleBody registers h for pattern with a body of the kind.
func (s *Server) handleBody(pattern string, kind bodyKind, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		s.limitBody(sw, r, kind)
		h(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.observeRequest(pattern, sw.status, d)
		if pattern != "GET /healthz" {
			s.log.Info("request", "route", pattern, "status", sw.status, "dur_ms", float64(d.Microseconds())/1000, "addr", r.RemoteAddr)
		}
	})
}

// limitBody caps the request's body at MaxBodyBytes and bounds the time a
// small one may take to arrive: its read deadline is BodyReadTimeout from
// now (a big one keeps the server's ReadTimeout). net/http lifts the
// deadline once the body was read to its end (it starts its background
// read of the connection, without a deadline), so the deadline bounds the
// client's sending, not the handler's work. A request without a body gets
// no deadline: its background read runs already, and a deadline passing
// under it would cancel the context of this and every later request on the
// connection. So a WebSocket upgrade has none either, and gorilla/websocket
// clears the connection's deadlines when it takes the connection over:
// live sockets are bound only by their own pong deadline.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request, kind bodyKind) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	if kind == smallBody {
		// Without a connection (a ResponseRecorder), only the cap applies.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	}
}

// practiceHandler is a handler of the practice API, called with the tenant
// whose practice key authenticated the request.
type practiceHandler func(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings)

// practice authenticates the practice key of the request.
func (s *Server) practice(h practiceHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r)
		if !ok {
			s.fail(w, r, store.ErrUnauthorized)
			return
		}
		t, st, err := s.cfg.Store.Authenticate(r.Context(), key)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, t, st)
	}
}

// bearer returns the request's bearer token: from the Authorization
// header, or for a WebSocket upgrade from a browser (which cannot set
// headers) from the offered subprotocol "bearer.<token>".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" && websocket.IsWebSocketUpgrade(r) {
		for _, p := range websocket.Subprotocols(r) {
			if tok, ok := strings.CutPrefix(p, subprotocolBearer); ok && tok != "" {
				return tok, true
			}
		}
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// decodeJSON decodes the request body into v, refusing unknown fields and
// trailing data.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("read body: %w", errSlowBody)
		}
		if errors.Is(err, io.EOF) {
			return errEmptyBody
		}
		return badRequest("invalid JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return badRequest("invalid JSON body: data after the JSON object")
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body that may be left out: an
// empty body leaves v as it is (the same as {}).
func decodeOptionalJSON(r *http.Request, v any) error {
	err := decodeJSON(r, v)
	if errors.Is(err, errEmptyBody) {
		return nil
	}
	return err
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
