package worker

// This file is the seed product's "App aktivieren": once an account whose
// app access started has its shard, its access-code mail goes out by
// itself (DESIGN §5), once per activation.

import (
	"context"
	"errors"
	"fmt"

	"github.com/therasync/therasync/authcode"
	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// activate sends the account's access code if its activation is pending
// and every precondition holds now. It runs after each build of the
// account's shard and, for every pending activation, on each tick, so a
// precondition that holds later (a license added, the resend interval
// over, a mail that could not be queued) sends the mail then. It never
// fails a build: what went wrong is logged, and the activation stays
// pending for the next tick.
func (s *Server) activate(ctx context.Context, t *store.Tenant, accountID string) {
	if s.cfg.Codes == nil || s.queue == nil {
		return
	}
	a, pending, err := t.PendingActivation(ctx, accountID)
	if err == nil && pending {
		err = s.sendActivation(ctx, t, a)
	}
	if err != nil {
		logActivation(s, t, accountID, err)
	}
}

// sendActivation sends pending activation a's mail; it returns nil when
// there is nothing to send yet.
func (s *Server) sendActivation(ctx context.Context, t *store.Tenant, a store.Activation) error {
	// Read now, not when the build started: the account may have changed.
	acc, err := t.Account(ctx, a.AccountID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := t.Settings(ctx)
	if err != nil {
		return err
	}
	if model.MissingAppLicense(st.Licenses) != "" || !model.AppAccessOn(acc.AppEnabled, acc.Role) || !model.ValidEmail(acc.Email) {
		return nil // GET …/access-code says which
	}
	if sh, err := t.LatestShard(ctx, acc.ID); errors.Is(err, store.ErrNotFound) || (err == nil && sh.Role != acc.Role) {
		return nil // the build that follows sends it
	} else if err != nil {
		return err
	}
	code, expires, err := s.cfg.Codes.Issue(ctx, t.ID(), acc.ID, acc.Email)
	var tooSoon *authcode.TooSoonError
	if errors.As(err, &tooSoon) {
		// A code went out within the resend interval: by the practice
		// (which ends the activation itself), for an earlier activation, or
		// by an attempt whose mail could not be queued. This activation
		// gets its own code once the interval is over.
		return nil
	}
	if err != nil {
		return fmt.Errorf("activation code: %w", err)
	}
	// Recorded before the mail is queued, so the mail's delivery (keyed by
	// the code's expiry) always finds its record.
	if err := t.RecordCodeSent(ctx, acc.ID, expires.Add(-s.cfg.Codes.TTL()), expires); err != nil {
		return err
	}
	if err := s.queue.SendCode(ctx, t.ID(), acc.ID, code, expires); err != nil {
		if rerr := t.RecordCodeDelivery(ctx, acc.ID, expires, s.cfg.Now(), "the mail could not be queued; it is sent again shortly"); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("activation mail: %w", err)
	}
	if err := t.ActivationSent(ctx, a); err != nil {
		// The mail is queued; a second attempt sends a second code after
		// the interval, which is the lesser harm than none.
		return err
	}
	s.log.Info("activation code sent", "tenant", t.ID(), "account", acc.ID)
	if err := t.Audit(ctx, store.AuditEntry{Actor: "activation", AccountID: acc.ID, Action: "code_sent"}); err != nil {
		s.log.Error("activation code sent but not audited", "tenant", t.ID(), "account", acc.ID, "err", err)
	}
	return nil
}

// activatePending tries each of the tenant's pending activations (the
// tick's part); like activate, it logs what went wrong and goes on.
func (s *Server) activatePending(ctx context.Context, t *store.Tenant) error {
	if s.cfg.Codes == nil || s.queue == nil {
		return nil
	}
	pend, err := t.PendingActivations(ctx)
	if err != nil {
		return err
	}
	for _, a := range pend {
		if err := s.sendActivation(ctx, t, a); err != nil {
			logActivation(s, t, a.AccountID, err)
		}
	}
	return nil
}

// logActivation logs an activation whose mail could not go out yet.
func logActivation(s *Server, t *store.Tenant, account string, err error) {
	s.log.Warn("activation mail not sent yet; retried on the next tick", "tenant", t.ID(), "account", account, "err", err)
}
