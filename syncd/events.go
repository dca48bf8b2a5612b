package syncd

// This file is what syncd processes tell each other through Redis: commits
// (wake-ups, a hint) and revocations.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/therasync/therasync/store"
)

// keyCommits is the Redis channel on which every syncd announces the seq a
// tenant reached, so that the others wake their connections.
func keyCommits() string { return "therasync:commits" }

// commitEvent is the message on keyCommits.
type commitEvent struct {
	Tenant string `json:"tenant"`
	Seq    int64  `json:"seq"`
}

// subscribe follows the commit and revocation channels until ctx ends.
func (s *Server) subscribe(ctx context.Context, ready chan<- error) {
	sub := s.cfg.Redis.Subscribe(ctx, keyCommits(), keyRevocations())
	defer sub.Close()
	_, err := sub.Receive(ctx) // the subscription confirmation
	ready <- err
	if err != nil {
		return
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch msg.Channel {
			case keyCommits():
				var ev commitEvent
				if json.Unmarshal([]byte(msg.Payload), &ev) == nil {
					s.hub.committed(ev.Tenant)
				}
			case keyRevocations():
				var rev Revocation
				if json.Unmarshal([]byte(msg.Payload), &rev) == nil {
					s.revoke(rev)
				}
			}
		}
	}
}

// keyRevocations is the Redis channel of Revocation events.
func keyRevocations() string { return "therasync:revocations" }

// Events publishes what the other syncd processes act on at once: commits
// (they wake their connections) and revocations. The syncd server and the
// operator's command both publish through it. With a nil Redis it
// publishes nothing; the feeds' re-read of the access still closes the
// connections within Config.AccessRecheck.
type Events struct {
	Redis redis.UniversalClient
}

// Committed announces that the tenant reached seq.
func (e Events) Committed(ctx context.Context, tenant string, seq int64) error {
	if e.Redis == nil {
		return nil
	}
	if err := e.Redis.Publish(ctx, keyCommits(), mustJSON(commitEvent{Tenant: tenant, Seq: seq})).Err(); err != nil {
		return fmt.Errorf("publish commit: %w", err)
	}
	return nil
}

// Revoked announces a revocation.
func (e Events) Revoked(ctx context.Context, rev Revocation) error {
	if e.Redis == nil {
		return nil
	}
	b, _ := json.Marshal(rev)
	if err := e.Redis.Publish(ctx, keyRevocations(), b).Err(); err != nil {
		return fmt.Errorf("publish revocation: %w", err)
	}
	return nil
}

// Applied announces what a committed batch requires of every process: a
// revocation for each account whose app access it ended, and a wake-up.
func (e Events) Applied(ctx context.Context, tenant string, res store.Result) error {
	var errs []error
	for _, rev := range revocations(tenant, res) {
		errs = append(errs, e.Revoked(ctx, rev))
	}
	if len(res.Changes) > 0 || res.History != "" {
		errs = append(errs, e.Committed(ctx, tenant, res.Seq))
	}
	return errors.Join(errs...)
}
