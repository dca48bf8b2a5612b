package daemon

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readEnvFile reads KEY=VALUE lines as a shell's `set -a; . ./.env` or
// goreman would (comments and blank lines skipped, one pair of quotes
// taken off).
func readEnvFile(tb testing.TB, path string) map[string]string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			tb.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return env
}

// TestEnvExample: the Procfile's .env.example names only settings the
// processes read, its placeholder secret is refused (nobody ships a shared
// one), and with a fresh secret the configuration is valid; the Procfile
// runs the binaries that exist.
func TestEnvExample(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	env := readEnvFile(t, filepath.Join(root, ".env.example"))
	read := map[string]bool{}
	getenv := func(k string) string { read[k] = true; return env[k] }
	if err := DefaultConfig(getenv).Validate(); err == nil || !strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Validate with the placeholder secret = %v; want SECRET refused", err)
	}
	for k := range env {
		if !read[k] {
			t.Errorf(".env.example sets %s, which no process reads", k)
		}
	}
	env["SECRET"] = strings.Repeat("ab", 32) // what `openssl rand -hex 32` prints
	if err := DefaultConfig(getenv).Validate(); err != nil {
		t.Errorf("Validate with .env.example and a fresh secret = %v", err)
	}

	b, err := os.ReadFile(filepath.Join(root, "Procfile"))
	if err != nil {
		t.Fatal(err)
	}
	procs := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, cmd, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, "#") {
			procs[name] = cmd
		}
	}
	for _, name := range []string{"redis", "syncd", "worker"} {
		cmd, ok := procs[name]
		if !ok {
			t.Errorf("Procfile has no %s process", name)
			continue
		}
		if pkg, ok := strings.CutPrefix(cmd, "go run "); ok {
			if _, err := os.Stat(filepath.Join(root, pkg, "main.go")); err != nil {
				t.Errorf("Procfile's %s runs %s: %v", name, pkg, err)
			}
		}
	}
}
