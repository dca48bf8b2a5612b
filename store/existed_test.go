package store_test

import (
	"context"
	"testing"
)

// TestExistedBefore: whether a row existed just before a seq, by its
// changes: created, changed, deleted, made again.
func TestExistedBefore(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	seqs := map[string]int64{}
	for _, step := range []struct{ name, js string }{
		{"create", `[{"entity":"sessions","op":"upsert","id":"s1","fields":{"status":"planned"}}]`},
		{"update", `[{"entity":"sessions","op":"upsert","id":"s1","fields":{"protocol":"x"}}]`},
		{"other", `[{"entity":"sessions","op":"upsert","id":"s2","fields":{"status":"planned"}}]`},
		{"delete", `[{"entity":"sessions","op":"delete","id":"s1"}]`},
		{"again", `[{"entity":"sessions","op":"upsert","id":"s1","fields":{"protocol":"y"}}]`},
	} {
		seqs[step.name] = mustApply(t, tn, step.name, step.js).Seq
	}
	for _, tt := range []struct {
		name   string
		entity string
		id     string
		seq    int64
		want   bool
	}{
		{"at its creation", "sessions", "s1", seqs["create"], false},
		{"at its update", "sessions", "s1", seqs["update"], true},
		{"at another row's change", "sessions", "s1", seqs["other"], true},
		{"at its deletion", "sessions", "s1", seqs["delete"], true},
		{"made again after a delete", "sessions", "s1", seqs["again"], false},
		{"after it was made again", "sessions", "s1", seqs["again"] + 1, true},
		{"another row's creation", "sessions", "s2", seqs["other"], false},
		{"a row of another entity", "profiles", "s1", seqs["again"] + 1, false},
		{"a row never written", "sessions", "nope", seqs["again"] + 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tn.ExistedBefore(context.Background(), tt.entity, tt.id, tt.seq)
			if err != nil || got != tt.want {
				t.Errorf("ExistedBefore(%s, %s, %d) = %v, %v; want %v", tt.entity, tt.id, tt.seq, got, err, tt.want)
			}
		})
	}
}
