package syncd

// This file is a connection's catch-up from its cursor to the feed's
// head, and the access checks it makes on the way.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

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

// catchUp sends every change after the cursor that the viewer sees, in
// batches, until the cursor reaches the feed's head; then the connection
// joins the feed (which sends caught_up) and reports joined.
func (c *liveConn) catchUp() (joined bool, err error) {
	ctx := context.Background()
	if !c.started {
		c.started = true
		if ok, err := c.firstChecks(ctx); err != nil || !ok {
			return false, err
		}
	}
	for {
		if c.feed.join(c) {
			return true, nil
		}
		cs, ok, err := c.nextBatch(ctx)
		if err != nil || !ok || len(cs) == 0 {
			return false, err // an empty batch: the feed has not read that far, wait for its wake-up
		}
		out, ok, err := c.seeBatch(ctx, cs)
		if err != nil || !ok {
			return false, err
		}
		c.cursor = cs[len(cs)-1].Seq
		if !c.sendBatch(out) {
			return false, nil
		}
	}
}

// firstChecks runs once, before the first batch: the access again, now
// that the connection is registered (what ended it since the handshake's
// check and before the registration reached no revocation event), a
// cursor of another history, below the compaction horizon or ahead of the
// log, and a member's role at its cursor. It reports
// whether the connection goes on.
func (c *liveConn) firstChecks(ctx context.Context) (bool, error) {
	if ok, err := c.checkOwnAccess(ctx, true); err != nil || !ok {
		return false, err
	}
	log, err := c.tenant.Log(ctx)
	if err != nil {
		return false, err
	}
	if c.history == "" {
		c.history = log.History // a client that does not know its history
	}
	if !c.continues(log) {
		return false, nil
	}
	if c.cursor > log.Seq {
		c.resync(fmt.Sprintf("cursor %d is ahead of the server's seq %d", c.cursor, log.Seq))
		return false, nil
	}
	if !c.practice && c.cursor > 0 {
		// The device's data is what its role saw at the cursor: another
		// role needs another shard.
		role, err := c.tenant.RoleAt(ctx, c.accountID, c.cursor)
		if errors.Is(err, store.ErrCompacted) { // compacted since the log was read
			c.resync(fmt.Sprintf("changes after cursor %d were compacted away", c.cursor))
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if role != c.viewer.Role {
			c.resync("the account's role changed")
			return false, nil
		}
	}
	return true, nil
}

// nextBatch returns the changes after the cursor: from the feed's memory,
// whose reader checked every connection's access before keeping changes
// of a newer access epoch; or from the store, then checking the access
// here. It reports false when the connection was stopped.
func (c *liveConn) nextBatch(ctx context.Context) ([]model.Change, bool, error) {
	// Below the horizon of the folded log it pages through from 0, a
	// catch-up reads only that log: the feed's memory may hold the
	// changes as they were before they were folded.
	if c.cursor >= c.resume {
		cs, log, ok, err := c.fromMemory(ctx)
		if err != nil {
			return nil, false, err
		}
		if ok {
			return cs, c.continues(log), nil
		}
	}
	r, err := c.tenant.Read(ctx, c.cursor, catchUpBatch)
	if err != nil {
		return nil, false, err
	}
	if c.cursor == 0 {
		// From 0, the catch-up may page on below compacted_to through the
		// log as this read found it folded (see store.Log.ContinuesFrom).
		c.resume = r.Log().Resume()
	}
	if !c.continues(r.Log()) {
		return nil, false, nil
	}
	if r.AccessEpoch != c.epoch {
		if ok, err := c.checkOwnAccess(ctx, false); err != nil || !ok {
			return nil, false, err
		}
		c.epoch = r.AccessEpoch
	}
	return r.Changes, true, nil
}

// fromMemory returns the changes after the cursor from the feed's memory,
// and where the log stands; ok is false when the memory cannot serve them:
// the feed is behind the cursor's history, or the store's log is of
// another history than what the feed read (an erasure committed that the
// feed has not read yet: its memory still holds the erased values), then
// read the store.
func (c *liveConn) fromMemory(ctx context.Context) ([]model.Change, store.Log, bool, error) {
	cs, head, ok := c.feed.since(c.cursor, c.history, catchUpBatch)
	if !ok {
		return nil, store.Log{}, false, nil
	}
	log, err := c.tenant.Log(ctx)
	if err != nil {
		return nil, store.Log{}, false, err
	}
	if log.History != head.History {
		return nil, store.Log{}, false, nil
	}
	return cs, log, true, nil
}

// continues resyncs the connection when the log it catches up from is no
// longer a continuation of its cursor: rewritten meanwhile (an erasure: a
// member's sight at the cursor cannot be read from a rewritten log) or
// compacted past it. It reports whether the catch-up goes on.
func (c *liveConn) continues(log store.Log) bool {
	switch {
	case log.History != c.history:
		c.resync("the server's change log was rewritten (a restore or an erasure)")
		return false
	case !log.ContinuesFrom(c.cursor, "", c.resume):
		c.resync(fmt.Sprintf("changes after cursor %d were compacted away (compacted to %d)", c.cursor, log.CompactedTo))
		return false
	}
	return true
}

// seeBatch returns what the viewer receives of cs. It stops the
// connection when a change ends its access or needs a resync, and reports
// false then.
func (c *liveConn) seeBatch(ctx context.Context, cs []model.Change) ([]model.Change, bool, error) {
	if c.viewer.Role == model.RoleMember && !c.practice && c.tracker == nil {
		var err error
		c.tracker, err = loadTracker(ctx, c.tenant, c.accountID, c.cursor)
		if errors.Is(err, store.ErrCompacted) { // compacted since cs were read
			c.resync(fmt.Sprintf("changes after cursor %d were compacted away", c.cursor))
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
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
			return nil, false, nil
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
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, vs...)
	}
	return out, true, nil
}

// sendBatch writes one catch-up frame (none for nothing) and then the
// acks and rejects waiting, so a long catch-up does not hold them back. It
// reports false when the connection was stopped or broke.
func (c *liveConn) sendBatch(out []model.Change) bool {
	select {
	case <-c.done:
		return false // stopped meanwhile (a revocation): nothing more goes out
	default:
	}
	if len(out) > 0 {
		if err := c.write(mustJSON(wire.Changes{Type: wire.TypeChanges, Changes: out})); err != nil {
			c.stop(websocket.CloseAbnormalClosure, "", nil)
			return false
		}
		c.s.metrics.changesSent.Add(float64(len(out)))
	}
	if !c.sendQueued(true) {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
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
