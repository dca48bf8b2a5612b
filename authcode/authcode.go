// Package authcode keeps the single-use access codes that let a therapist
// log a device in, in Redis. A code is stored only as an HMAC with the
// server's secret; verifying and consuming it is one atomic step, and wrong
// guesses are counted per code, per account and per client address.
package authcode

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of the store.
var (
	// ErrInvalidCode is a wrong, expired, used or voided code, or an email
	// without a live code: they all look the same.
	ErrInvalidCode = errors.New("invalid code")
	// ErrTooManyAttempts refuses a login of an account or from an address
	// that guessed wrong too often.
	ErrTooManyAttempts = errors.New("too many attempts")
)

// TooSoonError refuses a new code within the resend interval.
type TooSoonError struct{ RetryAfter time.Duration }

// Error says when a new code can be sent.
func (e *TooSoonError) Error() string {
	return fmt.Sprintf("a code was sent less than a minute ago; retry in %s", e.RetryAfter.Round(time.Second))
}

// Config configures a Store. Zero values take the defaults of DESIGN §5.
type Config struct {
	// Redis holds the codes; required.
	Redis redis.UniversalClient
	// Secret keys the HMAC of codes and emails; at least 32 bytes, required.
	Secret []byte
	// Digits is the length of a code, 6 to 10; zero means 6.
	Digits int
	// TTL is how long a code is valid; zero means 15 minutes.
	TTL time.Duration
	// ResendInterval is the least time between two codes of one account;
	// zero means one minute.
	ResendInterval time.Duration
	// MaxCodeAttempts wrong guesses void a code; zero means 5.
	MaxCodeAttempts int
	// MaxAccountFailures wrong guesses within Window lock an account's
	// logins for Lockout; zero means 20.
	MaxAccountFailures int
	// MaxAddrFailures wrong guesses from one client address within Window
	// refuse its logins until the window ends; zero means 100.
	MaxAddrFailures int
	// Window is the period failures are counted over; zero means an hour.
	Window time.Duration
	// Lockout is how long a locked account stays locked; zero means an hour.
	Lockout time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Store issues and redeems access codes.
type Store struct {
	cfg Config
	rdb redis.UniversalClient
}

// New validates cfg and returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Redis == nil {
		return nil, errors.New("authcode: no Redis")
	}
	if len(cfg.Secret) < 32 {
		return nil, errors.New("authcode: the secret must have at least 32 bytes")
	}
	if cfg.Digits == 0 {
		cfg.Digits = 6
	}
	if cfg.Digits < 6 || cfg.Digits > 10 {
		return nil, fmt.Errorf("authcode: codes have 6 to 10 digits, not %d", cfg.Digits)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.TTL, 15*time.Minute)
	def(&cfg.ResendInterval, time.Minute)
	def(&cfg.Window, time.Hour)
	def(&cfg.Lockout, time.Hour)
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&cfg.MaxCodeAttempts, 5)
	defInt(&cfg.MaxAccountFailures, 20)
	defInt(&cfg.MaxAddrFailures, 100)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, rdb: cfg.Redis}, nil
}

// TTL returns how long a code is valid.
func (s *Store) TTL() time.Duration { return s.cfg.TTL }

// Redis keys. Every key of this package is made here; tenant and account
// ids are length-prefixed so that no two pairs make one key.
func keyCode(tenant, account string) string { return "therasync:code:" + pair(tenant, account) }
func keyResend(tenant, account string) string {
	return "therasync:code-resend:" + pair(tenant, account)
}
func keyAccountFails(tenant, account string) string {
	return "therasync:code-fails:acct:" + pair(tenant, account)
}
func keyAccountLock(tenant, account string) string {
	return "therasync:code-lock:acct:" + pair(tenant, account)
}
func keyAddrFails(addr string) string { return "therasync:code-fails:addr:" + addr }
func (s *Store) keyEmail(email string) string {
	return "therasync:code-email:" + s.mac("email", NormalizeEmail(email))
}

func pair(tenant, account string) string {
	return strconv.Itoa(len(tenant)) + ":" + tenant + ":" + account
}

// NormalizeEmail is the form emails are compared in.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

func (s *Store) mac(parts ...string) string {
	m := hmac.New(sha256.New, s.cfg.Secret)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Store) codeHash(tenant, account, code string) string {
	return s.mac("code", tenant, account, code)
}

// issueScript replaces the account's code unless one was sent within the
// resend interval.
//
//	KEYS[1] code hash key       KEYS[2] resend key     KEYS[3] email index key
//	ARGV[1] code HMAC           ARGV[2] TTL ms         ARGV[3] resend interval ms
//	ARGV[4] "tenant/account" member of the email index
//
// Returns {1, 0} when issued, {0, ms until a new code may be sent} when not.
var issueScript = redis.NewScript(`
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return {0, wait} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'n', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 1, 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {1, 0}
`)

// verifyScript checks a code and, when asked, consumes it in the same step.
//
//	KEYS[1] code hash key   KEYS[2] account failures   KEYS[3] account lock
//	KEYS[4] address failures
//	ARGV[1] HMAC of the code tried     ARGV[2] "1" to consume a match
//	ARGV[3] wrong guesses that void a code   ARGV[4] failures that lock the account
//	ARGV[5] failure window ms          ARGV[6] lockout ms
//	ARGV[7] failures that refuse the address  ARGV[8] "1" when the account is known
//
// Returns 1 for a match (consumed if asked), 0 for a miss, -1 when the
// account or address is refused. A consumed code stays, marked used, until
// it expires: trying it again is refused like a wrong code but not counted
// as a guess (a double-tapped login must not lock the account), and neither
// is a miss while consuming (it lost a race to a login with the same code).
var verifyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[7]) then return -1 end
local h = redis.call('HGET', KEYS[1], 'h')
if h and h == ARGV[1] then
  if redis.call('HGET', KEYS[1], 'used') then return 0 end
  if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'used', 1) end
  return 1
end
if ARGV[2] == '1' then return 0 end
if h then
  if redis.call('HINCRBY', KEYS[1], 'n', 1) >= tonumber(ARGV[3]) then redis.call('DEL', KEYS[1]) end
end
if ARGV[8] == '1' then
  local f = redis.call('INCR', KEYS[2])
  if f == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  if f > tonumber(ARGV[4]) then redis.call('SET', KEYS[3], 1, 'PX', ARGV[6]) end
end
local a = redis.call('INCR', KEYS[4])
if a == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
return 0
`)

// Issue makes a new code for the account, replacing its live one, and
// returns it with its expiry. Within the resend interval it returns a
// *TooSoonError.
func (s *Store) Issue(ctx context.Context, tenant, account, email string) (code string, expires time.Time, err error) {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(s.cfg.Digits)), nil)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue code: %w", err)
	}
	code = fmt.Sprintf("%0*d", s.cfg.Digits, n)
	now := s.cfg.Now()
	res, err := issueScript.Run(ctx, s.rdb, []string{keyCode(tenant, account), keyResend(tenant, account), s.keyEmail(email)},
		s.codeHash(tenant, account, code), s.cfg.TTL.Milliseconds(), s.cfg.ResendInterval.Milliseconds(), pair(tenant, account)).Int64Slice()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue code: %w", err)
	}
	if res[0] == 0 {
		return "", time.Time{}, &TooSoonError{RetryAfter: time.Duration(res[1]) * time.Millisecond}
	}
	return code, now.Add(s.cfg.TTL), nil
}

// Holder is an account with a live code.
type Holder struct{ Tenant, Account string }

// Holders returns the accounts holding a live code sent to email (one, but
// for an email used by accounts of several tenants).
func (s *Store) Holders(ctx context.Context, email string) ([]Holder, error) {
	members, err := s.rdb.SMembers(ctx, s.keyEmail(email)).Result()
	if err != nil {
		return nil, fmt.Errorf("look up code holders: %w", err)
	}
	out := make([]Holder, 0, len(members))
	for _, m := range members {
		n, rest, ok := strings.Cut(m, ":")
		l, err := strconv.Atoi(n)
		if !ok || err != nil || len(rest) < l+1 {
			continue
		}
		out = append(out, Holder{Tenant: rest[:l], Account: rest[l+1:]})
	}
	return out, nil
}

// Check verifies code for the account without consuming it; a wrong code
// counts against the code, the account and the address.
func (s *Store) Check(ctx context.Context, h Holder, code, addr string) error {
	return s.verify(ctx, h, true, code, addr, false)
}

// Consume verifies and consumes the code in one atomic step: of any number
// of concurrent calls with one code, exactly one succeeds.
func (s *Store) Consume(ctx context.Context, h Holder, code, addr string) error {
	return s.verify(ctx, h, true, code, addr, true)
}

// Fail counts a login attempt for an email without a live code against the
// address and against the email (as a known account's failures count
// against the account, so that both lock alike and a lockout tells nothing
// of whether the email holds a code), taking the time a real check takes,
// and returns ErrInvalidCode (or ErrTooManyAttempts when refused).
func (s *Store) Fail(ctx context.Context, email, code, addr string) error {
	return s.verify(ctx, Holder{Tenant: "-", Account: s.mac("email-fails", NormalizeEmail(email))}, true, code, addr, false)
}

func (s *Store) verify(ctx context.Context, h Holder, known bool, code, addr string, consume bool) error {
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	res, err := verifyScript.Run(ctx, s.rdb,
		[]string{keyCode(h.Tenant, h.Account), keyAccountFails(h.Tenant, h.Account), keyAccountLock(h.Tenant, h.Account), keyAddrFails(addr)},
		s.codeHash(h.Tenant, h.Account, code), flag(consume), s.cfg.MaxCodeAttempts, s.cfg.MaxAccountFailures,
		s.cfg.Window.Milliseconds(), s.cfg.Lockout.Milliseconds(), s.cfg.MaxAddrFailures, flag(known)).Int64()
	if err != nil {
		return fmt.Errorf("verify code: %w", err)
	}
	switch res {
	case 1:
		return nil
	case -1:
		return ErrTooManyAttempts
	}
	return ErrInvalidCode
}

// Live reports whether the account holds a code that is neither expired,
// used nor voided.
func (s *Store) Live(ctx context.Context, tenant, account string) (bool, error) {
	v, err := s.rdb.HMGet(ctx, keyCode(tenant, account), "h", "used").Result()
	if err != nil {
		return false, fmt.Errorf("code status: %w", err)
	}
	return v[0] != nil && v[1] == nil, nil
}
