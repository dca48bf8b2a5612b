package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// TestLinks: the link fields read from the tables equal those rebuilt by
// replaying the change log, at the same seq.
func TestLinks(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "a", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member"}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"m1","first_name":"Anna"}},
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"first_name":"ohne Besitzer"}},
		{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p2","account_id":"*"}},
		{"entity":"sessions","op":"upsert","id":"s1","fields":{"profile_id":"p1","therapist_id":"m1"}},
		{"entity":"sessions","op":"upsert","id":"s2","fields":{"therapist_id":"m2"}},
		{"entity":"courses","op":"upsert","id":"c1","fields":{"therapist_id":"m1"}},
		{"entity":"course_members","op":"upsert","id":"cm1","fields":{"course_id":"c1","profile_id":"p2"}},
		{"entity":"attendances","op":"upsert","id":"at1","fields":{"course_id":"c1","profile_id":"p2","date":"2026-11-23"}},
		{"entity":"transactions","op":"upsert","id":"t1","fields":{"account_id":"m1","kind":"expense","amount_cents":-5}}
	]`)
	mustApply(t, tn, "b", `[
		{"entity":"sessions","op":"upsert","id":"s2","fields":{"therapist_id":"m1","profile_id":"p2"}},
		{"entity":"sessions","op":"delete","id":"s1"},
		{"entity":"course_members","op":"upsert","id":"cm1","fields":{"profile_id":null}}
	]`)
	got, seq, err := tn.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs, latest, err := tn.Changes(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := model.NewLinks()
	for _, c := range cs {
		want.Apply(c)
	}
	if seq != latest {
		t.Errorf("Links seq = %d; want %d", seq, latest)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Links() = %+v; replayed %+v", got, want)
	}
	if r, ok := got.Get(model.CourseMembers, "cm1"); !ok || r != (model.LinkRow{A: "c1"}) {
		t.Errorf("cm1 = %+v, %v; want course c1 and no profile", r, ok)
	}
}

// TestLinksAt: the link fields as of every seq equal a replay of the log up
// to that seq.
func TestLinksAt(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "a", `[
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"m1"}},
		{"entity":"sessions","op":"upsert","id":"s1","fields":{"profile_id":"p1","therapist_id":"m1"}},
		{"entity":"courses","op":"upsert","id":"c1","fields":{"therapist_id":"m1"}},
		{"entity":"course_members","op":"upsert","id":"cm1","fields":{"course_id":"c1","profile_id":"p1"}}
	]`)
	mustApply(t, tn, "b", `[
		{"entity":"sessions","op":"upsert","id":"s1","fields":{"therapist_id":"m2"}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"Anna"}},
		{"entity":"courses","op":"delete","id":"c1"},
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member"}}
	]`)
	mustApply(t, tn, "c", `[
		{"entity":"courses","op":"upsert","id":"c1","fields":{"title":"neu"}},
		{"entity":"sessions","op":"upsert","id":"s1","fields":{"profile_id":null}},
		{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p1","account_id":"*"}}
	]`)
	cs, latest, err := tn.Changes(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for seq := int64(0); seq <= latest+1; seq++ {
		want := model.NewLinks()
		for _, c := range cs {
			if c.Seq <= seq {
				want.Apply(c)
			}
		}
		got, err := tn.LinksAt(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("LinksAt(%d) = %+v; replayed %+v", seq, got, want)
		}
	}
}

// BenchmarkLinksAt measures rebuilding a tenant's link fields as of a seq
// 1,000 changes back, in a tenant of 100,000 linked rows: what a member's
// device that reconnects behind the head costs. Run:
//
//	go test -run '^$' -bench LinksAt ./store/
func BenchmarkLinksAt(b *testing.B) {
	_, tn, _ := newTenant(b, nil)
	ctx := context.Background()
	for i := 0; i < 100000; i += 2000 {
		var cs []model.Change
		for j := i; j < i+2000; j++ {
			if j%5 == 0 {
				cs = append(cs, model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: fmt.Sprint("p", j), Fields: map[string]any{"owner_id": fmt.Sprint("m", j%2000)}})
				continue
			}
			cs = append(cs, model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: fmt.Sprint("s", j), Fields: map[string]any{"profile_id": fmt.Sprint("p", j/5*5), "therapist_id": fmt.Sprint("m", j%2000)}})
		}
		if _, err := tn.Apply(ctx, store.Batch{Origin: store.OriginPractice, Changes: cs}); err != nil {
			b.Fatal(err)
		}
	}
	seq, _ := tn.Seq(ctx)
	b.ResetTimer()
	for range b.N {
		if _, err := tn.LinksAt(ctx, seq-1000); err != nil {
			b.Fatal(err)
		}
	}
}
