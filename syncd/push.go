package syncd

// This file is a device's writes over its live connection: the reader
// loop and the push it applies.

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

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

// reject sends the reject of mutation id. The model's and the store's
// errors name a change by its index in the batch the store applied (the
// push's valid mutations only), which the device never sent: the reject
// names the device's mutation id instead (DESIGN §7).
func (c *liveConn) reject(id string, err error) {
	_, code, msg, _ := classify(err)
	c.s.metrics.rejects.Inc()
	c.enqueueControl(mustJSON(wire.Reject{Type: wire.TypeReject, MutationID: id, Error: code, Message: rejectMessage(id, msg)}))
}

// batchIndex is how the model's errors name a change of a batch.
var batchIndex = regexp.MustCompile(`^changes\[\d+\]`)

// rejectMessage is msg naming mutation id where it named a batch index.
func rejectMessage(id, msg string) string {
	return batchIndex.ReplaceAllLiteralString(msg, "mutation "+id)
}
