package syncd

// This file is the shard builds: asking the worker for them, and the
// practice's view of an account's shard.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
	if err := decodeOptionalJSON(r, &req); err != nil {
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
