package daemon

import (
	"strings"
	"testing"
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
		{"ACCESS_RECHECK", "10ms"}, {"UPGRADES_PER_MINUTE", "-1"}, {"TICK_INTERVAL", "soon"}, {"MAX_BODY_BYTES", "16M"}, {"CODE_DIGITS", "six"}} {
		err := DefaultConfig(base(bad[0], bad[1])).Validate()
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: Validate = %v; want an error naming it", bad[0], bad[1], err)
		}
	}
}
