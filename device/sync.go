package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/wire"
)

// This file runs the live session loop: it connects, pushes the pending
// writes, follows the server's frames, reconnects with backoff, and records
// what a refused or closed connection says about the device.

// SyncOptions tune the sync loop.
type SyncOptions struct {
	// RevokedRetry is how often a revoked device tries again; zero means 5
	// minutes.
	RevokedRetry time.Duration
	// MaxBackoff caps the wait between reconnects; zero means 30s.
	MaxBackoff time.Duration
	// UntilIdle returns once the device is caught up and its outbox holds
	// no unacknowledged write (for one-shot syncs), instead of following
	// live changes until ctx ends.
	UntilIdle bool
	// Report, when set, is told what happens as it happens (connected,
	// changes applied, caught up, writes acknowledged or refused, resync,
	// read-only); it is called from Sync's goroutine and must not block.
	Report func(Event)
}

// Sync keeps the device in sync: it connects, catches up, sends pending
// writes, follows live changes, reconnects with backoff and jitter, handles
// resync, revocation (read-only, rare retries, resumes when re-enabled) and
// wipe. It returns when ctx ends (nil), when the device is wiped or logged
// out, or, with UntilIdle, once idle. A pending logout is sent first.
func (c *Client) Sync(ctx context.Context, opts SyncOptions) error {
	c.FinishLogout(ctx) // one the server still cannot hear of stays pending
	switch c.State().State {
	case StateLoggedOut:
		return ErrNotLoggedIn
	case StateWiped:
		return ErrWiped
	}
	if opts.RevokedRetry <= 0 {
		opts.RevokedRetry = 5 * time.Minute
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	backoff := 100 * time.Millisecond
	for {
		idle, err := c.session(ctx, opts)
		st := c.State()
		switch {
		case ctx.Err() != nil:
			return nil
		case st.State == StateWiped:
			return ErrWiped
		case st.State == StateLoggedOut:
			return ErrNotLoggedIn
		case idle && opts.UntilIdle:
			return nil
		case err == nil:
			backoff = 100 * time.Millisecond
		}
		wait := backoff
		if st.State == StateRevoked {
			wait = opts.RevokedRetry
			if opts.UntilIdle {
				return ErrReadOnly
			}
			opts.report("read_only", "the practice withdrew this device's access: local data kept, read-only; trying again in about %s", wait.Round(time.Second))
		} else {
			if err != nil {
				opts.report("disconnected", "disconnected (%v); reconnecting", err)
			}
			backoff = min(backoff*2, opts.MaxBackoff)
		}
		jitter := time.Duration(mathrand.Int64N(int64(wait/2) + 1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait/2 + jitter):
		}
	}
}

// session runs one connection; it reports whether it ended idle.
func (c *Client) session(ctx context.Context, opts SyncOptions) (idle bool, err error) {
	untilIdle := opts.UntilIdle
	ws, st, err := c.dial(ctx)
	if err != nil {
		return false, err
	}
	defer ws.Close()
	c.setState(StateActive)
	opts.report("connected", "connected to %s", st.Server)
	frames := make(chan any) // see decodeFrame
	readErr := make(chan error, 1)
	go readFrames(ws, frames, readErr)
	defer func() {
		ws.Close()
		for range frames { // let the reader end
		}
	}()
	if err := c.sendPending(ctx, ws); err != nil {
		return false, err
	}
	caughtUp := false
	for {
		select {
		case <-ctx.Done():
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return false, nil
		case f, ok := <-frames:
			if !ok {
				return false, c.onClosed(<-readErr, st.Token)
			}
			if err := c.handleFrame(ctx, f); err != nil {
				return false, err
			}
			opts.reportFrame(f)
			switch f.(type) {
			case *wire.CaughtUp:
				caughtUp = true
			case *wire.Resync:
				if err := c.downloadShard(ctx, ""); err != nil {
					return false, err
				}
				return false, nil // reconnect from the new shard's seq
			case *wire.Wipe:
				return false, nil
			}
			if untilIdle && caughtUp {
				if idle, err = c.outboxIdle(ctx); err != nil || idle {
					return idle, err
				}
			}
		}
	}
}

// dial connects to the sync endpoint from the local cursor and the history
// it belongs to (none when unknown: the server then takes the cursor as
// is); it returns the state it connected with. A refused connection is an
// *APIError, recorded by onRefused.
func (c *Client) dial(ctx context.Context) (*websocket.Conn, State, error) {
	c.mu.Lock()
	cursor, err := c.cursorLocked()
	var history string
	if err == nil {
		history, err = c.historyLocked()
	}
	st := c.st
	c.mu.Unlock()
	if err != nil {
		return nil, State{}, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+st.Token)
	q := url.Values{"cursor": {strconv.FormatInt(cursor, 10)}}
	if history != "" {
		q.Set("history", history)
	}
	u := "ws" + strings.TrimPrefix(st.Server, "http") + "/v1/device/sync?" + q.Encode()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			aerr := apiError(resp)
			c.onRefused(aerr)
			return nil, st, aerr
		}
		return nil, st, err
	}
	return ws, st, nil
}

// readFrames sends ws's frames (see decodeFrame) on frames until a read or
// a decode fails; then it sends the error on readErr and closes frames.
func readFrames(ws *websocket.Conn, frames chan<- any, readErr chan<- error) {
	for {
		var f any
		_, b, err := ws.ReadMessage()
		if err == nil {
			f, err = decodeFrame(b)
		}
		if err != nil {
			readErr <- err
			close(frames)
			return
		}
		frames <- f
	}
}

// outboxIdle reports whether the outbox holds no write the server has yet
// to answer (only rejected ones, if any).
func (c *Client) outboxIdle(ctx context.Context) (bool, error) {
	ps, err := c.Outbox(ctx)
	if err != nil {
		return false, err
	}
	waiting := false
	for _, p := range ps {
		waiting = waiting || !p.Rejected
	}
	return !waiting, nil
}

// onRefused records what a refused connection says about the device.
func (c *Client) onRefused(err error) {
	switch {
	case IsCode(err, wire.CodeDeviceRevoked):
		c.setState(StateRevoked)
	case IsCode(err, wire.CodeUnauthorized):
		c.setState(StateLoggedOut)
	}
}

// onClosed records what the server's close of the connection says about
// the device connected with token, and returns the read error err.
func (c *Client) onClosed(err error, token string) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case wire.CloseRevoked:
			c.setState(StateRevoked)
		case wire.CloseTokenGone: // the token ended: logged out elsewhere or replaced
			c.tokenEnded(token)
		}
	}
	return err
}

// tokenEnded records that the server ended token (close 4001), unless
// the device logged in anew meanwhile.
func (c *Client) tokenEnded(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Token == token && c.st.State != StateWiped {
		c.st.State = StateLoggedOut
		c.saveLocked()
	}
}

// setState records the device state s, unless the device is wiped or
// logged out (only a login makes it active again).
func (c *Client) setState(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.State != s && c.st.State != StateWiped && c.st.State != StateLoggedOut {
		c.st.State = s
		c.saveLocked()
	}
}

// sendPending pushes every pending write, with its mutation id.
func (c *Client) sendPending(ctx context.Context, ws *websocket.Conn) error {
	ps, err := c.Outbox(ctx)
	if err != nil {
		return err
	}
	var ms []wire.Mutation
	for _, p := range ps {
		if p.Rejected {
			continue
		}
		_, raw, err := encodeFields(p.Fields)
		if err != nil {
			return fmt.Errorf("push %s: %w", p.ID, err)
		}
		ms = append(ms, wire.Mutation{ID: p.ID, Entity: p.Entity, Op: p.Op, RowID: p.RowID, Fields: raw})
	}
	for len(ms) > 0 {
		n := min(len(ms), wire.MaxMutationsPerPush)
		b, err := json.Marshal(wire.Push{Type: wire.TypePush, Mutations: ms[:n]})
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			return err
		}
		ms = ms[n:]
	}
	return nil
}
