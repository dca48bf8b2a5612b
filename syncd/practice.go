package syncd

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/wire"
)

// maxBatchIDLen caps a batch_id.
const maxBatchIDLen = 128

type pushRequest struct {
	BatchID string            `json:"batch_id"`
	Changes []model.RawChange `json:"changes"`
}

type pushResponse struct {
	Seq int64 `json:"seq"`
}

// handlePushChanges serves POST /v1/practice/changes: it validates the whole
// batch, applies it atomically and answers once it is durable.
func (s *Server) handlePushChanges(w http.ResponseWriter, r *http.Request, t *store.Tenant, st store.Settings) {
	b, err := s.decodePush(r, st)
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		s.fail(w, r, err)
		return
	}
	res, err := t.Apply(r.Context(), b)
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		s.fail(w, r, fmt.Errorf("push: %w", err))
		return
	}
	if res.Repeated {
		s.metrics.pushes.WithLabelValues("repeated").Inc()
	} else {
		s.metrics.pushes.WithLabelValues("applied").Inc()
		s.metrics.changesApplied.Add(float64(len(res.Changes)))
		s.applied(r.Context(), t, res)
	}
	writeJSON(w, http.StatusOK, pushResponse{Seq: res.Seq})
}

func (s *Server) decodePush(r *http.Request, st store.Settings) (store.Batch, error) {
	if !st.HasLicense(store.LicenseSync) {
		return store.Batch{}, fmt.Errorf("the practice group holds no %q license: %w", store.LicenseSync, store.ErrLicenseMissing)
	}
	var req pushRequest
	if err := decodeJSON(r, &req); err != nil {
		return store.Batch{}, err
	}
	switch {
	case req.BatchID == "":
		return store.Batch{}, badRequest("batch_id is missing")
	case len(req.BatchID) > maxBatchIDLen:
		return store.Batch{}, badRequest("batch_id is longer than %d bytes", maxBatchIDLen)
	case req.Changes == nil:
		return store.Batch{}, badRequest("changes is missing")
	case len(req.Changes) == 0:
		return store.Batch{}, badRequest("changes is empty")
	case len(req.Changes) > s.cfg.MaxBatchChanges:
		return store.Batch{}, badRequest("a batch holds at most %d changes, this one %d", s.cfg.MaxBatchChanges, len(req.Changes))
	}
	b := store.Batch{ID: req.BatchID, Origin: store.OriginPractice, Addr: clientAddr(r), Changes: make([]model.Change, len(req.Changes))}
	for i, rc := range req.Changes {
		c, err := rc.Validate(i)
		if err != nil {
			return store.Batch{}, err
		}
		b.Changes[i] = c
	}
	return b, nil
}

type pullResponse struct {
	Changes []model.Change `json:"changes"`
	Seq     int64          `json:"seq"`
	History string         `json:"history"`
	// CompactedTo is the horizon up to which the log is compacted whole: a
	// client pulling from since=0 sends it back (compacted_to=) with its
	// later pages to go on below the log's compacted_to.
	CompactedTo int64 `json:"compacted_to"`
}

// historyError is the answer to a pull that cannot go on from its cursor
// (DESIGN §2): 409 history_changed with the log's history id and head
// seq, or 410 history_compacted with compacted_to.
type historyError struct {
	Error       string `json:"error"`
	Message     string `json:"message"`
	History     string `json:"history"`
	Seq         int64  `json:"seq"`
	CompactedTo int64  `json:"compacted_to"`
}

// handlePullChanges serves GET /v1/practice/changes?since=N&limit=M&history=H&compacted_to=C.
// The changes, the head and the history come from one snapshot; a pull of
// another history, or from below compacted_to, gets no changes — unless
// it pages on from since=0 with the compacted_to its first page answered
// and the log is still compacted to there (store.Log.ContinuesFrom).
func (s *Server) handlePullChanges(w http.ResponseWriter, r *http.Request, t *store.Tenant, _ store.Settings) {
	q := r.URL.Query()
	since, err := queryInt(q.Get("since"), "since", 0, 0, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := queryInt(q.Get("limit"), "limit", 1000, 1, DefaultMaxPullChanges)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	history := q.Get("history")
	resume, err := queryInt(q.Get("compacted_to"), "compacted_to", 0, 0, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rd, err := t.Read(r.Context(), since, int(limit))
	if err != nil {
		s.fail(w, r, fmt.Errorf("pull: %w", err))
		return
	}
	he := historyError{History: rd.History, Seq: rd.Latest, CompactedTo: rd.CompactedTo}
	switch {
	case history != "" && history != rd.History:
		he.Error, he.Message = wire.CodeHistoryChanged, "the change log was rewritten (a restore or an erasure): pull a fresh copy from since=0 of history "+rd.History
		writeJSON(w, http.StatusConflict, he)
		return
	case !rd.Log().ContinuesFrom(since, history, resume):
		he.Error, he.Message = wire.CodeHistoryCompacted, fmt.Sprintf("changes up to seq %d may have been compacted away: pull a fresh copy from since=0 (and send back the compacted_to of its answers)", rd.CompactedTo)
		writeJSON(w, http.StatusGone, he)
		return
	}
	s.metrics.changesPulled.Add(float64(len(rd.Changes)))
	writeJSON(w, http.StatusOK, pullResponse{Changes: rd.Changes, Seq: rd.Latest, History: rd.History, CompactedTo: rd.Log().Resume()})
}

// queryInt parses a query parameter, def when absent, refusing values
// outside [lo, hi].
func queryInt(v, name string, def, lo, hi int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest("%s must be an integer, got %q", name, v)
	}
	if n < lo || n > hi {
		return 0, badRequest("%s must be between %d and %d, got %d", name, lo, hi, n)
	}
	return n, nil
}
