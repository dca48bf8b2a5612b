package e2e_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/therasync/therasync/syncd"
)

// capturingMailer hands mails to the real queue and keeps each access code,
// so that the benchmark can log in without reading the outbox.
type capturingMailer struct {
	syncd.Mailer
	codes sync.Map // account → code
}

func (m *capturingMailer) SendCode(ctx context.Context, tenant, account, code string, expires time.Time) error {
	m.codes.Store(account, code)
	return m.Mailer.SendCode(ctx, tenant, account, code, expires)
}

// BenchmarkLogin measures device logins end to end over loopback HTTP
// against a real Redis: each op sends an access code (HMAC into Redis, the
// sent time into SQLite, a sealed mail task into Asynq, an audit line) and
// logs a new device in with it (check, consume, device token into SQLite,
// audit, login notice). 16 concurrent clients, one account each op.
//
//	go test -run '^$' -bench Login -benchtime 2000x ./internal/e2e/
func BenchmarkLogin(b *testing.B) {
	sys := newSystem(b)
	sys.startWorker(time.Hour)
	seedGroup(sys)
	const accounts = 5000
	var batch []map[string]any
	for i := range max(accounts, b.N) {
		batch = append(batch, up("accounts", fmt.Sprint("u", i), map[string]any{"name": "U", "email": fmt.Sprintf("u%d@x.de", i), "role": "member", "app_enabled": true}))
		if len(batch) == 1000 {
			sys.push(batch...)
			batch = nil
		}
	}
	if len(batch) > 0 {
		sys.push(batch...)
	}
	for i := range max(accounts, b.N) {
		sys.waitShard(fmt.Sprint("u", i), 0, 120*time.Second)
	}
	mailer := &capturingMailer{Mailer: sys.queue}
	cfg := sys.syncdConfig()
	cfg.Mail = mailer
	srv := httptest.NewServer(syncd.New(cfg))
	defer srv.Close()
	sys.url = srv.URL
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			account := fmt.Sprint("u", i)
			if st, body := sys.do("POST", "/v1/practice/accounts/"+account+"/access-code", nil); st != 200 {
				b.Errorf("send code = %d %s", st, body)
				return
			}
			code, _ := mailer.codes.Load(account)
			if st, _, body := sys.login(fmt.Sprintf("u%d@x.de", i), code.(string), fmt.Sprint("dev-", i)); st != 200 {
				b.Errorf("login = %d %s", st, body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "logins/s")
}
