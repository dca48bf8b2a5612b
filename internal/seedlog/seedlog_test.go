package seedlog_test

import (
	"context"
	"flag"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/internal/seedlog"
	"github.com/therasync/therasync/store"
)

// Seeding a data directory for scripts (scripts/bench-compact,
// scripts/loadtest): go test ./internal/seedlog -run TestSeedDataDir
// -seed.data DIR [-seed.tenant T] -seed.changes N.
var (
	seedData    = flag.String("seed.data", "", "data directory to seed (TestSeedDataDir)")
	seedTenant  = flag.String("seed.tenant", "", "tenant to seed; empty makes one")
	seedChanges = flag.Int("seed.changes", 1000000, "changes to write")
	seedRows    = flag.Int("seed.rows", 100000, "rows they fall on")
	seedDays    = flag.Int("seed.days", 100, "the changes span this many days up to now")
)

// TestWrite: the rows Write leaves are what its log replays to.
func TestWrite(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _, err := s.CreateTenant(ctx, store.NewTenant{Name: "P"})
	if err != nil {
		t.Fatal(err)
	}
	path := s.Dir() + "/tenants/" + st.ID + "/central.db"
	now := time.Now()
	stats, err := seedlog.Write(ctx, path, seedlog.Options{Changes: 3000, Rows: 200, From: now.Add(-time.Hour), To: now, BatchEvery: 100, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if stats.FirstSeq != 1 || stats.LastSeq != 3000 || stats.Deletes == 0 {
		t.Errorf("Write = %+v; want seqs 1 to 3000 with deletes", stats)
	}
	tn, err := s.Tenant(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	cs, _, err := tn.Changes(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	replayed := map[string]map[string]any{}
	for _, c := range cs {
		key := c.Entity + "/" + c.ID
		if c.Op == "delete" {
			delete(replayed, key)
			continue
		}
		if replayed[key] == nil {
			replayed[key] = map[string]any{}
		}
		for k, v := range c.Fields {
			replayed[key][k] = v
		}
	}
	if len(replayed) != stats.Rows {
		t.Errorf("the log replays to %d rows; Write says %d", len(replayed), stats.Rows)
	}
	for key, want := range replayed {
		entity, id, _ := strings.Cut(key, "/")
		got, err := tn.Row(ctx, entity, id)
		if err != nil {
			t.Fatalf("row %s: %v", key, err)
		}
		for k, v := range got {
			if v == nil {
				delete(got, k)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("row %s = %v; the log replays to %v", key, got, want)
		}
	}
}

// TestSeedDataDir seeds -seed.data for the scripts; skipped without it.
func TestSeedDataDir(t *testing.T) {
	if *seedData == "" {
		t.Skip("no -seed.data")
	}
	ctx := context.Background()
	s, err := store.Open(*seedData, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := *seedTenant
	if id == "" {
		st, _, err := s.CreateTenant(ctx, store.NewTenant{Name: "Seeded", Licenses: []string{store.LicenseSync, store.LicenseApp}})
		if err != nil {
			t.Fatal(err)
		}
		id = st.ID
	}
	now := time.Now()
	begin := time.Now()
	stats, err := seedlog.Write(ctx, *seedData+"/tenants/"+id+"/central.db", seedlog.Options{Changes: *seedChanges, Rows: *seedRows,
		From: now.Add(-time.Duration(*seedDays) * 24 * time.Hour), To: now, BatchEvery: 100, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("seeded tenant %s: seqs %d-%d, %d deletes, %d rows, in %s\n", id, stats.FirstSeq, stats.LastSeq, stats.Deletes, stats.Rows, time.Since(begin).Round(time.Millisecond))
}
