package daemon

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

// TestConfigFromEnvironment: a value that does not parse is reported by
// Validate, never dropped for a default.
func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{"SECRET": strings.Repeat("ab", 32)}
	base := func(k, v string) func(string) string {
		return func(name string) string {
			if name == k {
				return v
			}
			return env[name]
		}
	}
	if err := DefaultConfig(base("", "")).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig(base("MAX_SOCKETS_PER_ACCOUNT", "500"))
	if c.MaxSocketsPerAccount != 500 || c.Validate() != nil {
		t.Errorf("MAX_SOCKETS_PER_ACCOUNT=500: %d, %v", c.MaxSocketsPerAccount, c.Validate())
	}
	for _, bad := range [][2]string{{"MAX_SOCKETS_PER_ACCOUNT", "many"}, {"MAX_SOCKETS_PER_DEVICE", "0"}, {"ACCESS_RECHECK", "2"},
		{"ACCESS_RECHECK", "10ms"}, {"UPGRADES_PER_MINUTE", "-1"}, {"TICK_INTERVAL", "soon"}, {"MAX_BODY_BYTES", "16M"}, {"CODE_DIGITS", "six"},
		{"CHANGE_RETENTION", "90 days"}, {"CHANGE_RETENTION", "-1d"}, {"CHANGE_RETENTION", "10m"}} {
		err := DefaultConfig(base(bad[0], bad[1])).Validate()
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: Validate = %v; want an error naming it", bad[0], bad[1], err)
		}
	}
}

// TestConfigEnvParseErrors: a variable that does not parse is reported
// once, with its name, its value and why — never as the zero it did not
// parse to ("MAX_BODY_BYTES must be at least 1024, got 0").
func TestConfigEnvParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		want        []string
	}{
		{"MAX_BODY_BYTES", "16MB", []string{`MAX_BODY_BYTES="16MB"`, "not a whole number of bytes", "16777216"}},
		{"MAX_BODY_BYTES", "99999999999999999999", []string{`MAX_BODY_BYTES="99999999999999999999"`, "out of range"}},
		{"CODE_DIGITS", "six", []string{`CODE_DIGITS="six"`, "not a whole number"}},
		{"WORKER_CONCURRENCY", "4 workers", []string{`WORKER_CONCURRENCY="4 workers"`, "not a whole number"}},
		{"ACCESS_RECHECK", "2", []string{`ACCESS_RECHECK="2"`, "not a duration with a unit", "2s"}},
		{"SHUTDOWN_TIMEOUT", "soon", []string{`SHUTDOWN_TIMEOUT="soon"`, "not a duration"}},
		{"CHANGE_RETENTION", "90 days", []string{`CHANGE_RETENTION="90 days"`, "want days such as 90d"}},
	} {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			c := DefaultConfig(func(name string) string {
				switch name {
				case "SECRET":
					return strings.Repeat("ab", 32)
				case tt.name:
					return tt.value
				}
				return ""
			})
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate = nil; want the parse error")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Validate = %q; want it to contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "got 0") || strings.Count(msg, tt.name) != 1 {
				t.Errorf("Validate = %q; want the one parse error, not a range check of a value nobody wrote", msg)
			}
		})
	}
}

// TestProcessFlags: each binary takes the flags README's configuration
// table gives it, and a bad command line exits with 2.
func TestProcessFlags(t *testing.T) {
	env := func(name string) string {
		if name == "SECRET" {
			return strings.Repeat("ab", 32)
		}
		return ""
	}
	for _, tt := range []struct {
		p    Process
		want string
	}{
		{SyncdProcess(), "access-recheck addr body-read-timeout code-digits data log-level max-body max-sockets-per-account max-sockets-per-device read-timeout redis shutdown-timeout upgrades-per-minute"},
		{WorkerProcess(), "change-retention concurrency data log-level redis shutdown-timeout tick"},
	} {
		t.Run(tt.p.Name, func(t *testing.T) {
			fs := flag.NewFlagSet(tt.p.Name, flag.ContinueOnError)
			c := DefaultConfig(env)
			c.RegisterFlags(fs, tt.p.Flags...)
			var got []string
			fs.VisitAll(func(f *flag.Flag) { got = append(got, f.Name) })
			if strings.Join(got, " ") != tt.want {
				t.Errorf("flags %v; want %s", got, tt.want)
			}
			var stderr bytes.Buffer
			if code := NewMain(tt.p, env, &stderr).Exec([]string{"-no-such-flag"}); code != 2 || !strings.Contains(stderr.String(), "\n"+tt.p.Name+": flag provided but not defined") {
				t.Errorf("Exec(-no-such-flag) = %d, stderr %q; want 2 and the binary's name", code, stderr.String())
			}
		})
	}
}

// TestChangeRetention: CHANGE_RETENTION takes days or a duration, 0 keeps
// every change, and the default is 90 days.
func TestChangeRetention(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want time.Duration
	}{
		{"", 90 * 24 * time.Hour},
		{"30d", 30 * 24 * time.Hour},
		{"720h", 720 * time.Hour},
		{"0", 0},
		{"0d", 0},
	} {
		c := DefaultConfig(func(name string) string {
			switch name {
			case "SECRET":
				return strings.Repeat("ab", 32)
			case "CHANGE_RETENTION":
				return tt.env
			}
			return ""
		})
		if c.ChangeRetention != tt.want || c.Validate() != nil {
			t.Errorf("CHANGE_RETENTION=%q: %s, %v; want %s", tt.env, c.ChangeRetention, c.Validate(), tt.want)
		}
	}
	c := DefaultConfig(func(string) string { return "" })
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	c.RegisterFlags(fs, "change-retention")
	if err := fs.Parse([]string{"-change-retention", "7d"}); err != nil || c.ChangeRetention != 7*24*time.Hour {
		t.Errorf("-change-retention 7d: %s, %v; want 168h", c.ChangeRetention, err)
	}
	if got := fs.Lookup("change-retention").Value.String(); got != "7d" {
		t.Errorf("flag value = %q; want 7d", got)
	}
}
