package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/therasync/therasync/internal/testbin"
)

type devClient struct {
	base, key string
}

func (c devClient) do(tb testing.TB, method, path string, body any) (int, []byte) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, r)
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type pullResult struct {
	Changes []map[string]any `json:"changes"`
	Seq     int64            `json:"seq"`
}

func (c devClient) pull(tb testing.TB, since int64) pullResult {
	tb.Helper()
	code, b := c.do(tb, "GET", fmt.Sprintf("/v1/practice/changes?since=%d&limit=10000", since), nil)
	if code != 200 {
		tb.Fatalf("pull = %d %s", code, b)
	}
	var p pullResult
	if err := json.Unmarshal(b, &p); err != nil {
		tb.Fatal(err)
	}
	return p
}

func readDevState(tb testing.TB, dir string) devState {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		tb.Fatal(err)
	}
	return st
}

// TestDevEndToEnd runs the real `therasync dev` binary as a new user would:
// it starts with demo data, takes a push, loses nothing to kill -9, and
// reuses its data directory on restart.
func TestDevEndToEnd(t *testing.T) {
	bin := testbin.Build(t, "github.com/therasync/therasync/cmd/therasync")
	data := t.TempDir()
	var addr string
	start := func() *testbin.Proc {
		var p *testbin.Proc
		p, addr = testbin.StartServer(t, bin, func(string) []string { return []string{"LOG_LEVEL=warn"} },
			func(a string) []string { return []string{"dev", "--addr", a, "--data", data} }, 60*time.Second)
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(p.Output(), "Therasync dev server") {
			if time.Now().After(deadline) {
				t.Fatalf("no banner within 60s:\n%s", p.Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return p
	}
	p := start()
	st := readDevState(t, data)
	if !st.Seeded || st.TenantID == "" || st.PracticeKey == "" || len(st.Accounts) != 5 {
		t.Fatalf("dev.json = %+v; want a seeded tenant with 5 accounts", st)
	}
	for _, want := range []string{"curl", st.PracticeKey, "/v1/practice/changes"} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("banner lacks %q", want)
		}
	}
	c := devClient{base: "http://" + addr, key: st.PracticeKey}

	// The demo data is in the change log, with the DESIGN's variety.
	demo := c.pull(t, 0)
	counts := map[string]int{}
	protocols, starShares := 0, 0
	for _, ch := range demo.Changes {
		counts[ch["entity"].(string)]++
		f, _ := ch["fields"].(map[string]any)
		if f["protocol"] != nil {
			protocols++
		}
		if ch["entity"] == "profile_shares" && f["account_id"] == "*" {
			starShares++
		}
	}
	roles := map[string]int{}
	for _, a := range st.Accounts {
		roles[a.Role]++
	}
	if roles["admin"] != 1 || roles["member"] != 3 || roles["secretary"] != 1 || counts["practices"] != 2 {
		t.Errorf("demo accounts %v, practices %d; want 1 admin, 3 members, 1 secretary, 2 practices", roles, counts["practices"])
	}
	if counts["profiles"] < 150 || counts["sessions"] < 2000 || protocols < 1000 || counts["courses"] < 2 ||
		counts["course_members"] < 16 || counts["transactions"] < 500 || starShares == 0 || counts["profile_shares"] <= starShares {
		t.Errorf("demo data = %v (protocols %d, shares to * %d); want about 200 patients, thousands of sessions with protocols, courses with participants, transactions, shares to members and to *", counts, protocols, starShares)
	}
	demoSeq := demo.Seq

	// A push comes back with the same content and consecutive seqs.
	changes := []map[string]any{
		{"entity": "profiles", "op": "upsert", "id": "pat-e2e", "fields": map[string]any{"first_name": "Erika", "last_name": "Mustermann", "owner_id": "acc-jonas"}},
		{"entity": "sessions", "op": "upsert", "id": "ses-e2e", "fields": map[string]any{"profile_id": "pat-e2e", "therapist_id": "acc-jonas", "status": "planned"}},
	}
	batch := map[string]any{"batch_id": "e2e-1", "changes": changes}
	code, body := c.do(t, "POST", "/v1/practice/changes", batch)
	if want := fmt.Sprintf("{\"seq\":%d}\n", demoSeq+2); code != 200 || string(body) != want {
		t.Fatalf("push = %d %s; want 200 %s", code, body, want)
	}
	got := c.pull(t, demoSeq)
	if len(got.Changes) != 2 {
		t.Fatalf("pull after push = %d changes; want 2", len(got.Changes))
	}
	for i, ch := range got.Changes {
		if ch["seq"] != float64(demoSeq+int64(i)+1) {
			t.Errorf("seq of pushed change %d = %v; want %d", i, ch["seq"], demoSeq+int64(i)+1)
		}
		delete(ch, "seq")
		if !reflect.DeepEqual(ch, changes[i]) {
			t.Errorf("pulled %v; want %v", ch, changes[i])
		}
	}
	// A repeated batch_id applies nothing; bad input changes nothing.
	if code, body := c.do(t, "POST", "/v1/practice/changes", batch); code != 200 || !strings.Contains(string(body), fmt.Sprint(demoSeq+2)) {
		t.Errorf("repeated push = %d %s; want the first answer", code, body)
	}
	if code, body := c.do(t, "POST", "/v1/practice/changes", map[string]any{"batch_id": "e2e-bad", "changes": []any{
		map[string]any{"entity": "profiles", "op": "upsert", "id": "x"},
		map[string]any{"entity": "profiles", "op": "upsert", "id": "y", "fields": map[string]any{"shoe_size": 42}},
	}}); code != 400 || !strings.Contains(string(body), "changes[1] profiles.shoe_size: unknown field") {
		t.Errorf("bad push = %d %s; want 400 naming changes[1] profiles.shoe_size", code, body)
	}
	if got := c.pull(t, 0).Seq; got != demoSeq+2 {
		t.Errorf("seq after repeated and bad pushes = %d; want %d", got, demoSeq+2)
	}

	// kill -9 right after an acknowledged push: the change survives.
	code, body = c.do(t, "POST", "/v1/practice/changes", map[string]any{"batch_id": "e2e-kill", "changes": []any{
		map[string]any{"entity": "practices", "op": "upsert", "id": "pr-kill", "fields": map[string]any{"name": "Praxis nach kill -9"}},
	}})
	if code != 200 {
		t.Fatalf("push before kill = %d %s", code, body)
	}
	p.Signal(syscall.SIGKILL)
	if exited, _ := p.Wait(10 * time.Second); !exited {
		t.Fatal("dev server did not die from SIGKILL")
	}

	p = start()
	c.base = "http://" + addr
	if st2 := readDevState(t, data); st2.TenantID != st.TenantID || st2.PracticeKey != st.PracticeKey {
		t.Errorf("restart made a new tenant: %s; want %s reused", st2.TenantID, st.TenantID)
	}
	after := c.pull(t, demoSeq+2)
	if after.Seq != demoSeq+3 || len(after.Changes) != 1 || after.Changes[0]["id"] != "pr-kill" {
		t.Fatalf("after kill -9 and restart: %+v; want exactly the acknowledged change at seq %d", after, demoSeq+3)
	}

	// A phone from the terminal: a code from the outbox, login, sync, a
	// local write that reaches the practice, logout.
	// Enabling the demo accounts' app sent each its code mail by itself
	// (activation); a code asked for now replaces it, unless the activation
	// mail went out within the minute (429): then that one is the code.
	asked := outboxFiles(data)
	code, body = c.do(t, "POST", "/v1/practice/accounts/acc-sabine/access-code", nil)
	switch code {
	case 200:
	case 429:
		asked = nil
	default:
		t.Fatalf("send code = %d %s", code, body)
	}
	if activation := mailedCode(t, data, "sabine", nil); activation == "" {
		t.Fatal("no activation mail for sabine")
	}
	mailCode := mailedCode(t, data, "sabine", asked)
	dev := t.TempDir()
	if out, err := run(t, "device", "login", "--dir", dev, "--server", c.base, "--email", "sabine.krueger@praxis-demo.de", "--code", mailCode); err != nil || !strings.Contains(out, `"state": "active"`) {
		t.Fatalf("device login = %s, %v", out, err)
	}
	if out, err := run(t, "device", "write", "--dir", dev, "--entity", "profiles", "--id", "pat-e2e", "--fields", `{"phone":"0170 555"}`); err != nil {
		t.Fatalf("device write = %s, %v", out, err)
	}
	out, err := run(t, "device", "sync", "--dir", dev)
	if err != nil || !strings.Contains(out, `"pending": 0`) {
		t.Fatalf("device sync = %s, %v", out, err)
	}
	if out, err := run(t, "device", "query", "--dir", dev, "SELECT phone FROM profiles WHERE id = 'pat-e2e'"); err != nil || !strings.Contains(out, "0170 555") {
		t.Errorf("device query = %s, %v", out, err)
	}
	// device query is read-only: a statement that writes fails and deletes nothing.
	if out, err := run(t, "device", "query", "--dir", dev, "DELETE FROM profiles RETURNING id"); err == nil {
		t.Errorf("device query of a DELETE = %s, nil; want it refused", out)
	}
	if out, err := run(t, "device", "query", "--dir", dev, "SELECT phone FROM profiles WHERE id = 'pat-e2e'"); err != nil || !strings.Contains(out, "0170 555") {
		t.Errorf("device query after a refused DELETE = %s, %v; want the row still there", out, err)
	}
	if pulled := c.pull(t, demoSeq); !strings.Contains(fmt.Sprint(pulled.Changes), "0170 555") {
		t.Errorf("the device's write is not in the practice pull: %v", pulled.Changes)
	}
	if _, err := run(t, "device", "logout", "--dir", dev); err != nil {
		t.Errorf("device logout = %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dev, "*.db*")); len(left) != 0 {
		t.Errorf("files after logout: %v", left)
	}
	// The operator's token tool: minted tokens sync like logged-in devices.
	tokens, err := run(t, "token", "issue", "--data", data, "--tenant", st.TenantID, "--account", "acc-admin", "--count", "2")
	if lines := strings.Fields(tokens); err != nil || len(lines) != 2 {
		t.Fatalf("token issue = %q, %v; want two tokens", tokens, err)
	}
	dev2 := t.TempDir()
	if out, err := run(t, "device", "login", "--dir", dev2, "--server", c.base, "--token", strings.Fields(tokens)[0]); err != nil || !strings.Contains(out, `"role": "admin"`) {
		t.Errorf("device login --token = %s, %v", out, err)
	}
	if out, err := run(t, "device", "sync", "--dir", dev2); err != nil || !strings.Contains(out, `"cursor"`) {
		t.Errorf("sync with a minted token = %s, %v", out, err)
	}

	// The vendor's support, on the running server.
	checkOperator(t, data, readDevState(t, data), c)

	// SIGTERM stops it gracefully.
	p.Signal(syscall.SIGTERM)
	exited, err := p.Wait(30 * time.Second)
	if !exited || err != nil {
		t.Errorf("after SIGTERM: exited %v, err %v; want a clean exit", exited, err)
	}
}
