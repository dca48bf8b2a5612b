package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// TestCompact: therasync compact folds what is older than the retention,
// per tenant or for one, and says what it did.
func TestCompact(t *testing.T) {
	data := t.TempDir()
	// The changes were written two days ago.
	s, err := store.Open(data, store.Options{Now: func() time.Time { return time.Now().Add(-48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 2 {
		st, _, err := s.CreateTenant(context.Background(), store.NewTenant{Name: fmt.Sprint("P", i)})
		if err != nil {
			t.Fatal(err)
		}
		tn, _ := s.Tenant(context.Background(), st.ID)
		for j := range 5 {
			c := model.Change{Entity: model.Practices, Op: model.OpUpsert, ID: "pr1", Fields: map[string]any{"name": fmt.Sprint("N", j)}}
			if _, err := tn.Apply(context.Background(), store.Batch{ID: fmt.Sprint("b", j), Origin: store.OriginPractice, Changes: []model.Change{c}}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, st.ID)
	}
	s.Close()
	sort.Strings(ids) // the order compact goes in
	for _, tt := range []struct {
		name string
		args []string
		want []string // in the output, in order
	}{
		{"a retention longer than the log's age", []string{"--retention", "3d"}, []string{"tenant " + ids[0] + ": nothing older than the retention, compacted_to 0, 0 changes dropped", "compacted 2 tenants"}},
		{"one tenant", []string{"--tenant", ids[0], "--retention", "1d"}, []string{"[1/1] tenant " + ids[0] + ": horizon 4, compacted_to 4, 3 changes dropped, 1 rewritten, 5 batch and 0 mutation ids forgotten", "compacted 1 tenants, 3 changes dropped"}},
		{"every tenant", []string{"--retention", "36h"}, []string{"tenant " + ids[0] + ": horizon 4, compacted_to 4, 0 changes dropped", "tenant " + ids[1] + ": horizon 4, compacted_to 4, 3 changes dropped", "compacted 2 tenants, 3 changes dropped"}},
		{"retention 0 keeps all", []string{"--retention", "0"}, []string{"nothing compacted"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, append([]string{"compact", "--data", data}, tt.args...)...)
			if err != nil {
				t.Fatalf("compact = %v", err)
			}
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("compact printed %q; want %q (in order)", out, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
	for _, args := range [][]string{{"compact"}, {"compact", "--data", data, "--retention", "soon"}, {"compact", "--data", data, "extra"}} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("therasync %v = nil error; want one", args)
		}
	}
}
