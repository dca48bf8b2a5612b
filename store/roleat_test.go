package store_test

import (
	"context"
	"testing"
)

// TestRoleAt: an account's role as of a seq is the one its newest change
// up to that seq set, and none after it was deleted and made again
// without one.
func TestRoleAt(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	seqs := map[string]int64{}
	for _, step := range []struct{ name, js string }{
		{"create", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"A","role":"admin"}}]`},
		{"rename", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"B"}}]`},
		{"demote", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"member"}}]`},
		{"delete", `[{"entity":"accounts","op":"delete","id":"a1"}]`},
		{"again", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"C"}}]`},
		{"promote", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"secretary"}}]`},
	} {
		seqs[step.name] = mustApply(t, tn, step.name, step.js).Seq
	}
	for _, tt := range []struct {
		name string
		seq  int64
		want string
	}{
		{"before it existed", seqs["create"] - 1, ""},
		{"at its creation", seqs["create"], "admin"},
		{"after a change without a role", seqs["rename"], "admin"},
		{"after a role change", seqs["demote"], "member"},
		{"deleted", seqs["delete"], ""},
		{"made again without a role: a member", seqs["again"], "member"},
		{"given a role again", seqs["promote"], "secretary"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tn.RoleAt(context.Background(), "a1", tt.seq)
			if err != nil || got != tt.want {
				t.Errorf("RoleAt(a1, %d) = %q, %v; want %q", tt.seq, got, err, tt.want)
			}
		})
	}
}
