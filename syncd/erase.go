package syncd

// This file is what syncd does after an erasure (DESIGN §2) beyond the
// store's transaction: the shard files that may hold what it erased go.
// The live stream's side is the feed's (feed.go, dispatch.go: fading).

import (
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// removeStaleShards removes the tenant's shard files not built from the
// log's history (after an erasure: every one built before it), before the
// erasure is answered. The worker never records a shard built from before
// the erasure, and removes its file if it lands later (worker.buildCurrent).
func (s *Server) removeStaleShards(t *store.Tenant, history string) {
	n, err := shardbuilder.RemoveStale(s.cfg.Store.Dir(), t.ID(), history)
	if err != nil {
		s.log.Error("erasure: remove the shard files of the old history", "tenant", t.ID(), "removed", n, "err", err)
		return
	}
	s.log.Info("erasure: shard files of the old history removed", "tenant", t.ID(), "removed", n)
}
