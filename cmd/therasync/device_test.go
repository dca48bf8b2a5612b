package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
)

// TestDeviceLogoutOffline: `device logout` with the server away deletes
// the local databases, says the server is told later and succeeds;
// `device status` shows the logout pending.
func TestDeviceLogoutOffline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "http://" + ln.Addr().String()
	ln.Close() // nobody answers there
	dir := t.TempDir()
	b, err := json.Marshal(device.State{Server: server, DeviceID: "d1", Token: "t1.secret", TenantID: "t1", AccountID: "m1", Role: "member", State: device.StateActive})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"data.db", "data.db-wal", "data.db-shm"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err = m.Run(context.Background(), []string{"device", "logout", "--dir", dir})
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("device logout with the server away = %v; want success", err)
	}
	if !strings.Contains(errOut.String(), "told the next time") {
		t.Errorf("device logout said %q; want that the server is told later", errOut.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.db*")); len(left) != 0 {
		t.Errorf("files left after logout: %v", left)
	}
	status, err := run(t, "device", "status", "--dir", dir)
	if err != nil || !strings.Contains(status, `"logout_pending": true`) || !strings.Contains(status, `"state": "logged_out"`) {
		t.Errorf("device status = %s, %v; want logged out with the logout pending", status, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.db*")); len(left) != 0 {
		t.Errorf("files after device status: %v", left)
	}
}

// TestDeviceSyncFollowCancel: `device sync --follow` ended by Ctrl-C
// (its context cancelled) exits 0 and prints the device's status.
func TestDeviceSyncFollowCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "http://" + ln.Addr().String()
	ln.Close() // nobody answers: the sync keeps retrying until cancelled
	dir := t.TempDir()
	b, err := json.Marshal(device.State{Server: server, DeviceID: "d1", Token: "t1.secret", TenantID: "t1", AccountID: "m1", Role: "member", State: device.StateActive})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err = m.Run(ctx, []string{"device", "sync", "--follow", "--dir", dir})
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("device sync --follow cancelled = %v; want nil (exit 0)", err)
	}
	if !strings.Contains(out.String(), `"device_id": "d1"`) {
		t.Errorf("device sync --follow printed %q; want the status", out.String())
	}
	if !strings.Contains(errOut.String(), "reconnecting") {
		t.Errorf("device sync --follow told %q on stderr; want what happens (disconnected, reconnecting)", errOut.String())
	}
}

// TestDeviceServerRefused: a device command other than login refuses a
// --server that differs from the stored one and leaves it unchanged.
func TestDeviceServerRefused(t *testing.T) {
	dir := t.TempDir()
	b, err := json.Marshal(device.State{Server: "http://127.0.0.1:1", DeviceID: "d1", State: device.StateLoggedOut})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"status", "sync", "logout"} {
		if _, err := run(t, "device", cmd, "--dir", dir, "--server", "http://evil.example"); err == nil || !strings.Contains(err.Error(), "only device login changes it") {
			t.Errorf("device %s --server other = %v; want it refused", cmd, err)
		}
	}
	if out, err := run(t, "device", "status", "--dir", dir, "--server", "http://127.0.0.1:1/"); err != nil || !strings.Contains(out, `"server": "http://127.0.0.1:1"`) {
		t.Errorf("device status with the stored server = %s, %v; want the server unchanged", out, err)
	}
}
