package syncd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// env is a syncd over a real store, served over loopback.
type env struct {
	URL   string
	Key   string
	Store *store.Store
	T     *store.Tenant
}

func newEnv(tb testing.TB, cfg syncd.Config, licenses ...string) *env {
	tb.Helper()
	s, err := store.Open(tb.TempDir(), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if licenses == nil {
		licenses = []string{store.LicenseSync, store.LicenseApp}
	}
	st, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "Praxis", Licenses: licenses})
	if err != nil {
		tb.Fatal(err)
	}
	tn, err := s.Tenant(context.Background(), st.ID)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Store = s
	srv := httptest.NewServer(syncd.New(cfg))
	tb.Cleanup(srv.Close)
	return &env{URL: srv.URL, Key: key, Store: s, T: tn}
}

// do sends a request with the practice key and returns status and body.
func (e *env) do(tb testing.TB, method, path, key string, body []byte) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, e.URL+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b
}

func (e *env) seq(tb testing.TB) int64 {
	tb.Helper()
	seq, err := e.T.Seq(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return seq
}

type pulled struct {
	Changes []map[string]any `json:"changes"`
	Seq     int64            `json:"seq"`
}

func (e *env) pull(tb testing.TB, since, limit int) pulled {
	tb.Helper()
	code, body := e.do(tb, "GET", fmt.Sprintf("/v1/practice/changes?since=%d&limit=%d", since, limit), e.Key, nil)
	if code != http.StatusOK {
		tb.Fatalf("GET changes = %d %s; want 200", code, body)
	}
	var p pulled
	if err := json.Unmarshal(body, &p); err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestPushThenPull(t *testing.T) {
	e := newEnv(t, syncd.Config{})
	changes := []map[string]any{
		{"entity": "practices", "op": "upsert", "id": "pr1", "fields": map[string]any{"name": "Praxis Mitte"}},
		{"entity": "accounts", "op": "upsert", "id": "a1", "fields": map[string]any{"name": "Jonas", "role": "member", "app_enabled": true, "practice_ids": []any{"pr1"}}},
		{"entity": "sessions", "op": "upsert", "id": "s1", "fields": map[string]any{"therapist_id": "a1", "price_cents": float64(3800), "protocol": "Befund …"}},
		{"entity": "practices", "op": "delete", "id": "pr1"},
	}
	body, _ := json.Marshal(map[string]any{"batch_id": "b-1", "changes": changes})
	code, resp := e.do(t, "POST", "/v1/practice/changes", e.Key, body)
	if code != http.StatusOK || string(resp) != "{\"seq\":4}\n" {
		t.Fatalf("POST changes = %d %s; want 200 {\"seq\":4}", code, resp)
	}
	p := e.pull(t, 0, 100)
	if p.Seq != 4 || len(p.Changes) != 4 {
		t.Fatalf("pull = %+v; want 4 changes, seq 4", p)
	}
	for i, c := range p.Changes {
		if c["seq"] != float64(i+1) {
			t.Errorf("change %d seq = %v; want %d", i, c["seq"], i+1)
		}
		delete(c, "seq")
		if !reflect.DeepEqual(c, changes[i]) {
			t.Errorf("pulled change %d = %v; want %v", i, c, changes[i])
		}
	}
	// Paging: since and limit.
	if p := e.pull(t, 2, 1); len(p.Changes) != 1 || p.Changes[0]["seq"] != float64(3) || p.Seq != 4 {
		t.Errorf("pull(since 2, limit 1) = %+v; want change 3 and seq 4", p)
	}
	// The same batch again applies nothing and answers the same.
	code, resp = e.do(t, "POST", "/v1/practice/changes", e.Key, body)
	if code != http.StatusOK || string(resp) != "{\"seq\":4}\n" {
		t.Errorf("repeated POST = %d %s; want 200 {\"seq\":4}", code, resp)
	}
	if got := e.seq(t); got != 4 {
		t.Errorf("seq after repeated batch = %d; want 4", got)
	}
}

// TestBadInput sends every kind of bad request: each gets its error code
// and changes nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t, syncd.Config{MaxBodyBytes: 64 << 10})
	setup, _ := json.Marshal(map[string]any{"batch_id": "setup", "changes": []any{
		map[string]any{"entity": "profile_shares", "op": "upsert", "id": "sh1", "fields": map[string]any{"profile_id": "p1", "account_id": "*"}},
	}})
	if code, b := e.do(t, "POST", "/v1/practice/changes", e.Key, setup); code != 200 {
		t.Fatalf("setup = %d %s", code, b)
	}
	ok := `{"entity":"profiles","op":"upsert","id":"p2","fields":{"first_name":"Ben"}}`
	tests := []struct {
		name, method, path, key, body string
		status                        int
		code, msg                     string
	}{
		{"no key", "POST", "/v1/practice/changes", "", `{"batch_id":"x","changes":[` + ok + `]}`, 401, "unauthorized", ""},
		{"wrong key", "POST", "/v1/practice/changes", "wrong.key", `{"batch_id":"x","changes":[` + ok + `]}`, 401, "unauthorized", ""},
		{"wrong secret", "POST", "/v1/practice/changes", e.Key + "x", `{"batch_id":"x","changes":[` + ok + `]}`, 401, "unauthorized", ""},
		{"wrong key on pull", "GET", "/v1/practice/changes", "nope", ``, 401, "unauthorized", ""},
		{"not JSON", "POST", "/v1/practice/changes", e.Key, `{"batch_id":`, 400, "bad_request", "invalid JSON body"},
		{"unknown top-level field", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changez":[]}`, 400, "bad_request", "unknown field"},
		{"trailing data", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `]} {}`, 400, "bad_request", "data after"},
		{"no batch_id", "POST", "/v1/practice/changes", e.Key, `{"changes":[` + ok + `]}`, 400, "bad_request", "batch_id is missing"},
		{"no changes", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x"}`, 400, "bad_request", "changes is missing"},
		{"empty changes", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[]}`, 400, "bad_request", "changes is empty"},
		{"unknown entity", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"patients","op":"upsert","id":"y"}]}`, 400, "bad_request", `changes[1]: unknown entity "patients"`},
		{"unknown field", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"profiles","op":"upsert","id":"y","fields":{"diagnose":"x"}}]}`, 400, "bad_request", `changes[1] profiles.diagnose: unknown field`},
		{"wrong type", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[{"entity":"sessions","op":"upsert","id":"y","fields":{"price_cents":"12"}},` + ok + `]}`, 400, "bad_request", `changes[0] sessions.price_cents: must be an integer`},
		{"missing id", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"profiles","op":"upsert"}]}`, 400, "bad_request", `changes[1] profiles.id: id is missing`},
		{"unknown op", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"profiles","op":"patch","id":"y"}]}`, 400, "bad_request", `changes[1] profiles: unknown op "patch"`},
		{"share changed", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"account_id":"a9"}}]}`, 403, "forbidden", `changes[1] profile_shares: a profile share can never be changed`},
		{"share deleted", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[` + ok + `,{"entity":"profile_shares","op":"delete","id":"sh1"}]}`, 403, "forbidden", `can never be deleted`},
		{"reused batch_id", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"setup","changes":[` + ok + `]}`, 409, "conflict", `batch_id "setup" was applied before with other changes`},
		{"too large", "POST", "/v1/practice/changes", e.Key, `{"batch_id":"x","changes":[{"entity":"profiles","op":"upsert","id":"y","fields":{"address":"` + strings.Repeat("x", 70<<10) + `"}}]}`, 413, "too_large", "request body exceeds 65536 bytes"},
		{"bad since", "GET", "/v1/practice/changes?since=abc", e.Key, ``, 400, "bad_request", `since must be an integer`},
		{"negative since", "GET", "/v1/practice/changes?since=-1", e.Key, ``, 400, "bad_request", `since must be between`},
		{"limit too big", "GET", "/v1/practice/changes?limit=100000", e.Key, ``, 400, "bad_request", `limit must be between 1 and 10000`},
		{"unknown path", "GET", "/v1/practice/nothing", e.Key, ``, 404, "not_found", ``},
		{"empty push body", "POST", "/v1/practice/changes", e.Key, ``, 400, "bad_request", "the request body is empty; want a JSON object"},
		{"build for an unknown account", "POST", "/v1/practice/shards/build", e.Key, `{"account_id":"nobody"}`, 404, "not_found", `account "nobody"`},
		{"build with a bad body", "POST", "/v1/practice/shards/build", e.Key, `{"account":"a1"}`, 400, "bad_request", `unknown field`},
	}
	before := e.seq(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.do(t, tt.method, tt.path, tt.key, []byte(tt.body))
			var ae struct{ Error, Message string }
			if err := json.Unmarshal(body, &ae); err != nil {
				t.Fatalf("%s %s: body %q is not a JSON error: %v", tt.method, tt.path, body, err)
			}
			if status != tt.status || ae.Error != tt.code || !strings.Contains(ae.Message, tt.msg) {
				t.Errorf("%s %s = %d %+v; want %d %s containing %q", tt.method, tt.path, status, ae, tt.status, tt.code, tt.msg)
			}
			// The code says what kind of error it is; the message says
			// what is wrong, without the wrapping's internal suffixes.
			for _, suffix := range []string{": bad request", ": invalid change", ": forbidden", ": conflict", ": EOF"} {
				if strings.HasSuffix(ae.Message, suffix) {
					t.Errorf("message %q ends in the internal suffix %q", ae.Message, suffix)
				}
			}
			if got := e.seq(t); got != before {
				t.Errorf("seq after refused request = %d; want %d (nothing applied)", got, before)
			}
		})
	}
	// p2 of the refused batches was never written; "x" is still free.
	code, body := e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"x","changes":[`+ok+`]}`))
	if code != 200 || string(body) != fmt.Sprintf("{\"seq\":%d}\n", before+1) {
		t.Errorf("corrected batch = %d %s; want 200 seq %d", code, body, before+1)
	}
}

func TestPushNeedsSyncLicense(t *testing.T) {
	e := newEnv(t, syncd.Config{}, store.LicenseApp)
	code, body := e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"x","changes":[{"entity":"practices","op":"upsert","id":"p"}]}`))
	if code != http.StatusForbidden || !strings.Contains(string(body), `"error":"license_missing"`) {
		t.Errorf("push without sync license = %d %s; want 403 license_missing", code, body)
	}
	if got := e.seq(t); got != 0 {
		t.Errorf("seq = %d; want 0", got)
	}
}

// TestConcurrentPushes pushes from many HTTP clients at once: every batch
// is acknowledged (no "database is locked"), and the log has every change.
func TestConcurrentPushes(t *testing.T) {
	e := newEnv(t, syncd.Config{})
	if code, b := e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"accounts","changes":[
		{"entity":"accounts","op":"upsert","id":"a0"},{"entity":"accounts","op":"upsert","id":"a1"},{"entity":"accounts","op":"upsert","id":"a2"}]}`)); code != 200 {
		t.Fatalf("accounts = %d %s", code, b)
	}
	const pushers, batches = 12, 10
	var wg sync.WaitGroup
	errs := make(chan error, pushers*batches)
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				body := fmt.Sprintf(`{"batch_id":"p%d-b%d","changes":[{"entity":"profiles","op":"upsert","id":"pat-%d-%d","fields":{"first_name":"X"}},{"entity":"transactions","op":"upsert","id":"t-%d-%d","fields":{"account_id":"a%d","kind":"invoice"}}]}`, p, b, p, b, p, b, p%3)
				req, _ := http.NewRequest("POST", e.URL+"/v1/practice/changes", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+e.Key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- errors.New(resp.Status + " " + string(b))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("push: %v", err)
	}
	p := e.pull(t, 0, 10000)
	if want := 3 + pushers*batches*2; len(p.Changes) != want || p.Seq != int64(want) {
		t.Fatalf("pulled %d changes, seq %d; want %d", len(p.Changes), p.Seq, want)
	}
	refs := map[string]bool{}
	for _, c := range p.Changes {
		if c["entity"] != "transactions" {
			continue
		}
		ref := c["fields"].(map[string]any)["reference"].(string)
		if refs[ref] {
			t.Errorf("reference %s assigned twice", ref)
		}
		refs[ref] = true
	}
	if len(refs) != pushers*batches {
		t.Errorf("%d distinct references; want %d", len(refs), pushers*batches)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	var fail error
	e := newEnv(t, syncd.Config{Checks: map[string]func(context.Context) error{
		"redis": func(context.Context) error { return fail },
	}})
	if code, body := e.do(t, "GET", "/healthz", "", nil); code != 200 || !strings.Contains(string(body), `"redis":"ok"`) {
		t.Errorf("healthz = %d %s; want 200 with redis ok", code, body)
	}
	fail = errors.New("connection refused")
	if code, body := e.do(t, "GET", "/healthz", "", nil); code != 503 || !strings.Contains(string(body), "connection refused") {
		t.Errorf("healthz with a failing check = %d %s; want 503 naming the error", code, body)
	}
	e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"m","changes":[{"entity":"practices","op":"upsert","id":"p"},{"entity":"practices","op":"upsert","id":"q"}]}`))
	e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"m","changes":[{"entity":"practices","op":"upsert","id":"p"},{"entity":"practices","op":"upsert","id":"q"}]}`))
	_, body := e.do(t, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`therasync_practice_pushes_total{result="applied"} 1`,
		`therasync_practice_pushes_total{result="repeated"} 1`,
		`therasync_changes_applied_total 2`,
		`therasync_http_requests_total{code="200",route="POST /v1/practice/changes"} 2`,
		`therasync_http_request_duration_seconds_count{route="POST /v1/practice/changes"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestWithoutSecretTOTPFailsCleanly: a server configured without SECRET
// refuses TOTP enrolment and step-ups with an error, not a crash.
func TestWithoutSecretTOTPFailsCleanly(t *testing.T) {
	e := newEnv(t, syncd.Config{})
	e.do(t, "POST", "/v1/practice/changes", e.Key, []byte(`{"batch_id":"a","changes":[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin"}}]}`))
	for _, path := range []string{"/v1/practice/accounts/a1/totp", "/v1/practice/key/rotate"} {
		code, body := e.do(t, "POST", path, e.Key, nil)
		if code != http.StatusInternalServerError || !strings.Contains(string(body), `"error":"internal"`) {
			t.Errorf("POST %s without a secret = %d %s; want 500 internal", path, code, body)
		}
	}
}

// TestBuildAllWithoutBody asks for every outdated shard with no body at
// all, as `curl -X POST` does: the same as {}.
func TestBuildAllWithoutBody(t *testing.T) {
	e := newEnv(t, syncd.Config{})
	push, _ := json.Marshal(map[string]any{"batch_id": "acc", "changes": []any{
		map[string]any{"entity": "accounts", "op": "upsert", "id": "a1", "fields": map[string]any{"name": "Anna", "email": "anna@example.org", "role": "member", "app_enabled": true}},
	}})
	if code, b := e.do(t, "POST", "/v1/practice/changes", e.Key, push); code != 200 {
		t.Fatalf("push = %d %s", code, b)
	}
	for _, body := range []string{``, `{}`} {
		code, b := e.do(t, "POST", "/v1/practice/shards/build", e.Key, []byte(body))
		var got struct{ Enqueued []string }
		if err := json.Unmarshal(b, &got); code != 200 || err != nil || len(got.Enqueued) != 1 || got.Enqueued[0] != "a1" {
			t.Errorf("build with body %q = %d %s; want 200 enqueued [a1]", body, code, b)
		}
	}
}
