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

// activate sends acc's access code if its activation is pending and every
// precondition holds now (its shard was just built or is current). A
// failing precondition leaves the activation pending: the practice sees
// why in GET …/access-code, and the next build sends it.
func (s *Server) activate(ctx context.Context, t *store.Tenant, acc store.Account) error {
	if s.cfg.Codes == nil || s.queue == nil {
		return nil
	}
	pending, err := t.ActivationPending(ctx, acc.ID)
	if err != nil || !pending {
		return err
	}
	st, err := t.Settings(ctx)
	if err != nil {
		return err
	}
	if model.MissingAppLicense(st.Licenses) != "" || !model.AppAccessOn(acc.AppEnabled, acc.Role) || !model.ValidEmail(acc.Email) {
		return nil
	}
	code, expires, err := s.cfg.Codes.Issue(ctx, t.ID(), acc.ID, acc.Email)
	var tooSoon *authcode.TooSoonError
	if errors.As(err, &tooSoon) {
		return t.ActivationDone(ctx, acc.ID) // a code went out within the minute
	}
	if err != nil {
		return fmt.Errorf("activation code: %w", err)
	}
	if err := t.RecordCodeSent(ctx, acc.ID, expires.Add(-s.cfg.Codes.TTL()), expires); err != nil {
		return err
	}
	if err := s.queue.SendCode(ctx, t.ID(), acc.ID, code, expires); err != nil {
		return fmt.Errorf("activation mail: %w", err)
	}
	if err := t.Audit(ctx, store.AuditEntry{Actor: "activation", AccountID: acc.ID, Action: "code_sent"}); err != nil {
		return err
	}
	s.log.Info("activation code sent", "tenant", t.ID(), "account", acc.ID)
	return t.ActivationDone(ctx, acc.ID)
}
