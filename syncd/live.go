package syncd

// This file opens live connections: the upgrade of /v1/device/sync and
// /v1/practice/sync after authentication and the access check.

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

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

// handleDeviceSync serves GET /v1/device/sync?cursor=N&history=H. A
// cursor of another history, or below the log's compacted_to, gets resync
// (the catch-up decides, see firstChecks). A device revoked
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

// handlePracticeSync serves GET /v1/practice/sync?cursor=N&history=H: a
// practice PC sees every change of its tenant.
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
	c.s, c.ws, c.cursor, c.history = s, ws, cursor, r.URL.Query().Get("history")
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
