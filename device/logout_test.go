package device_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/therasync/therasync/device"
)

// TestLogoutOfflineDeletesData: the client library deletes the local
// database at logout even when the server cannot be reached (DESIGN §5),
// says so, and logs in next time under a new device id.
func TestLogoutOfflineDeletesData(t *testing.T) {
	dir := t.TempDir()
	st := device.State{Server: "http://127.0.0.1:1", DeviceID: "d1", Token: "t.secret", TenantID: "t", AccountID: "m1", Role: "member", State: device.StateActive}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, "device.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := device.Open(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Logout(context.Background())
	if err == nil {
		t.Errorf("Logout with the server unreachable = nil; want an error saying the server was not told")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.db*")); len(left) != 0 {
		t.Errorf("files left after an offline logout: %v", left)
	}
	if s := c.State(); s.State != device.StateLoggedOut || s.Token != "" || s.DeviceID == "d1" {
		t.Errorf("state after logout = %+v; want logged out, no token, a new device id", s)
	}
}
