package syncd

// This file is the rotation of the practice key.

import (
	"net/http"

	"github.com/therasync/therasync/store"
)

// handleRotateKey serves POST /v1/practice/key/rotate (step-up required).
func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	if err := s.stepUp(r.Context(), t, r); err != nil {
		s.fail(w, r, err)
		return
	}
	key, err := t.RotateKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r.Context(), t, store.AuditEntry{Actor: "practice", Action: "key_rotated", Addr: clientAddr(r)})
	s.publishRevocation(r.Context(), Revocation{Tenant: t.ID(), Practice: true, Current: fingerprint(keyHash(key))})
	writeJSON(w, http.StatusOK, map[string]string{"practice_key": key})
}
