package syncd

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// TestErasedValuesNotServedFromMemory: after an erasure committed (and was
// answered) but before this process's feed has read it — a wake-up still
// on its way through Redis, or lost until the guard's next poke — the
// feed's memory still holds the erased values under the old history. A
// connection of the old history catching up must not be served them from
// memory (it reads the store, which says the log was rewritten: resync).
func TestErasedValuesNotServedFromMemory(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts, _, err := st.CreateTenant(ctx, store.NewTenant{Name: "P", Licenses: []string{"sync", "app"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := st.Tenant(ctx, ts.ID)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(id string, cs ...model.Change) int64 {
		t.Helper()
		res, err := tn.Apply(ctx, store.Batch{ID: id, Origin: store.OriginPractice, Changes: cs})
		if err != nil {
			t.Fatal(err)
		}
		return res.Seq
	}
	start := apply("b0", model.Change{Entity: model.Accounts, Op: model.OpUpsert, ID: "a1", Fields: map[string]any{"name": "A", "role": "admin"}})
	f := newFeed(tn, slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry()), time.Hour)
	defer func() { close(f.stop); <-f.done }()
	waitLatest := func(seq int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			f.mu.Lock()
			l := f.latest
			f.mu.Unlock()
			if l >= seq {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("feed at %d; want %d", l, seq)
			}
		}
	}
	waitLatest(start)
	seq := apply("b1",
		model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: "p-x", Fields: map[string]any{"owner_id": "a1", "first_name": "Review-Memory-Erased"}},
		model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: "s-x", Fields: map[string]any{"profile_id": "p-x", "protocol": "Review-Memory-Protocol"}})
	f.poke() // this process's commit: the feed reads it into memory
	waitLatest(seq)
	old, err := tn.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The erasure commits (through another syncd process, or this one's
	// wake-up not read yet).
	apply("b2", model.Change{Entity: model.Profiles, Op: model.OpErase, ID: "p-x"})
	now, err := tn.Log(ctx)
	if err != nil || now.History == old.History {
		t.Fatalf("Log after the erasure = %+v, %v; want a new history", now, err)
	}

	// A connection of the old history catching up from cursor start.
	c := &liveConn{feed: f, tenant: tn, cursor: start, history: old.History}
	cs, log, ok, err := c.fromMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cs)
	if ok && strings.Contains(string(b), "Review-Memory-Protocol") {
		t.Errorf("after the erasure's commit (log history %s) the feed's memory hands a connection of history %s the erased values: %s", now.History, log.History, b)
	}
	if ok {
		t.Errorf("fromMemory served a connection of history %s from memory after the log moved to %s", old.History, now.History)
	}
}
