package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func run(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err := m.Run(context.Background(), args)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	return out.String(), err
}

func TestTenantCreateAndList(t *testing.T) {
	data := t.TempDir()
	out, err := run(t, "tenant", "create", "--data", data, "--name", "Praxisgruppe Nord", "--licenses", "sync", "--tz", "Europe/Vienna")
	if err != nil {
		t.Fatalf("tenant create = %v", err)
	}
	var created struct {
		TenantID    string `json:"tenant_id"`
		PracticeKey string `json:"practice_key"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.TenantID == "" {
		t.Fatalf("tenant create printed %q; want one JSON object with tenant_id and practice_key", out)
	}
	// The key carries ≥128 random bits after the tenant id; only its hash is kept.
	_, secret, _ := strings.Cut(created.PracticeKey, ".")
	if len(secret) < 22 {
		t.Errorf("practice key secret %q has fewer than 128 bits", secret)
	}
	out, err = run(t, "tenant", "list", "--data", data)
	if err != nil {
		t.Fatalf("tenant list = %v", err)
	}
	var listed struct {
		ID       string   `json:"tenant_id"`
		Name     string   `json:"name"`
		Licenses []string `json:"licenses"`
		TZ       string   `json:"tz"`
		Seq      int64    `json:"seq"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("tenant list printed %q: %v", out, err)
	}
	if listed.ID != created.TenantID || listed.Name != "Praxisgruppe Nord" || listed.TZ != "Europe/Vienna" || len(listed.Licenses) != 1 || listed.Licenses[0] != "sync" {
		t.Errorf("tenant list = %+v; want the created tenant", listed)
	}
	if strings.Contains(out, secret) {
		t.Errorf("tenant list shows the practice key")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nope"},
		{"tenant"},
		{"tenant", "delete"},
		{"tenant", "create", "--data", "x"},
		{"tenant", "list"},
	} {
		var ue usageError
		if _, err := run(t, args...); !errors.As(err, &ue) {
			t.Errorf("therasync %v = %v; want a usage error", args, err)
		}
	}
	if _, err := run(t, "tenant", "create", "--data", t.TempDir(), "--name", "x", "--tz", "Nowhere/City"); err == nil || !strings.Contains(err.Error(), "unknown time zone") {
		t.Errorf("tenant create with a bad tz = %v; want unknown time zone", err)
	}
}
