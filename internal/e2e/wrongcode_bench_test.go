package e2e_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/syncd"
)

// BenchmarkWrongCode measures one failed device login over loopback HTTP
// against a real Redis, for an email that holds a live code (a tenant's
// account: checked, counted and audited) and for an unknown email (counted
// against the address only). DESIGN §5 wants both to cost about the same,
// so that timing does not tell which emails are known. The rate limits are
// raised so that every op takes the wrong-code path, not the lockout; one
// client, so ns/op is the latency of one login. Compare the medians of:
//
//	go test -run '^$' -bench WrongCode -benchtime 2000x -count 5 ./internal/e2e/
func BenchmarkWrongCode(b *testing.B) {
	sys := newSystem(b)
	seedGroup(sys)
	const accounts = 100
	var batch []map[string]any
	for i := range accounts {
		batch = append(batch, up("accounts", fmt.Sprint("w", i), map[string]any{"name": "W", "email": fmt.Sprintf("w%d@x.de", i), "role": "member", "app_enabled": true}))
	}
	sys.push(batch...)
	codes, err := authcode.New(authcode.Config{Redis: sys.rdb, Secret: testSecret, MaxAccountFailures: 1 << 30, MaxAddrFailures: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	cfg := sys.syncdConfig()
	cfg.Codes = codes
	srv := httptest.NewServer(syncd.New(cfg))
	defer srv.Close()
	sys.url = srv.URL
	for i := range accounts {
		if st, body := sys.do("POST", fmt.Sprintf("/v1/practice/accounts/w%d/access-code", i), nil); st != 200 {
			b.Fatalf("send code = %d %s", st, body)
		}
	}
	client := &http.Client{}
	for _, bc := range []struct {
		name  string
		email func(i int) string
	}{
		{"known_email", func(i int) string { return fmt.Sprintf("w%d@x.de", i%accounts) }},
		{"unknown_email", func(i int) string { return fmt.Sprintf("nobody%d@x.de", i%accounts) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				// Seven digits: never one of the six-digit codes sent.
				body := fmt.Sprintf(`{"email":%q,"code":"0000000","device_id":"dev-%d","platform":"android"}`, bc.email(i), i%accounts)
				resp, err := client.Post(srv.URL+"/v1/device/login", "application/json", bytes.NewReader([]byte(body)))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					b.Fatalf("login with a wrong code = %s; want 401", resp.Status)
				}
			}
		})
	}
}
