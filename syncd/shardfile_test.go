package syncd_test

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// logBuffer collects log lines from concurrent handlers.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildQueue records the builds syncd enqueues.
type buildQueue struct {
	mu     sync.Mutex
	builds []string // tenant/account
}

func (q *buildQueue) EnqueueBuild(_ context.Context, tenant, account string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.builds = append(q.builds, tenant+"/"+account)
	return nil
}

func (q *buildQueue) count(tenant, account string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, b := range q.builds {
		if b == tenant+"/"+account {
			n++
		}
	}
	return n
}

// buildShard builds and records account's shard, as the worker does
// (which forgets the account's build requests), and returns its record.
func buildShard(tb testing.TB, e *env, account string) store.Shard {
	tb.Helper()
	ctx := context.Background()
	started := e.T.BuildStarted()
	b, err := shardbuilder.New(e.Store.Dir(), nil).Build(ctx, shardbuilder.Source{TenantID: e.T.ID(), Path: e.T.Path()}, account, store.KeepShards)
	if err != nil {
		tb.Fatal(err)
	}
	sh := store.Shard{AccountID: account, Seq: b.Seq, History: b.History, Path: b.Path, Size: b.Size, SHA256: b.SHA256, Role: b.Role, SchemaVersion: b.SchemaVersion, BuiltAt: b.BuiltAt}
	if err := e.T.RecordShard(ctx, sh); err != nil {
		tb.Fatal(err)
	}
	if err := e.T.BuildDone(ctx, account, started); err != nil {
		tb.Fatal(err)
	}
	return sh
}

// tamper changes bytes in the middle of the file at path, keeping its size.
func tamper(tb testing.TB, path string) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+16; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// getShard downloads the device's shard with the given request headers and
// returns the status, the error code (on refusal), the Retry-After header
// and the sha256 of the (decoded) body.
func getShard(tb testing.TB, e *env, token string, hdr map[string]string) (status int, code, retry, sum string) {
	tb.Helper()
	req, _ := http.NewRequest("GET", e.URL+"/v1/device/shard", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			tb.Fatal(err)
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		var e struct{ Error string }
		if err := json.Unmarshal(b, &e); err != nil {
			tb.Fatalf("error body %s: %v", b, err)
		}
		code = e.Error
	}
	h := sha256.Sum256(b)
	return resp.StatusCode, code, resp.Header.Get("Retry-After"), hex.EncodeToString(h[:])
}

// TestTamperedShardIsNotServed: a shard file whose content no longer
// matches its recorded sha256 (same size, other bytes), or that is gone, is
// refused with shard_not_ready, whatever the request, and the account's
// build is requested; rebuilt, it is served.
func TestTamperedShardIsNotServed(t *testing.T) {
	for _, tt := range []struct {
		name       string
		downloaded bool // a verified download came before the damage
		damage     func(testing.TB, string)
	}{
		{"tampered before any download", false, tamper},
		{"tampered after a verified download", true, tamper},
		{"removed", true, func(tb testing.TB, path string) { os.Remove(path) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, logs := &buildQueue{}, &logBuffer{}
			e := newTenantEnv(t, syncd.Config{Builds: q, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			sh := buildShard(t, e.env, "m1")
			tok := e.token(t, "m1", "phone")
			enqueued := q.count(e.T.ID(), "m1") // by the seeding push
			if tt.downloaded {
				if st, code, _, sum := getShard(t, e.env, tok, nil); st != 200 || sum != sh.SHA256 {
					t.Fatalf("download of the good shard = %d %s, sha256 %s; want 200 with %s", st, code, sum, sh.SHA256)
				}
			}
			tt.damage(t, filepath.Join(e.Store.Dir(), sh.Path))
			for _, hdr := range []map[string]string{
				nil,
				{"Accept-Encoding": "gzip"},
				{"Range": "bytes=0-99"},
				{"If-None-Match": `"` + sh.SHA256 + `"`},
			} {
				st, code, retry, _ := getShard(t, e.env, tok, hdr)
				if st != http.StatusConflict || code != "shard_not_ready" || retry == "" {
					t.Errorf("download of the tampered shard with %v = %d %q, Retry-After %q; want 409 shard_not_ready with Retry-After", hdr, st, code, retry)
				}
			}
			// Refused four times, reported once.
			if n := q.count(e.T.ID(), "m1") - enqueued; n != 1 {
				t.Errorf("%d builds of m1 were enqueued for the bad shard; want 1", n)
			}
			if n := strings.Count(logs.String(), "shard refused"); n != 1 {
				t.Errorf("the bad shard was logged %d times; want once\n%s", n, logs)
			}
			due, err := e.T.DueBuilds(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(","+strings.Join(due, ",")+",", ",m1,") {
				t.Errorf("due builds = %v; want m1's recorded", due)
			}
			// Rebuilt, it is served again.
			sh = buildShard(t, e.env, "m1")
			if st, code, _, sum := getShard(t, e.env, tok, map[string]string{"Accept-Encoding": "gzip"}); st != 200 || sum != sh.SHA256 {
				t.Errorf("download of the rebuilt shard = %d %s, sha256 %s; want 200 with %s", st, code, sum, sh.SHA256)
			}
		})
	}
}
