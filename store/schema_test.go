package store

import (
	"context"
	"slices"
	"testing"

	"github.com/therasync/therasync/model"
)

// TestSchemaMatchesModel checks that the migrations create exactly the
// columns of the model: id plus every field, in the model's order.
func TestSchemaMatchesModel(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _, err := s.CreateTenant(context.Background(), NewTenant{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := s.Tenant(context.Background(), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range model.Entities() {
		rows, err := tn.rdb.Query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`, e.Name)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		rows.Close()
		want := []string{"id"}
		for _, f := range e.Fields {
			want = append(want, f.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("columns of %s = %v; want %v", e.Name, got, want)
		}
	}
	var v int
	if err := tn.rdb.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Errorf("user_version = %d, %v; want %d", v, err, SchemaVersion())
	}
	var sync int
	if err := tn.w.db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous of the writer = %d, %v; want 2 (FULL)", sync, err)
	}
	var mode string
	if err := tn.rdb.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}
