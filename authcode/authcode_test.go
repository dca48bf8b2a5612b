package authcode_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/internal/redistest"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func newStore(tb testing.TB, cfg authcode.Config) (*authcode.Store, *redis.Client) {
	tb.Helper()
	rs := redistest.Start(tb)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	tb.Cleanup(func() { rdb.Close() })
	cfg.Redis = rdb
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	s, err := authcode.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s, rdb
}

var alice = authcode.Holder{Tenant: "t1", Account: "alice"}

func issue(tb testing.TB, s *authcode.Store, h authcode.Holder) string {
	tb.Helper()
	code, _, err := s.Issue(context.Background(), h.Tenant, h.Account, h.Account+"@praxis.de")
	if err != nil {
		tb.Fatalf("Issue = %v", err)
	}
	return code
}

func wrong(code string) string {
	if code[0] == '9' {
		return "0" + code[1:]
	}
	return string(code[0]+1) + code[1:]
}

func TestNewValidatesConfig(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, cfg := range []authcode.Config{
		{Redis: rdb, Secret: secret, Digits: 5},
		{Redis: rdb, Secret: secret, Digits: 11},
		{Redis: rdb, Secret: []byte("short")},
		{Secret: secret},
	} {
		if _, err := authcode.New(cfg); err == nil {
			t.Errorf("New(digits %d, secret %d bytes) = nil error; want refused", cfg.Digits, len(cfg.Secret))
		}
	}
	for _, d := range []int{0, 6, 8, 10} {
		if _, err := authcode.New(authcode.Config{Redis: rdb, Secret: secret, Digits: d}); err != nil {
			t.Errorf("New(digits %d) = %v; want ok", d, err)
		}
	}
}

func TestIssueAndConsume(t *testing.T) {
	s, rdb := newStore(t, authcode.Config{Digits: 8})
	ctx := context.Background()
	code := issue(t, s, alice)
	if len(code) != 8 || strings.Trim(code, "0123456789") != "" {
		t.Fatalf("code %q; want 8 digits", code)
	}
	hs, err := s.Holders(ctx, " Alice@Praxis.de ")
	if err != nil || len(hs) != 1 || hs[0] != alice {
		t.Fatalf("Holders = %v, %v; want [alice]", hs, err)
	}
	if err := s.Check(ctx, alice, code, "1.2.3.4"); err != nil {
		t.Fatalf("Check(right code) = %v", err)
	}
	if err := s.Consume(ctx, alice, code, "1.2.3.4"); err != nil {
		t.Fatalf("Consume(right code) = %v", err)
	}
	if err := s.Consume(ctx, alice, code, "1.2.3.4"); !errors.Is(err, authcode.ErrInvalidCode) {
		t.Errorf("second Consume = %v; want ErrInvalidCode", err)
	}
	if live, _ := s.Live(ctx, "t1", "alice"); live {
		t.Errorf("Live after use = true")
	}
	// Nothing in Redis holds the code or the email in plain text.
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		dump, _ := rdb.Dump(ctx, k).Result()
		if strings.Contains(k+dump, code) || strings.Contains(strings.ToLower(k+dump), "alice@praxis.de") {
			t.Errorf("Redis key %q holds the code or the email", k)
		}
	}
}

func TestOneLiveCodeAndResendInterval(t *testing.T) {
	now := time.Now()
	s, _ := newStore(t, authcode.Config{ResendInterval: 200 * time.Millisecond, Now: func() time.Time { return now }})
	ctx := context.Background()
	first := issue(t, s, alice)
	_, _, err := s.Issue(ctx, "t1", "alice", "alice@praxis.de")
	var tooSoon *authcode.TooSoonError
	if !errors.As(err, &tooSoon) || tooSoon.RetryAfter <= 0 || tooSoon.RetryAfter > 200*time.Millisecond {
		t.Fatalf("Issue within the interval = %v; want TooSoonError with retry_after", err)
	}
	time.Sleep(250 * time.Millisecond)
	second := issue(t, s, alice)
	if first != second {
		if err := s.Check(ctx, alice, first, "a"); !errors.Is(err, authcode.ErrInvalidCode) {
			t.Errorf("the replaced code still works: %v", err)
		}
	}
	if err := s.Check(ctx, alice, second, "a"); err != nil {
		t.Errorf("the new code = %v; want valid", err)
	}
}

func TestExpiry(t *testing.T) {
	s, _ := newStore(t, authcode.Config{TTL: 150 * time.Millisecond})
	code := issue(t, s, alice)
	time.Sleep(250 * time.Millisecond)
	if err := s.Consume(context.Background(), alice, code, "a"); !errors.Is(err, authcode.ErrInvalidCode) {
		t.Errorf("Consume(expired) = %v; want ErrInvalidCode", err)
	}
	if hs, _ := s.Holders(context.Background(), "alice@praxis.de"); len(hs) != 0 {
		t.Errorf("Holders after expiry = %v; want none", hs)
	}
}

func TestConcurrentConsumeExactlyOne(t *testing.T) {
	s, _ := newStore(t, authcode.Config{})
	code := issue(t, s, alice)
	var wins, losses atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := s.Consume(context.Background(), alice, code, "1.2.3.4"); {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, authcode.ErrInvalidCode):
				losses.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || losses.Load() != 49 {
		t.Errorf("50 concurrent Consume: %d won, %d lost; want 1 and 49", wins.Load(), losses.Load())
	}
}

func TestWrongGuesses(t *testing.T) {
	s, _ := newStore(t, authcode.Config{ResendInterval: time.Millisecond})
	ctx := context.Background()
	t.Run("five void the code", func(t *testing.T) {
		code := issue(t, s, alice)
		for i := range 5 {
			if err := s.Check(ctx, alice, wrong(code), "a1"); !errors.Is(err, authcode.ErrInvalidCode) {
				t.Fatalf("wrong guess %d = %v", i, err)
			}
		}
		if err := s.Consume(ctx, alice, code, "a1"); !errors.Is(err, authcode.ErrInvalidCode) {
			t.Errorf("right code after 5 wrong guesses = %v; want ErrInvalidCode (void)", err)
		}
	})
	t.Run("past 20 the account is locked, across new codes", func(t *testing.T) {
		bob := authcode.Holder{Tenant: "t1", Account: "bob"}
		for round := range 5 {
			time.Sleep(2 * time.Millisecond)
			code := issue(t, s, bob)
			for range 4 {
				s.Check(ctx, bob, wrong(code), "addr-"+string(rune('a'+round)))
			}
		}
		time.Sleep(2 * time.Millisecond)
		code := issue(t, s, bob)
		if err := s.Check(ctx, bob, wrong(code), "x"); !errors.Is(err, authcode.ErrInvalidCode) {
			t.Fatalf("21st wrong guess = %v; want ErrInvalidCode", err)
		}
		time.Sleep(2 * time.Millisecond)
		code = issue(t, s, bob)
		if err := s.Check(ctx, bob, code, "y"); !errors.Is(err, authcode.ErrTooManyAttempts) {
			t.Errorf("right code after 21 failures = %v; want ErrTooManyAttempts", err)
		}
	})
}

func TestAddressLimit(t *testing.T) {
	s, _ := newStore(t, authcode.Config{MaxAddrFailures: 3})
	ctx := context.Background()
	code := issue(t, s, alice)
	for range 3 {
		s.Fail(ctx, "nobody@x.de", "123456", "9.9.9.9") // unknown emails count against the address too
	}
	if err := s.Check(ctx, alice, code, "9.9.9.9"); !errors.Is(err, authcode.ErrTooManyAttempts) {
		t.Errorf("Check from a refused address = %v; want ErrTooManyAttempts", err)
	}
	if err := s.Check(ctx, alice, code, "8.8.8.8"); err != nil {
		t.Errorf("Check from another address = %v; want ok", err)
	}
}

// TestUsedCodeRetriesDoNotLock: trying a used code again is refused but not
// counted as a guess, so a double-tapped login cannot lock the account.
func TestUsedCodeRetriesDoNotLock(t *testing.T) {
	s, _ := newStore(t, authcode.Config{ResendInterval: time.Millisecond})
	ctx := context.Background()
	code := issue(t, s, alice)
	if err := s.Consume(ctx, alice, code, "a"); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if err := s.Check(ctx, alice, code, "a"); !errors.Is(err, authcode.ErrInvalidCode) {
			t.Fatalf("Check(used code) = %v; want ErrInvalidCode", err)
		}
	}
	time.Sleep(2 * time.Millisecond)
	next := issue(t, s, alice)
	if err := s.Consume(ctx, alice, next, "a"); err != nil {
		t.Errorf("a new code after 30 tries of a used one = %v; want ok (no lockout)", err)
	}
}

// TestUnknownEmailsLockLikeKnownOnes: past the account limit, an email
// without a code is refused like one with a code, so the answers tell
// nothing of which emails hold a code.
func TestUnknownEmailsLockLikeKnownOnes(t *testing.T) {
	s, _ := newStore(t, authcode.Config{MaxAccountFailures: 3, MaxAddrFailures: 1000})
	ctx := context.Background()
	issue(t, s, alice)
	for i := range 5 {
		known := s.Check(ctx, alice, "000000", fmt.Sprint("10.0.0.", i))
		unknown := s.Fail(ctx, "nobody@x.de", "000000", fmt.Sprint("10.0.1.", i))
		if errors.Is(known, authcode.ErrTooManyAttempts) != errors.Is(unknown, authcode.ErrTooManyAttempts) {
			t.Errorf("attempt %d: known email %v, unknown email %v; want the same answer", i+1, known, unknown)
		}
	}
	if err := s.Fail(ctx, "NOBODY@x.de ", "000000", "10.0.2.1"); !errors.Is(err, authcode.ErrTooManyAttempts) {
		t.Errorf("the locked unknown email, spelt otherwise = %v; want ErrTooManyAttempts", err)
	}
	if err := s.Fail(ctx, "other@x.de", "000000", "10.0.2.2"); !errors.Is(err, authcode.ErrInvalidCode) {
		t.Errorf("another unknown email = %v; want ErrInvalidCode", err)
	}
}
