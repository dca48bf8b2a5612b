package syncd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// Unit tests of one live connection's queues and writer (conn.go), over a
// real WebSocket on loopback, without a catch-up: the test plays the
// feed (enqueue, enqueueControl, stop) and the device (the client end).

// connRig is a registered practice connection and the device's end of it.
type connRig struct {
	srv    *Server
	c      *liveConn
	client *websocket.Conn
}

// newConnRig opens a connection whose writer is idle (no catch-up runs)
// and whose reader only reads (no pushes are applied).
func newConnRig(tb testing.TB, writeTimeout time.Duration) *connRig {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(tb.TempDir(), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ts, _, err := st.CreateTenant(ctx, store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatal(err)
	}
	tn, err := st.Tenant(ctx, ts.ID)
	if err != nil {
		tb.Fatal(err)
	}
	settings, err := tn.Settings(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	srv := New(Config{Store: st, LiveWriteTimeout: writeTimeout, AccessRecheck: time.Hour})
	upgraded := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := srv.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		upgraded <- ws
	}))
	tb.Cleanup(hs.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	c := &liveConn{s: srv, ws: <-upgraded, tenant: tn, practice: true, keyHash: settings.KeyHash, viewer: model.Viewer{Role: model.RoleAdmin},
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), room: make(chan struct{}, 1),
		done: make(chan struct{}), readerDone: make(chan struct{})}
	c.ping = time.AfterFunc(time.Hour, c.queuePing)
	if _, ok := srv.hub.add(c, srv.limits()); !ok {
		tb.Fatal("the hub refused the connection")
	}
	go func() { // the reader, without pushes
		defer close(c.readerDone)
		defer c.stop(wire.CloseNormalClosure, "", nil)
		for {
			if _, _, err := c.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &connRig{srv: srv, c: c, client: client}
}

// read returns the client's next n text frames; it fails on a close.
func (r *connRig) read(tb testing.TB, n int) []string {
	tb.Helper()
	var got []string
	r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		_, data, err := r.client.ReadMessage()
		if err != nil {
			tb.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(data))
	}
	return got
}

// closed reads until the close frame and returns the text frames before
// it and the close code.
func (r *connRig) closed(tb testing.TB) ([]string, int, string) {
	tb.Helper()
	var got []string
	r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := r.client.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); ok {
			return got, ce.Code, ce.Text
		}
		if err != nil {
			tb.Fatalf("after %q: no close frame: %v", got, err)
		}
		got = append(got, string(data))
	}
}

// idle waits until no writer runs and the queues are empty.
func (r *connRig) idle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.c.mu.Lock()
		idle := !r.c.writing && len(r.c.queue)+len(r.c.ctl) == 0 && r.c.queue == nil && r.c.ctl == nil
		r.c.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("the writer did not go idle")
		}
		time.Sleep(time.Millisecond)
	}
}

// gone waits until the connection left the hub.
func (r *connRig) gone(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.srv.hub.count() > 0 {
		if time.Now().After(deadline) {
			tb.Fatal("the connection did not leave the hub")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConnSendsInOrderAndGoesIdle(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	r.c.enqueue([]byte(`"a"`))
	r.c.enqueue([]byte(`"b"`))
	if got := r.read(t, 2); strings.Join(got, ",") != `"a","b"` {
		t.Fatalf("got %q", got)
	}
	r.idle(t) // an idle connection holds no writer and no backing arrays
	r.c.enqueue([]byte(`"c"`))
	if got := r.read(t, 1); got[0] != `"c"` {
		t.Fatalf("after idle: got %q", got)
	}
	r.idle(t)
}

func TestConnControlFramesGoFirst(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	// A writer is busy (as the catch-up is): frames wait.
	r.c.mu.Lock()
	r.c.writing = true
	r.c.mu.Unlock()
	r.c.enqueue([]byte(`"change 1"`))
	r.c.enqueue([]byte(`"change 2"`))
	r.c.enqueueControl([]byte(`"ack 1"`))
	r.c.enqueueControl([]byte(`"ack 2"`))
	select {
	case <-r.c.kick: // the busy writer was told
	default:
		t.Fatal("enqueue with a writer running did not kick it")
	}
	go r.c.flush() // the catch-up becomes the flusher
	want := `"ack 1","ack 2","change 1","change 2"`
	if got := r.read(t, 4); strings.Join(got, ",") != want {
		t.Fatalf("got %q, want %s", got, want)
	}
	r.idle(t)
}

func TestConnSendQueuedControlOnly(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	r.c.mu.Lock()
	r.c.writing = true
	r.c.mu.Unlock()
	r.c.enqueue([]byte(`"change"`))
	r.c.enqueueControl([]byte(`"ack"`))
	if !r.c.sendQueued(true) {
		t.Fatal("sendQueued(true) = false on a healthy connection")
	}
	if got := r.read(t, 1); got[0] != `"ack"` {
		t.Fatalf("got %q", got)
	}
	r.c.mu.Lock()
	left := len(r.c.queue)
	r.c.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d changes left in the queue, want 1 (control only)", left)
	}
	go r.c.flush()
	if got := r.read(t, 1); got[0] != `"change"` {
		t.Fatalf("got %q", got)
	}
}

func TestConnFullQueueDropsTheDevice(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	r.c.mu.Lock()
	r.c.writing = true // nothing drains: the device is too slow
	r.c.mu.Unlock()
	for i := 0; i < sendQueueSize; i++ {
		r.c.enqueue([]byte(`"x"`))
	}
	if r.c.closing() {
		t.Fatalf("dropped at %d frames, the queue holds %d", sendQueueSize, sendQueueSize)
	}
	r.c.enqueue([]byte(`"one too many"`))
	if !r.c.closing() {
		t.Fatal("a full queue did not stop the connection")
	}
	r.c.enqueue([]byte(`"after stop"`)) // ignored
	go r.c.flush()
	frames, code, _ := r.closed(t)
	if code != wire.CloseTryAgainLater || len(frames) != 0 {
		t.Fatalf("close %d after %d frames, want %d and none (a stopped connection sends only its last frame)", code, len(frames), wire.CloseTryAgainLater)
	}
	r.gone(t)
}

func TestConnControlFramesNeverDrop(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	r.c.mu.Lock()
	r.c.writing = true
	r.c.mu.Unlock()
	n := 3 * sendQueueSize
	for i := 0; i < n; i++ {
		r.c.enqueueControl([]byte(`"ack"`))
	}
	if r.c.closing() {
		t.Fatal("acks and rejects made the device count as too slow")
	}
	go r.c.flush()
	if got := r.read(t, n); len(got) != n {
		t.Fatalf("got %d frames, want %d", len(got), n)
	}
	r.idle(t)
}

func TestConnWaitRoom(t *testing.T) {
	t.Run("a device that takes its acks lets the reader go on", func(t *testing.T) {
		r := newConnRig(t, 5*time.Second)
		r.c.mu.Lock()
		r.c.writing = true
		r.c.mu.Unlock()
		for i := 0; i < maxControlFrames; i++ {
			r.c.enqueueControl([]byte(`"ack"`))
		}
		res := make(chan bool, 1)
		go func() { res <- r.c.waitRoom() }()
		select {
		case <-res:
			t.Fatal("waitRoom returned with the control queue full")
		case <-time.After(50 * time.Millisecond):
		}
		go r.c.flush()
		r.read(t, maxControlFrames)
		if !<-res {
			t.Fatal("waitRoom = false after the device took its acks")
		}
	})
	t.Run("a device that takes none is dropped", func(t *testing.T) {
		r := newConnRig(t, 100*time.Millisecond)
		r.c.mu.Lock()
		r.c.writing = true
		r.c.mu.Unlock()
		for i := 0; i < maxControlFrames; i++ {
			r.c.enqueueControl([]byte(`"ack"`))
		}
		if r.c.waitRoom() {
			t.Fatal("waitRoom = true with the control queue full")
		}
		if !r.c.closing() {
			t.Fatal("the stuck device was not stopped")
		}
		go r.c.flush()
		if _, code, _ := r.closed(t); code != wire.CloseTryAgainLater {
			t.Fatalf("close %d, want %d", code, wire.CloseTryAgainLater)
		}
		r.gone(t)
	})
}

func TestConnStop(t *testing.T) {
	t.Run("last frame then close code", func(t *testing.T) {
		r := newConnRig(t, 5*time.Second)
		r.c.stop(wire.CloseRevoked, "device revoked", []byte(`{"type":"wipe"}`))
		frames, code, text := r.closed(t)
		if code != wire.CloseRevoked || text != "device revoked" || strings.Join(frames, ",") != `{"type":"wipe"}` {
			t.Fatalf("got %q then close %d %q", frames, code, text)
		}
		r.gone(t)
	})
	t.Run("resync", func(t *testing.T) {
		r := newConnRig(t, 5*time.Second)
		r.c.resync("the account's role changed")
		frames, code, text := r.closed(t)
		if code != wire.CloseNormalClosure || text != "resync" || len(frames) != 1 || !strings.Contains(frames[0], `"type":"resync"`) {
			t.Fatalf("got %q then close %d %q", frames, code, text)
		}
		if r.c.needBuild {
			t.Fatal("a practice connection's resync requests a device build")
		}
		r.gone(t)
	})
	t.Run("twice: the first wins", func(t *testing.T) {
		r := newConnRig(t, 5*time.Second)
		r.c.stop(wire.CloseTokenGone, "first", nil)
		r.c.stop(wire.CloseRevoked, "second", nil)
		if _, code, text := r.closed(t); code != wire.CloseTokenGone || text != "first" {
			t.Fatalf("close %d %q, want %d first", code, text, wire.CloseTokenGone)
		}
	})
	t.Run("queued frames are not sent after a stop", func(t *testing.T) {
		r := newConnRig(t, 5*time.Second)
		r.c.mu.Lock()
		r.c.writing = true
		r.c.mu.Unlock()
		r.c.enqueue([]byte(`"queued"`))
		r.c.stop(wire.CloseRevoked, "device revoked", nil)
		go r.c.flush()
		if frames, code, _ := r.closed(t); code != wire.CloseRevoked || len(frames) != 0 {
			t.Fatalf("got %q then close %d: a revoked device received a queued frame", frames, code)
		}
	})
}

func TestConnBrokenDeviceLeaves(t *testing.T) {
	r := newConnRig(t, 5*time.Second)
	r.client.UnderlyingConn().Close() // the phone vanished
	deadline := time.Now().Add(5 * time.Second)
	for !r.c.closing() { // the reader sees it; a writer would too
		if time.Now().After(deadline) {
			t.Fatal("a broken connection was not stopped")
		}
		r.c.enqueue([]byte(`"x"`))
		time.Sleep(time.Millisecond)
	}
	r.gone(t)
}
