package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/therasync/therasync/internal/redistest"
	"github.com/therasync/therasync/internal/testbin"
	"github.com/therasync/therasync/store"
)

// TestProcesses runs the production processes, syncd and worker, as the
// Procfile does: separately, against a real Redis and one data directory.
func TestProcesses(t *testing.T) {
	rs := redistest.Start(t)
	data := t.TempDir()
	s, err := store.Open(data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync"}})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	syncdBin := testbin.Build(t, "github.com/therasync/therasync/cmd/syncd")
	workerBin := testbin.Build(t, "github.com/therasync/therasync/cmd/worker")
	env := []string{"DATA_DIR=" + data, "REDIS_URL=" + rs.URL(), "SHUTDOWN_TIMEOUT=5s",
		"SECRET=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}
	sp, addr := testbin.StartServer(t, syncdBin, func(a string) []string { return append(env, "ADDR="+a) },
		func(string) []string { return nil }, 30*time.Second)
	wp := testbin.Start(t, workerBin, env)

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"redis":"ok"`) {
		t.Errorf("healthz = %s; want redis ok", b)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/practice/changes",
		bytes.NewReader([]byte(`{"batch_id":"1","changes":[{"entity":"practices","op":"upsert","id":"p","fields":{"name":"Mitte"}}]}`)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var pr struct{ Seq int64 }
	json.NewDecoder(resp.Body).Decode(&pr)
	resp.Body.Close()
	if resp.StatusCode != 200 || pr.Seq != 1 {
		t.Errorf("push = %d seq %d; want 200 seq 1", resp.StatusCode, pr.Seq)
	}

	// The worker registered itself with Asynq in Redis.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := rs.Do("SCARD", "asynq:servers")
		if err == nil && n != ":0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not registered in Redis (SCARD asynq:servers = %q, %v)\n%s", n, err, wp.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Both stop gracefully on SIGTERM, within the shutdown deadline.
	for _, p := range []*testbin.Proc{sp, wp} {
		p.Signal(syscall.SIGTERM)
		if exited, err := p.Wait(15 * time.Second); !exited || err != nil {
			t.Errorf("%v after SIGTERM: exited %v, err %v; want a clean exit", p, exited, err)
		}
	}
	if !strings.Contains(sp.Output(), `"msg":"shutting down"`) {
		t.Errorf("syncd did not log its shutdown:\n%s", sp.Output())
	}
}

func TestConfigValidation(t *testing.T) {
	t.Setenv("SECRET", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	m := NewMain()
	if err := m.ParseFlags(nil); err != nil {
		t.Fatalf("ParseFlags(defaults) = %v; want ok", err)
	}
	t.Setenv("SECRET", "tooshort")
	if err := NewMain().ParseFlags(nil); err == nil || !strings.Contains(err.Error(), "SECRET") {
		t.Errorf("ParseFlags(short SECRET) = %v; want a SECRET error", err)
	}
	t.Setenv("SECRET", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	for _, args := range [][]string{
		{"-redis", "mysql://x"},
		{"-log-level", "loud"},
		{"-max-body", "10"},
		{"-addr", ""},
		{"-shutdown-timeout", "0s"},
		{"-code-digits", "5"},
		{"-code-digits", "11"},
	} {
		m := NewMain()
		if err := m.ParseFlags(args); err == nil {
			t.Errorf("ParseFlags(%v) = nil; want an error", args)
		}
	}
}
