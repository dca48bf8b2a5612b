package syncd

// This file is the statistics over what an account sees.

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/therasync/therasync/store"
)

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
