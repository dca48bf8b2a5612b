package syncd

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// This file ends live connections whose access ended (DESIGN §5), by every
// way it can end: a change of the account in the change log (every
// process's feed sees it in seq order), an event on Redis (revocations,
// logouts, newer logins, key rotations, licenses) and, as the safety net
// for a lost event, each feed's periodic re-read of the tenant's access.

// Revocation is the event published on Redis when access ends, so that
// every syncd process closes the affected live connections at once.
type Revocation struct {
	Tenant string `json:"tenant"`
	// AccountID names the account whose devices lost access; "" (with no
	// DeviceID) means every device of the tenant (a license withdrawn).
	AccountID string `json:"account_id,omitempty"`
	// DeviceID names the one device concerned; "" means every device of
	// the account.
	DeviceID string `json:"device_id,omitempty"`
	// Wipe tells a device revoked as lost to delete its data.
	Wipe bool `json:"wipe,omitempty"`
	// TokenEnded means the device's token ended (a logout, or a newer
	// login that replaced it): its sockets close with 4001 unless they hold
	// the token whose fingerprint is Current ("" after a logout).
	TokenEnded bool   `json:"token_ended,omitempty"`
	Current    string `json:"current,omitempty"`
	// Practice means the practice key was replaced: practice sockets of
	// another key than Current close with 4001.
	Practice bool `json:"practice,omitempty"`
	// Seq, for an account's access ended by a change, is that change's
	// batch seq: a socket whose access was checked at or after it (the
	// account was enabled again meanwhile) stays open.
	Seq int64 `json:"seq,omitempty"`
}

// fingerprint names a token (or key) by its hash without revealing the
// hash: what a Revocation carries.
func fingerprint(hash []byte) string {
	if hash == nil {
		return ""
	}
	sum := sha256.Sum256(append([]byte("therasync token fingerprint\x00"), hash...))
	return hex.EncodeToString(sum[:12])
}

// keyHash returns the hash the store keeps of a practice key or device
// token ("<tenant>.<secret>"): the SHA-256 of its secret.
func keyHash(cred string) []byte {
	_, secret, _ := strings.Cut(cred, ".")
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// revocations are the revocations a batch's result calls for.
func revocations(tenant string, res store.Result) []Revocation {
	var out []Revocation
	for _, ac := range res.AccessChanges {
		if !ac.Enabled {
			out = append(out, Revocation{Tenant: tenant, AccountID: ac.AccountID, Seq: res.Seq})
		}
	}
	return out
}

// applied does what a committed batch calls for, whoever wrote it (a
// practice push or a device's): after an erasure the removal of every
// shard file of an older history, shard builds, closing the sockets of
// accounts whose access it ended (here at once, elsewhere through Redis)
// and waking the live streams. The audit lines of access changes were
// written in the batch's transaction.
func (s *Server) applied(ctx context.Context, t *store.Tenant, res store.Result) {
	if res.Repeated {
		return
	}
	if res.History != "" {
		s.removeStaleShards(t, res.History)
	}
	s.enqueueBuilds(ctx, t.ID(), res.BuildRequests)
	for _, rev := range revocations(t.ID(), res) {
		s.revoke(rev)
	}
	if len(res.Changes) > 0 || res.History != "" {
		s.hub.committed(t.ID())
	}
	if err := s.events.Applied(ctx, t.ID(), res); err != nil {
		s.log.Warn("publish a batch's events; other syncd processes act on their next read", "tenant", t.ID(), "err", err)
	}
}

// publishRevocation closes the affected live connections of this process
// and tells the others. The store already refuses the devices; a failed
// publish only delays the closing elsewhere until the next re-read of
// the access.
func (s *Server) publishRevocation(ctx context.Context, rev Revocation) {
	s.revoke(rev)
	if err := s.events.Revoked(ctx, rev); err != nil {
		s.log.Error("publish revocation", "tenant", rev.Tenant, "account", rev.AccountID, "err", err)
	}
}

// revoke closes this process's live connections that a revocation
// affects, and has their feed re-read the tenant's access.
func (s *Server) revoke(rev Revocation) {
	s.hub.each(rev.Tenant, func(c *liveConn) {
		switch {
		case rev.Practice:
			if c.practice && fingerprint(c.keyHash) != rev.Current {
				c.stop(wire.CloseTokenGone, "the practice key was replaced", nil)
			}
			return
		case c.practice:
			return
		case rev.AccountID != "" && c.accountID != rev.AccountID,
			rev.DeviceID != "" && c.deviceID != rev.DeviceID,
			rev.Seq > 0 && c.startSeq.Load() >= rev.Seq:
			return
		case rev.TokenEnded:
			if fingerprint(c.tokenHash) != rev.Current {
				c.stop(wire.CloseTokenGone, "the device's token is no longer valid", nil)
			}
			return
		}
		s.metrics.revocationCloses.Inc()
		if rev.Wipe {
			c.stop(wire.CloseRevoked, "device revoked", mustJSON(wire.Wipe{Type: wire.TypeWipe}))
			return
		}
		c.stop(wire.CloseRevoked, "device revoked", nil)
	})
	s.hub.recheck(rev.Tenant)
}

// checkAccess ends the connections whose access the tenant's current
// state no longer grants: the one rule of store.Access, as at connect and
// on every push.
func checkAccess(a *store.Access, conns []*liveConn) {
	for _, c := range conns {
		if c.practice {
			if subtle.ConstantTimeCompare(c.keyHash, a.Settings.KeyHash) != 1 {
				c.stop(wire.CloseTokenGone, "the practice key was replaced", nil)
			}
			continue
		}
		d, acc, err := a.Device(c.deviceID, c.tokenHash)
		switch {
		case errors.Is(err, store.ErrUnauthorized):
			c.stop(wire.CloseTokenGone, "the device's token is no longer valid", nil)
		case errors.Is(err, store.ErrRevoked) && d.RevokedAt != nil && d.Wipe:
			c.s.metrics.revocationCloses.Inc()
			c.stop(wire.CloseRevoked, "device revoked", mustJSON(wire.Wipe{Type: wire.TypeWipe}))
		case err != nil:
			c.s.metrics.revocationCloses.Inc()
			c.stop(wire.CloseRevoked, "device revoked", nil)
		case acc.Role != c.viewer.Role:
			c.resync("the account's role changed")
		}
	}
}

// closeCodeOf returns the close code and text of an error that ends a
// device's stream: a push refused by the store's check.
func closeCodeOf(err error) (int, string) {
	switch {
	case errors.Is(err, store.ErrUnauthorized):
		return wire.CloseTokenGone, "the device's token is no longer valid"
	case errors.Is(err, store.ErrRevoked):
		return wire.CloseRevoked, "device revoked"
	}
	return wire.CloseInternalServerErr, "internal error"
}
