package store_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/therasync/therasync/model"
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
