package syncd

// This file is the practice's view of an account's devices: list and
// revoke.

import (
	"fmt"
	"net/http"

	"github.com/therasync/therasync/store"
)

// handleDevices serves GET /v1/practice/accounts/{id}/devices.
func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	id := r.PathValue("id")
	if _, err := t.Account(r.Context(), id); err != nil {
		s.fail(w, r, fmt.Errorf("account %q: %w", id, err))
		return
	}
	ds, err := t.Devices(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": ds})
}

type revokeRequest struct {
	Wipe bool `json:"wipe"`
}

// handleRevoke serves POST /v1/practice/devices/{id}/revoke.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	var req revokeRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	d, err := t.RevokeDevice(r.Context(), r.PathValue("id"), req.Wipe, "practice", clientAddr(r))
	if err != nil {
		s.fail(w, r, fmt.Errorf("device %q: %w", r.PathValue("id"), err))
		return
	}
	s.publishRevocation(r.Context(), Revocation{Tenant: t.ID(), AccountID: d.AccountID, DeviceID: d.ID, Wipe: d.Wipe})
	writeJSON(w, http.StatusOK, d)
}
