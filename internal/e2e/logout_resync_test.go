package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
)

// TestLogoutDuringResyncDownload: the user logs out while the sync loop
// downloads a fresh shard (a resync), and the server does not hear the
// logout (a 5xx: the token stays valid, pending). The download's attempt
// breaks; downloadShard does not try again with the token it read before
// the logout, nor put data.db (or outbox.db) back: DESIGN §5, the logout
// deletes the local data.
func TestLogoutDuringResyncDownload(t *testing.T) {
	var armed atomic.Bool
	inShard, release := make(chan struct{}), make(chan struct{})
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/v1/device/logout":
				http.Error(w, `{"error":"unavailable","message":"down"}`, http.StatusServiceUnavailable)
				return
			case r.URL.Path == "/v1/device/shard" && armed.CompareAndSwap(true, false):
				close(inShard)
				<-release
				// The download breaks halfway (not an API error): the
				// client retries.
				w.Header().Set("Content-Length", "1000000")
				w.WriteHeader(http.StatusOK)
				w.Write(make([]byte, 4096))
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			h.ServeHTTP(w, r)
		})
	}
	sys := newSystem(t)
	sys.restartable(wrap)
	sys.startWorker(time.Hour)
	seedGroup(sys)
	sys.push(
		up("courses", "crs", map[string]any{"therapist_id": "m1", "title": "Rücken"}),
		up("course_members", "cm", map[string]any{"course_id": "crs", "profile_id": "p2"}),
		up("accounts", "m1", map[string]any{"app_enabled": true}),
	)
	sys.waitShard("m1", sys.seq(), 5*time.Second)
	phone := newDevice(t, sys, "j@x.de", "m1")
	if err := syncIdle(t, phone); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	sys.push(map[string]any{"entity": "course_members", "op": "delete", "id": "cm"}) // resync
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- phone.Sync(ctx, device.SyncOptions{MaxBackoff: 100 * time.Millisecond}) }()
	select {
	case <-inShard:
	case <-time.After(5 * time.Second):
		t.Fatal("no resync download")
	}
	if err := phone.Logout(ctx); !errors.Is(err, device.ErrLogoutPending) {
		t.Fatalf("Logout = %v; want ErrLogoutPending", err)
	}
	if left, _ := filepath.Glob(filepath.Join(phone.Dir(), "*.db*")); len(left) != 0 {
		t.Fatalf("right after the logout: %v", left)
	}
	close(release)
	select {
	case err := <-done:
		t.Logf("Sync returned %v", err)
	case <-time.After(8 * time.Second):
		t.Fatal("Sync did not return after the logout")
	}
	if left, _ := filepath.Glob(filepath.Join(phone.Dir(), "*.db*")); len(left) != 0 {
		t.Errorf("after the logout (state %s) the device directory holds %v", phone.State().State, left)
	}
}
