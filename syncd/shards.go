package syncd

import (
	"context"
	"database/sql"
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

// BuildQueue enqueues shard builds for the worker.
type BuildQueue interface {
	EnqueueBuild(ctx context.Context, tenant, account string) error
}

var errAppDisabled = errors.New("app access of the account is disabled")

// enqueueBuilds hands recorded build requests to the worker. A failure is
// logged and not returned: the requests are in the store, and the worker's
// reconcile enqueues them again.
func (s *Server) enqueueBuilds(ctx context.Context, tenant string, accounts []string) []string {
	enqueued := make([]string, 0, len(accounts))
	for _, a := range accounts {
		if s.cfg.Builds == nil {
			enqueued = append(enqueued, a)
			continue
		}
		if err := s.cfg.Builds.EnqueueBuild(ctx, tenant, a); err != nil {
			s.log.Warn("enqueue shard build failed; the reconcile will retry", "tenant", tenant, "account", a, "err", err)
			continue
		}
		enqueued = append(enqueued, a)
	}
	return enqueued
}

type buildRequest struct {
	AccountID *string `json:"account_id"`
}

// handleBuildShards serves POST /v1/practice/shards/build: {"account_id"}
// builds one account's shard, {} every missing or outdated one.
func (s *Server) handleBuildShards(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	var req buildRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	var (
		ids []string
		err error
	)
	if req.AccountID == nil {
		ids, err = t.RequestOutdatedBuilds(r.Context(), shardbuilder.SchemaVersion)
	} else {
		ids, err = s.requestBuild(r.Context(), t, *req.AccountID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]string{"enqueued": s.enqueueBuilds(r.Context(), t.ID(), ids)})
}

func (s *Server) requestBuild(ctx context.Context, t *store.Tenant, id string) ([]string, error) {
	acc, err := t.Account(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("account %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if !acc.AppEnabled {
		return nil, fmt.Errorf("account %q: %w", id, errAppDisabled)
	}
	if !model.ValidRole(acc.Role) {
		return nil, badRequest("account %q has no valid role", id)
	}
	return t.RequestBuilds(ctx, id)
}

// handleAccountShard serves GET /v1/practice/accounts/{id}/shard.
func (s *Server) handleAccountShard(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	sh, err := t.LatestShard(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, fmt.Errorf("shard of %q: %w", r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, sh)
}

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

// Stats is the answer of GET /v1/practice/stats.
type Stats struct {
	As   string `json:"as"`
	From string `json:"from"`
	To   string `json:"to"`
	Seq  int64  `json:"seq"`
	// RevenueCents sums the paid invoices dated in the range.
	RevenueCents int64 `json:"revenue_cents"`
	// ExpensesCents sums the expenses dated in the range, as a positive amount.
	ExpensesCents int64 `json:"expenses_cents"`
	// ProfitCents is revenue less expenses.
	ProfitCents int64 `json:"profit_cents"`
	// UnbilledSessions counts the done sessions starting in the range that
	// no invoice names; UnbilledCents sums their prices.
	UnbilledSessions int64 `json:"unbilled_sessions"`
	UnbilledCents    int64 `json:"unbilled_cents"`
}

// handleStats serves GET /v1/practice/stats?as=ACCOUNT&from=DATE&to=DATE
// (dates inclusive), computed over exactly what the account sees.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	q := r.URL.Query()
	st := Stats{As: q.Get("as"), From: q.Get("from"), To: q.Get("to")}
	for name, v := range map[string]string{"from": st.From, "to": st.To} {
		if _, err := time.Parse(time.DateOnly, v); err != nil {
			s.fail(w, r, badRequest("%s must be a date (YYYY-MM-DD), got %q", name, v))
			return
		}
	}
	if st.From > st.To {
		s.fail(w, r, badRequest("from (%s) is after to (%s)", st.From, st.To))
		return
	}
	path, m, err := s.view(r.Context(), t, st.As)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer os.Remove(path)
	st.Seq = m.Seq
	if err := computeStats(r.Context(), path, &st); err != nil {
		s.fail(w, r, fmt.Errorf("stats: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func computeStats(ctx context.Context, path string, st *Stats) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	err = db.QueryRowContext(ctx, `SELECT
		coalesce(sum(CASE WHEN kind = 'invoice' AND status = 'paid' THEN amount_cents END), 0),
		coalesce(sum(CASE WHEN kind = 'expense' THEN abs(amount_cents) END), 0)
		FROM transactions WHERE date BETWEEN ? AND ?`, st.From, st.To).Scan(&st.RevenueCents, &st.ExpensesCents)
	if err != nil {
		return err
	}
	st.ProfitCents = st.RevenueCents - st.ExpensesCents
	return db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(price_cents), 0) FROM sessions s
		WHERE s.status = 'done' AND substr(s.starts_at, 1, 10) BETWEEN ? AND ?
		AND NOT EXISTS (SELECT 1 FROM transactions x WHERE x.kind = 'invoice' AND x.session_id = s.id)`,
		st.From, st.To).Scan(&st.UnbilledSessions, &st.UnbilledCents)
}
