package syncd

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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
	keyCommitsTopic  = "therasync:commits"
)

// keyCommits is the Redis channel on which every syncd announces the seq a
// tenant reached, so that the others wake their connections.
func keyCommits() string { return keyCommitsTopic }

// commitEvent is the message on keyCommits.
type commitEvent struct {
	Tenant string `json:"tenant"`
	Seq    int64  `json:"seq"`
}

// subscribe follows the commit and revocation channels until ctx ends.
func (s *Server) subscribe(ctx context.Context, ready chan<- error) {
	sub := s.cfg.Redis.Subscribe(ctx, keyCommits(), keyRevocations())
	defer sub.Close()
	_, err := sub.Receive(ctx) // the subscription confirmation
	ready <- err
	if err != nil {
		return
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch msg.Channel {
			case keyCommits():
				var ev commitEvent
				if json.Unmarshal([]byte(msg.Payload), &ev) == nil {
					s.hub.committed(ev.Tenant)
				}
			case keyRevocations():
				var rev Revocation
				if json.Unmarshal([]byte(msg.Payload), &rev) == nil {
					s.revoke(rev)
				}
			}
		}
	}
}

// The WebSocket subprotocols of a browser's live connection.
const (
	subprotocol       = "therasync"
	subprotocolBearer = "bearer."
)

func newUpgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1 << 10, // pushes are rare and small; an idle device holds this buffer
		WriteBufferSize: 16 << 10,
		// Idle connections hold no write buffer: they borrow one per message.
		WriteBufferPool: &sync.Pool{},
		// Credentials travel in a header or a subprotocol, never in a
		// cookie, so another site's page cannot borrow them: any origin
		// may connect.
		CheckOrigin: func(r *http.Request) bool { return true },
		// A browser (the check-in page) offers "therasync" and its token
		// as "bearer.<token>"; the server picks "therasync".
		Subprotocols: []string{subprotocol},
	}
}

// liveConn is one WebSocket. Its reader goroutine (pushes, pongs) lives as
// long as the connection; frames go out through a bounded queue drained by
// a writer goroutine that exists only while there is something to write:
// first the catch-up, which stays the writer until it joins the feed, then
// one started on demand by enqueue. An idle live connection holds one
// goroutine.
type liveConn struct {
	s         *Server
	ws        *websocket.Conn
	tenant    *store.Tenant
	practice  bool
	viewer    model.Viewer
	accountID string
	deviceID  string
	tokenHash []byte // the device token it authenticated with (devices)
	keyHash   []byte // the practice key it authenticated with (practice PCs)
	// startSeq is the tenant's seq when the connection's access was
	// checked: an account change after it that ends access ends the stream.
	startSeq atomic.Int64 // set by the handshake, then the catch-up; read by the feed and revoke
	// epoch is the access epoch at which the catch-up last checked the
	// connection's access (store.Read); owned by the catch-up.
	epoch   int64
	cursor  int64          // catching up: the last seq sent
	started bool           // the first catch-up ran its checks
	tracker *model.Tracker // a member's sight at cursor while catching up; nil once live
	feed    *feed          // the tenant's live stream in this process
	view    *view          // the view the feed sends to once live; guarded by feed.mu

	wake       chan struct{} // capacity 1: the feed read changes (catching up)
	kick       chan struct{} // capacity 1: frames were queued (catching up)
	done       chan struct{} // closed by stop
	readerDone chan struct{} // closed when readLoop returned
	ping       *time.Timer   // queues a ping every pingPeriod

	room chan struct{} // capacity 1: control frames were sent (the reader may go on)

	mu      sync.Mutex
	queue   [][]byte // frames to send; a nil frame is a ping
	ctl     [][]byte // acks and rejects to send, before queue
	writing bool     // a goroutine writes: the catch-up or a flusher

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

// handleDeviceSync serves GET /v1/device/sync?cursor=N. A device revoked
// as lost is told, on its next connection, to delete its data: it gets the
// wipe frame and close 4003 instead of a refusal.
func (s *Server) handleDeviceSync(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, d, err := s.authDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The seq is read before the access: an account change after it that
	// ends the access is seen by the stream.
	start, err := t.Seq(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	acc, err := t.DeviceAccess(ctx, d)
	if errors.Is(err, store.ErrRevoked) && d.RevokedAt != nil && d.Wipe {
		// Told on every connection, but no more often than any device
		// connects: each telling is an audit line.
		if err := s.hub.admit(&liveConn{tenant: t, accountID: d.AccountID, deviceID: d.ID}, s.limits()); err != nil {
			s.fail(w, r, err)
			return
		}
		ws, err := s.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		deadline := time.Now().Add(s.cfg.LiveWriteTimeout)
		ws.SetWriteDeadline(deadline)
		ws.WriteMessage(websocket.TextMessage, mustJSON(wire.Wipe{Type: wire.TypeWipe}))
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseRevoked, "device revoked"), deadline)
		s.audit(ctx, t, store.AuditEntry{Actor: "device", AccountID: d.AccountID, DeviceID: d.ID, Action: "wipe_sent", Addr: clientAddr(r)})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.serveLive(w, r, &liveConn{tenant: t, viewer: model.Viewer{ID: acc.ID, Role: acc.Role}, accountID: acc.ID, deviceID: d.ID,
		tokenHash: d.TokenHash}, start)
}

// handlePracticeSync serves GET /v1/practice/sync?cursor=N: a practice PC
// sees every change of its tenant.
func (s *Server) handlePracticeSync(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings) {
	s.serveLive(w, r, &liveConn{tenant: t, practice: true, viewer: model.Viewer{Role: model.RoleAdmin}, keyHash: st.KeyHash}, 0)
}

// serveLive upgrades the request to c's live connection; start is the
// tenant's seq read before its access was checked.
func (s *Server) serveLive(w http.ResponseWriter, r *http.Request, c *liveConn, start int64) {
	cursor, err := queryInt(r.URL.Query().Get("cursor"), "cursor", 0, 0, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.hub.admit(c, s.limits()); err != nil {
		s.fail(w, r, err)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	c.s, c.ws, c.cursor = s, ws, cursor
	c.startSeq.Store(start)
	c.wake = make(chan struct{}, 1)
	c.kick = make(chan struct{}, 1)
	c.room = make(chan struct{}, 1)
	c.done = make(chan struct{})
	c.readerDone = make(chan struct{})
	c.writing = true // the catch-up
	ws.SetReadLimit(wire.MaxFrameBytes)
	evicted, ok := s.hub.add(c, s.limits())
	if !ok {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		ws.Close()
		return
	}
	for _, o := range evicted {
		o.stop(wire.ClosePolicyViolation, "replaced by a newer connection of this device", nil)
	}
	s.metrics.connected.Inc()
	if !c.practice {
		if err := c.tenant.TouchDevice(r.Context(), c.deviceID); err != nil {
			s.log.Warn("touch device", "tenant", c.tenant.ID(), "device", c.deviceID, "err", err)
		}
		s.audit(r.Context(), c.tenant, store.AuditEntry{Actor: "device", AccountID: c.accountID, DeviceID: c.deviceID, Action: "sync", Detail: "cursor " + strconv.FormatInt(cursor, 10), Addr: clientAddr(r)})
	}
	c.wakeUp()
	c.ping = time.AfterFunc(pingPeriod, c.queuePing)
	go c.readLoop()
	go c.catchUpLoop()
}

// readLoop reads the device's frames until the connection ends.
func (c *liveConn) readLoop() {
	defer close(c.readerDone)
	defer c.stop(wire.CloseNormalClosure, "", nil)
	c.ws.SetReadDeadline(time.Now().Add(pongWait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.stop(wire.CloseMessageTooBig, fmt.Sprintf("a frame has at most %d bytes", wire.MaxFrameBytes), nil)
			}
			return
		}
		c.ws.SetReadDeadline(time.Now().Add(pongWait))
		if !c.waitRoom() {
			return
		}
		if typ != websocket.TextMessage {
			c.enqueueControl(mustJSON(wire.Reject{Type: wire.TypeReject, Error: wire.CodeBadRequest, Message: "frames are JSON text"}))
			continue
		}
		c.handlePush(data)
	}
}

// handlePush applies a push frame: every valid, allowed mutation durably,
// then one ack; a reject for each refused one. The store applies it only
// while the device's token is current and the device may sync, in the
// writing transaction: a push that races a logout or a revocation is
// refused whole, and ends the stream.
func (c *liveConn) handlePush(data []byte) {
	ctx := context.Background() // a push that started is finished, even if the device goes away
	ms, err := decodePush(data)
	if err != nil {
		c.enqueueControl(mustJSON(wire.Reject{Type: wire.TypeReject, Error: wire.CodeBadRequest, Message: err.Error()}))
		return
	}
	if c.practice {
		c.enqueueControl(mustJSON(wire.Reject{Type: wire.TypeReject, Error: wire.CodeBadRequest, Message: "practice PCs push with POST /v1/practice/changes"}))
		return
	}
	b := store.Batch{Origin: "device:" + c.deviceID, Writer: &c.viewer, DeviceID: c.deviceID, TokenHash: c.tokenHash}
	var valid []mutation
	for _, m := range ms {
		if m.Err != nil {
			c.reject(m.ID, m.Err)
			continue
		}
		b.Changes = append(b.Changes, m.Change)
		b.MutationIDs = append(b.MutationIDs, m.ID)
		valid = append(valid, m)
	}
	if len(valid) == 0 {
		return
	}
	res, err := c.tenant.Apply(ctx, b)
	switch {
	case errors.Is(err, store.ErrRoleChanged):
		c.resync("the account's role changed")
		return
	case errors.Is(err, store.ErrUnauthorized), errors.Is(err, store.ErrRevoked):
		code, text := closeCodeOf(err)
		c.stop(code, text, nil)
		c.s.hub.recheck(c.tenant.ID()) // a wipe, if any, goes with the next re-read
		return
	case err != nil:
		c.s.log.Error("device push", "tenant", c.tenant.ID(), "device", c.deviceID, "err", err)
		c.stop(wire.CloseInternalServerErr, "internal error", nil)
		return
	}
	ack := wire.Ack{Type: wire.TypeAck, Seq: res.Seq, MutationIDs: []string{}}
	for i, m := range valid {
		if err := res.Refused[i]; err != nil {
			c.reject(m.ID, err)
			// Gathered per account and window, like failed logins: a device
			// sending refused writes buys no row per mutation.
			c.s.audits.add(c.tenant.ID(), store.AuditEntry{Actor: "device", AccountID: c.accountID, DeviceID: c.deviceID, Action: "write_rejected", Detail: m.Change.Entity + " " + errorCode(err)})
			continue
		}
		ack.MutationIDs = append(ack.MutationIDs, m.ID)
	}
	if len(ack.MutationIDs) > 0 {
		c.s.metrics.acks.Add(float64(len(ack.MutationIDs)))
		c.enqueueControl(mustJSON(ack))
	}
	c.s.metrics.changesApplied.Add(float64(len(res.Changes)))
	c.s.applied(ctx, c.tenant, res)
}

func (c *liveConn) reject(id string, err error) {
	_, code, msg, _ := classify(err)
	c.s.metrics.rejects.Inc()
	c.enqueueControl(mustJSON(wire.Reject{Type: wire.TypeReject, MutationID: id, Error: code, Message: msg}))
}

// catchUpLoop is a connection's first writer: it catches up from the
// cursor whenever the feed reads changes, sends the frames queued
// meanwhile, and once it joins the feed at the head it becomes a flusher
// (and returns when nothing is left to write).
func (c *liveConn) catchUpLoop() {
	c.feed.wait(c)
	for {
		// A stopped connection sends nothing more but its last frame: with
		// done and another case ready, select could pick the other, and a
		// catch-up after a resync decision would announce seqs the device
		// must not skip.
		select {
		case <-c.done:
			c.finish()
			return
		default:
		}
		select {
		case <-c.done:
			c.finish()
			return
		case <-c.wake:
			joined, err := c.catchUp()
			if err != nil {
				c.stop(wire.CloseInternalServerErr, "internal error", nil)
				c.s.log.Error("sync stream", "tenant", c.tenant.ID(), "err", err)
			}
			if joined {
				c.tracker = nil
				c.flush()
				return
			}
		case <-c.kick:
			c.sendQueued(false)
		}
	}
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

// catchUp sends every change after the cursor that the viewer sees, in
// batches, until the cursor reaches the feed's head; then the connection
// joins the feed (which sends caught_up) and reports joined.
func (c *liveConn) catchUp() (joined bool, err error) {
	ctx := context.Background()
	if !c.started {
		c.started = true
		// The access again, now that the connection is registered: what
		// ended it since the handshake's check and before the registration
		// reached no revocation event.
		if ok, err := c.checkOwnAccess(ctx, true); err != nil || !ok {
			return false, err
		}
		latest, err := c.tenant.Seq(ctx)
		if err != nil {
			return false, err
		}
		if c.cursor > latest {
			c.resync(fmt.Sprintf("cursor %d is ahead of the server's seq %d", c.cursor, latest))
			return false, nil
		}
		if !c.practice && c.cursor > 0 {
			// The device's data is what its role saw at the cursor: another
			// role needs another shard.
			role, err := c.tenant.RoleAt(ctx, c.accountID, c.cursor)
			if err != nil {
				return false, err
			}
			if role != c.viewer.Role {
				c.resync("the account's role changed")
				return false, nil
			}
		}
	}
	for {
		if c.feed.join(c) {
			return true, nil
		}
		// From the feed's memory, whose reader checked every connection's
		// access before keeping changes of a newer access epoch; or from the
		// store, then checking it here.
		cs, _, ok := c.feed.since(c.cursor, catchUpBatch)
		if !ok {
			r, err := c.tenant.Read(ctx, c.cursor, catchUpBatch)
			if err != nil {
				return false, err
			}
			if r.AccessEpoch != c.epoch {
				if ok, err := c.checkOwnAccess(ctx, false); err != nil || !ok {
					return false, err
				}
				c.epoch = r.AccessEpoch
			}
			cs = r.Changes
		}
		if len(cs) == 0 {
			return false, nil // the feed has not read that far: wait for its wake-up
		}
		if c.viewer.Role == model.RoleMember && !c.practice && c.tracker == nil {
			if c.tracker, err = loadTracker(ctx, c.tenant, c.accountID, c.cursor); err != nil {
				return false, err
			}
		}
		out := make([]model.Change, 0, len(cs))
		for _, ch := range cs {
			var (
				vs  []model.Change
				err error
			)
			switch {
			case !c.practice && ch.ID == c.accountID && ch.Seq > c.startSeq.Load() && endsAccess(ch):
				c.s.metrics.revocationCloses.Inc()
				c.stop(wire.CloseRevoked, "device revoked", nil)
				return false, nil
			case !c.practice && ch.Entity == model.Accounts && ch.ID == c.accountID && ch.Fields["role"] != nil && ch.Fields["role"] != c.viewer.Role:
				err = &errResync{reason: "the account's role changed"}
			case c.tracker != nil:
				vs, err = memberStep(ctx, c.tenant, c.tracker, c.accountID, ch)
			default:
				vs, err = c.visible(ctx, ch)
			}
			var rs *errResync
			if errors.As(err, &rs) {
				c.resync(rs.reason)
				return false, nil
			}
			if err != nil {
				return false, err
			}
			out = append(out, vs...)
		}
		c.cursor = cs[len(cs)-1].Seq
		select {
		case <-c.done:
			return false, nil // stopped meanwhile (a revocation): nothing more goes out
		default:
		}
		if len(out) > 0 {
			if err := c.write(mustJSON(wire.Changes{Type: wire.TypeChanges, Changes: out})); err != nil {
				c.stop(websocket.CloseAbnormalClosure, "", nil)
				return false, nil
			}
			c.s.metrics.changesSent.Add(float64(len(out)))
		}
		// Acks and rejects go out between batches: a long catch-up does
		// not hold them back.
		if !c.sendQueued(true) {
			return false, nil
		}
		select {
		case <-c.done:
			return false, nil
		default:
		}
	}
}

// checkOwnAccess reads the connection's access from the store and ends
// the connection when it is gone (4001, 4003 with the wipe frame for a
// wiped device, resync for another role); it reports whether the
// connection goes on. first also fixes the seq and access epoch from which
// the stream itself watches for the end of the access.
func (c *liveConn) checkOwnAccess(ctx context.Context, first bool) (bool, error) {
	seq, epoch := c.startSeq.Load(), c.epoch
	if first {
		var err error
		if seq, err = c.tenant.Seq(ctx); err != nil {
			return false, err
		}
		if epoch, err = c.tenant.AccessEpoch(ctx); err != nil {
			return false, err
		}
	}
	if c.practice {
		st, err := c.tenant.Settings(ctx)
		if err != nil {
			return false, err
		}
		if subtle.ConstantTimeCompare(c.keyHash, st.KeyHash) != 1 {
			c.stop(wire.CloseTokenGone, "the practice key was replaced", nil)
			return false, nil
		}
		c.epoch = epoch
		return true, nil
	}
	d, acc, err := c.tenant.CheckDevice(ctx, c.deviceID, c.tokenHash)
	switch {
	case errors.Is(err, store.ErrUnauthorized):
		c.stop(wire.CloseTokenGone, "the device's token is no longer valid", nil)
		return false, nil
	case errors.Is(err, store.ErrRevoked):
		c.s.metrics.revocationCloses.Inc()
		var last []byte
		if d.RevokedAt != nil && d.Wipe {
			last = mustJSON(wire.Wipe{Type: wire.TypeWipe})
		}
		c.stop(wire.CloseRevoked, "device revoked", last)
		return false, nil
	case err != nil:
		return false, err
	case acc.Role != c.viewer.Role:
		c.resync("the account's role changed")
		return false, nil
	}
	c.startSeq.Store(seq)
	c.epoch = epoch
	return true, nil
}

// visible returns what a connection that is not a member's receives of ch:
// the change as its viewer may see it, or nothing when the viewer may see
// none of what it changed in an existing row (see emptied).
func (c *liveConn) visible(ctx context.Context, ch model.Change) ([]model.Change, error) {
	pc := project(c.practice, c.viewer.Role, ch)
	if emptied(ch, pc) {
		if existed, err := c.tenant.ExistedBefore(ctx, ch.Entity, ch.ID, ch.Seq); err != nil || existed {
			return nil, err
		}
	}
	return []model.Change{pc}, nil
}

// closeLive ends every live connection with 1001 and waits, until ctx is
// done, for their goroutines.
func (s *Server) closeLive(ctx context.Context) error {
	s.hub.mu.Lock()
	s.hub.closed = true
	s.hub.mu.Unlock()
	s.hub.each("", func(c *liveConn) { c.stop(wire.CloseGoingAway, "server shutting down", nil) })
	done := make(chan struct{})
	go func() {
		s.hub.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close live connections: %w", ctx.Err())
	}
}
