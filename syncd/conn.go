package syncd

// This file is one live connection: its bounded queues and the writer
// that drains them (see liveConn).

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// Timing and sizes of live connections.
const (
	pongWait      = 60 * time.Second // a device silent that long is gone
	pingPeriod    = 25 * time.Second
	sendQueueSize = 64 // frames waiting for the writer; a full queue drops the connection
	// maxControlFrames bounds the acks and rejects waiting for the writer:
	// past it, the connection reads no further push until the device has
	// taken them (they never make a device count as too slow).
	maxControlFrames = 2 * (wire.MaxMutationsPerPush + 1)
	catchUpBatch     = 500
)

// liveConn is one WebSocket. Its reader goroutine (pushes, pongs) lives as
// long as the connection; frames go out through a bounded queue drained by
// a writer goroutine that exists only while there is something to write:
// first the catch-up, which stays the writer until it joins the feed, then
// one started on demand by enqueue. An idle live connection holds one
// goroutine.
type liveConn struct {
	// Static: set before the connection's goroutines start.
	s          *Server
	ws         *websocket.Conn
	tenant     *store.Tenant
	practice   bool
	viewer     model.Viewer
	accountID  string
	deviceID   string
	tokenHash  []byte        // the device token it authenticated with (devices)
	keyHash    []byte        // the practice key it authenticated with (practice PCs)
	feed       *feed         // the tenant's live stream in this process
	wake       chan struct{} // capacity 1: the feed read changes (catching up)
	kick       chan struct{} // capacity 1: frames were queued (catching up)
	room       chan struct{} // capacity 1: control frames were sent (the reader may go on)
	done       chan struct{} // closed by stop
	readerDone chan struct{} // closed when readLoop returned
	ping       *time.Timer   // queues a ping every pingPeriod

	// startSeq is the tenant's seq when the connection's access was
	// checked: an account change after it that ends access ends the stream.
	// Set by the handshake, then the catch-up; read by the feed and revoke.
	startSeq atomic.Int64

	// Owned by the catch-up (the first writer, until it joins the feed).
	epoch   int64          // the access epoch at its last check of the access (store.Read)
	cursor  int64          // the last seq sent
	history string         // the log's history of cursor: the device's, then the log's once checked
	resume  int64          // for a catch-up from 0 read from the store, the first read's store.Log.Resume
	started bool           // the first catch-up ran its checks
	tracker *model.Tracker // a member's sight at cursor; nil once live

	// Guarded by feed.mu.
	view *view // the view the feed sends to once live

	// Guarded by mu.
	mu      sync.Mutex
	queue   [][]byte // frames to send; a nil frame is a ping
	ctl     [][]byte // acks and rejects to send, before queue
	writing bool     // a goroutine writes: the catch-up or a flusher; it alone calls finish

	// Set once by stop (stopOnce, before done is closed); read by the last
	// writer in finish.
	stopOnce  sync.Once
	closeCode int
	closeText string
	lastFrame []byte // sent before the close frame (the wipe, resync)
	needBuild bool   // resync: request the account's shard build on the way out
}

// closing reports whether the connection was stopped (it may still be
// writing its last frames).
func (c *liveConn) closing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *liveConn) wakeUp() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// stop ends the connection: the writer sends last (if any), then a close
// frame with code, and hangs up.
func (c *liveConn) stop(code int, text string, last []byte) {
	c.end(func() { c.closeCode, c.closeText, c.lastFrame = code, text, last })
}

// resync tells the device to replace its data by a fresh shard and ends
// the stream; on its way out the connection requests the account's build.
func (c *liveConn) resync(reason string) {
	c.end(func() {
		c.closeCode, c.closeText = wire.CloseNormalClosure, "resync"
		c.lastFrame = mustJSON(wire.Resync{Type: wire.TypeResync, Reason: reason + ": download the shard again"})
		c.needBuild = !c.practice
	})
}

// end runs set and closes done, once, and makes sure a writer hangs up.
func (c *liveConn) end(set func()) {
	c.stopOnce.Do(func() {
		set()
		close(c.done)
		c.startWriter()
	})
}

// enqueue hands a frame to the writer, starting one if none runs; a
// device whose queue is full cannot keep up and is dropped (it catches up
// from its cursor later).
func (c *liveConn) enqueue(frame []byte) {
	select {
	case <-c.done:
		return // the last writer hangs up; nothing more is sent
	default:
	}
	c.mu.Lock()
	if len(c.queue) >= sendQueueSize {
		c.mu.Unlock()
		c.s.metrics.sendDrops.Inc()
		c.stop(wire.CloseTryAgainLater, "too slow: reconnect and catch up", nil)
		return
	}
	c.queue = append(c.queue, frame)
	c.startLocked()
}

// enqueueControl hands an ack or a reject to the writer: control frames
// are never a reason to drop a device (DESIGN §7); waitRoom bounds them.
func (c *liveConn) enqueueControl(frame []byte) {
	select {
	case <-c.done:
		return
	default:
	}
	c.mu.Lock()
	c.ctl = append(c.ctl, frame)
	c.startLocked()
}

// waitRoom holds the reader until the device has taken enough of its
// acks and rejects; a device that takes none for LiveWriteTimeout is
// dropped.
func (c *liveConn) waitRoom() bool {
	timer := time.NewTimer(c.s.cfg.LiveWriteTimeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		n := len(c.ctl)
		c.mu.Unlock()
		if n <= maxControlFrames-wire.MaxMutationsPerPush-1 {
			return true
		}
		select {
		case <-c.room: // the device took some: it is not stuck
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(c.s.cfg.LiveWriteTimeout)
		case <-c.done:
			return false
		case <-timer.C:
			c.s.metrics.sendDrops.Inc()
			c.stop(wire.CloseTryAgainLater, "too slow: reconnect and catch up", nil)
			return false
		}
	}
}

// startLocked starts a flusher unless a writer runs, and unlocks c.mu.
func (c *liveConn) startLocked() {
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.flush()
		return
	}
	select {
	case c.kick <- struct{}{}: // the catch-up writes it when done with a batch
	default:
	}
}

// startWriter starts a flusher unless a writer runs.
func (c *liveConn) startWriter() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.writing {
		c.writing = true
		go c.flush()
	}
}

// flush is the writer of a live connection: it sends the queued frames
// and returns when the queue is empty; once done is closed, it hangs up
// and cleans up. Only the goroutine that set writing calls it (or is it:
// the catch-up becomes the flusher when it joins), and only it calls
// finish.
func (c *liveConn) flush() {
	for {
		if c.closing() {
			c.finish()
			return
		}
		c.sendQueued(false)
		c.mu.Lock()
		if len(c.queue)+len(c.ctl) > 0 {
			c.mu.Unlock()
			continue // more came meanwhile
		}
		if c.closing() { // stop saw a writer running: this one finishes
			c.mu.Unlock()
			c.finish()
			return
		}
		c.writing = false
		c.mu.Unlock()
		return
	}
}

// sendQueued writes the queued frames (with controlOnly only the acks and
// rejects) until none waits, on the writing goroutine. A stopped connection
// sends nothing more (its last frame goes with finish); it reports false
// then, and when the connection broke.
func (c *liveConn) sendQueued(controlOnly bool) bool {
	for {
		if c.closing() {
			return false
		}
		c.mu.Lock()
		if len(c.ctl) == 0 && (controlOnly || len(c.queue) == 0) {
			c.mu.Unlock()
			return true
		}
		f := c.popLocked()
		c.mu.Unlock()
		if err := c.writeFrame(f); err != nil {
			c.stop(websocket.CloseAbnormalClosure, "", nil)
			return false
		}
	}
}

// popLocked takes the oldest queued frame, control frames first; the
// queues are not both empty.
func (c *liveConn) popLocked() []byte {
	if len(c.ctl) > 0 {
		f := c.ctl[0]
		c.ctl[0] = nil
		c.ctl = c.ctl[1:]
		if len(c.ctl) == 0 {
			c.ctl = nil
		}
		select {
		case c.room <- struct{}{}:
		default:
		}
		return f
	}
	f := c.queue[0]
	c.queue[0] = nil
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = nil // an idle connection holds no backing array
	}
	return f
}

// queuePing queues a ping and schedules the next one.
func (c *liveConn) queuePing() {
	select {
	case <-c.done:
		return
	default:
	}
	c.enqueue(nil)
	c.ping.Reset(pingPeriod)
}

// finish hangs up and cleans up, on the last writer's goroutine: it waits
// for the reader, leaves the hub and, after a resync, requests the
// account's shard build.
func (c *liveConn) finish() {
	c.ping.Stop()
	c.hangUp()
	c.ws.Close() // ends the reader's ReadMessage
	<-c.readerDone
	c.s.hub.remove(c)
	c.s.metrics.connected.Dec()
	if c.needBuild {
		ctx := context.Background()
		if ids, err := c.tenant.RequestBuilds(ctx, c.accountID); err == nil {
			c.s.enqueueBuilds(ctx, c.tenant.ID(), ids)
		} else {
			c.s.log.Error("request a shard build for a resync", "tenant", c.tenant.ID(), "account", c.accountID, "err", err)
		}
	}
}

// writeFrame sends a queued frame: a ping when frame is nil.
func (c *liveConn) writeFrame(frame []byte) error {
	if frame == nil {
		c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.LiveWriteTimeout))
		return c.ws.WriteMessage(websocket.PingMessage, nil)
	}
	return c.write(frame)
}

func (c *liveConn) write(frame []byte) error {
	c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.LiveWriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return err
	}
	c.s.metrics.framesSent.Inc()
	return nil
}

// hangUp sends the last frame and the close frame, best effort.
func (c *liveConn) hangUp() {
	if c.lastFrame != nil {
		c.write(c.lastFrame)
	}
	code := c.closeCode
	if code == websocket.CloseAbnormalClosure {
		return // the connection is broken: nothing can be sent
	}
	c.ws.SetWriteDeadline(time.Now().Add(time.Second))
	c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, c.closeText))
}
