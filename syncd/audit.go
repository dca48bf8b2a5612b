package syncd

// This file is the audit log: writing a line and reading the log.

import (
	"context"
	"net/http"

	"github.com/therasync/therasync/store"
)

// audit appends e to the tenant's audit log. A failure is logged, not
// returned: the action it records has already happened.
func (s *Server) audit(ctx context.Context, t *store.Tenant, e store.AuditEntry) {
	if err := t.Audit(ctx, e); err != nil {
		s.log.Error("audit", "tenant", t.ID(), "action", e.Action, "err", err)
	}
}

// handleAudit serves GET /v1/practice/audit?since=ID&limit=N.
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	since, err := queryInt(r.URL.Query().Get("since"), "since", 0, 0, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := queryInt(r.URL.Query().Get("limit"), "limit", 100, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	es, err := t.AuditLog(r.Context(), since, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": es})
}
