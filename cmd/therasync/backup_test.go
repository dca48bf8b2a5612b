package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// TestBackupWhileWritingAndRestore backs up a data directory while a writer
// keeps pushing, then restores it into a fresh one.
func TestBackupWhileWritingAndRestore(t *testing.T) {
	data := t.TempDir()
	s, err := store.Open(data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := s.Tenant(context.Background(), st.ID)
	push := func(i int) error {
		_, err := tn.Apply(context.Background(), store.Batch{ID: fmt.Sprint(i), Origin: store.OriginPractice, Changes: []model.Change{
			{Entity: model.Profiles, Op: model.OpUpsert, ID: fmt.Sprint("p", i), Fields: map[string]any{"first_name": "X"}},
			{Entity: model.Sessions, Op: model.OpUpsert, ID: fmt.Sprint("s", i), Fields: map[string]any{"profile_id": fmt.Sprint("p", i)}},
		}})
		return err
	}
	for i := range 200 {
		if err := push(i); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // syncd goes on writing meanwhile
		defer wg.Done()
		for i := 200; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := push(i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	out := filepath.Join(t.TempDir(), "backup")
	stdout, err := run(t, "backup", "--data", data, "--out", out)
	close(stop)
	wg.Wait()
	s.Close()
	if err != nil || !strings.Contains(stdout, "backup of 1 tenants") {
		t.Fatalf("backup = %q, %v", stdout, err)
	}

	fresh := t.TempDir()
	if _, err := run(t, "restore", "--from", out, "--data", fresh); err != nil {
		t.Fatalf("restore = %v", err)
	}
	if _, err := run(t, "restore", "--from", out, "--data", fresh); !errors.Is(err, store.ErrExists) {
		t.Errorf("restore onto an existing tenant = %v; want ErrExists", err)
	}
	if _, err := run(t, "restore", "--from", out, "--data", fresh, "--force"); err != nil {
		t.Errorf("restore --force = %v", err)
	}
	s2, err := store.Open(fresh, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	tn2, _, err := s2.Authenticate(context.Background(), key)
	if err != nil {
		t.Fatalf("the practice key does not open the restored tenant: %v", err)
	}
	// The copy is of one moment: its log has no gap, and every change of it
	// is in the rows (each batch wrote one profile and one session).
	cs, latest, err := tn2.Changes(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if latest < 400 || int64(len(cs)) != latest || latest%2 != 0 {
		t.Fatalf("restored log: %d changes, latest %d; want every change of whole batches, at least 400", len(cs), latest)
	}
	for i, c := range cs {
		if c.Seq != int64(i+1) {
			t.Fatalf("restored change %d has seq %d", i, c.Seq)
		}
	}
	last := cs[len(cs)-1]
	if _, err := tn2.Row(context.Background(), last.Entity, last.ID); err != nil {
		t.Errorf("row of the last restored change %s/%s: %v", last.Entity, last.ID, err)
	}
}
