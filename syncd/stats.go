package syncd

// This file is the HTTP side of the statistics over what an account sees;
// shardbuilder computes them (ComputeStats).

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// Stats is the answer of GET /v1/practice/stats.
type Stats struct {
	As   string `json:"as"`
	From string `json:"from"`
	To   string `json:"to"`
	// TZ is the tenant's time zone, in which from, to and the sessions'
	// days are read.
	TZ  string `json:"tz"`
	Seq int64  `json:"seq"`
	shardbuilder.Stats
}

// handleStats serves GET /v1/practice/stats?as=ACCOUNT&from=DATE&to=DATE
// (dates in the tenant's time zone, inclusive; default: this month up to
// today), computed over exactly what the account sees.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request, t *store.Tenant, set store.Settings) {
	q := r.URL.Query()
	loc := set.Location()
	p, err := shardbuilder.ParsePeriod(q.Get("from"), q.Get("to"), s.now(), loc)
	if err != nil {
		s.fail(w, r, badRequest("%v", err))
		return
	}
	st := Stats{As: q.Get("as"), From: p.From.Format(time.DateOnly), To: p.To.Format(time.DateOnly), TZ: loc.String()}
	path, m, err := s.view(r.Context(), t, st.As)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer os.Remove(path)
	st.Seq = m.Seq
	if st.Stats, err = shardbuilder.ComputeStats(r.Context(), path, p); err != nil {
		s.fail(w, r, fmt.Errorf("stats: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, st)
}
