package syncd

// This file is the per-account backup: a shard-like file of what the
// account sees.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// view builds what account sees of t into a temporary file, with the shard
// builder; the caller removes the file.
func (s *Server) view(ctx context.Context, t *store.Tenant, account string) (string, shardbuilder.Meta, error) {
	if account == "" {
		return "", shardbuilder.Meta{}, badRequest("as (an account id) is required")
	}
	dir := filepath.Join(s.cfg.Store.Dir(), "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", shardbuilder.Meta{}, err
	}
	f, err := os.CreateTemp(dir, "view-*.db")
	if err != nil {
		return "", shardbuilder.Meta{}, err
	}
	path := f.Name()
	f.Close()
	os.Remove(path) // WriteFile creates it anew
	m, err := shardbuilder.WriteFile(ctx, shardbuilder.Source{TenantID: t.ID(), Path: t.Path()}, account, path, time.Now())
	switch {
	case errors.Is(err, shardbuilder.ErrNoAccount):
		return "", m, fmt.Errorf("account %q: %w", account, store.ErrNotFound)
	case errors.Is(err, shardbuilder.ErrNoRole):
		return "", m, badRequest("account %q has no valid role", account)
	}
	return path, m, err
}

// handleBackup serves GET /v1/practice/backup?as=ACCOUNT: a SQLite file
// with exactly what the account sees (an admin's is the whole tenant).
func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	as := r.URL.Query().Get("as")
	steppedUp := false
	if acc, err := t.Account(r.Context(), as); err == nil && acc.Role == model.RoleAdmin {
		// An admin's backup is the whole tenant: it needs the step-up.
		if err := s.stepUp(r.Context(), t, r); err != nil {
			s.fail(w, r, err)
			return
		}
		steppedUp = true
	}
	path, m, err := s.view(r.Context(), t, as)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer os.Remove(path)
	if m.Role == model.RoleAdmin && !steppedUp {
		// The account became an admin between the check and the build's
		// snapshot: the file holds the whole tenant.
		s.fail(w, r, errTOTPRequired)
		return
	}
	s.audit(r.Context(), t, store.AuditEntry{Actor: "practice", AccountID: m.AccountID, Action: "backup_export", Detail: fmt.Sprintf("seq %d", m.Seq), Addr: clientAddr(r)})
	f, err := os.Open(path)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/vnd.sqlite3")
	w.Header().Set("Content-Length", fmt.Sprint(m.Size))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="therasync-%s-%s-%d.db"`, t.ID(), safeFileName(m.AccountID), m.Seq))
	w.Header().Set("X-Therasync-Seq", fmt.Sprint(m.Seq))
	w.Header().Set("X-Therasync-SHA256", m.SHA256)
	w.Header().Set("Cache-Control", "no-store")
	if _, err := io.Copy(w, f); err != nil {
		s.log.Warn("backup download interrupted", "tenant", t.ID(), "err", err)
	}
}

func safeFileName(s string) string {
	out := []rune{}
	for _, r := range s {
		if r < 0x80 && (r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			out = append(out, r)
		} else {
			out = append(out, '_')
		}
	}
	return string(out)
}
