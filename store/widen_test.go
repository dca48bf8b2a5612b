package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

type rowKey struct{ entity, id string }

// visible returns the rows of the tenant that v sees now (DESIGN §4, by
// model.NewScope over the current link fields).
func visible(tb testing.TB, tn *store.Tenant, v model.Viewer) map[rowKey]bool {
	tb.Helper()
	ctx := context.Background()
	links, _, err := tn.Links(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	scope := model.NewScope(v, links)
	out := map[rowKey]bool{}
	for _, e := range model.Entities() {
		ids, err := tn.RowIDs(ctx, e.Name)
		if err != nil {
			tb.Fatal(err)
		}
		for _, id := range ids {
			r, _ := links.Get(e.Name, id)
			if !model.HasLinks(e.Name) && scope.RuleFor(e.Name).All || model.HasLinks(e.Name) && scope.SeesRow(e.Name, id, r) {
				out[rowKey{e.Name, id}] = true
			}
		}
	}
	return out
}

// TestWriteNeverWidensSight states DESIGN §4's rule as a property: random
// tenants, random device writes by admins, secretaries and members
// (accepted or refused); after every accepted write the writer sees no
// row it did not see before, but for the rows the write itself made.
func TestWriteNeverWidensSight(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { widenProperty(t, seed) })
	}
}

func widenProperty(t *testing.T, seed uint64) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 3))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	members := []string{"m1", "m2", "m3"}
	accounts := append([]string{"a1", "s1"}, members...)
	// Ids that exist, and some that rows name but that do not exist
	// (the practice's data may dangle).
	// New rows of devices have UUIDs; the practice-style ids p9 and
	// sh-x are refused to devices (they could be the practice's next).
	profiles := []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", uid("p-dangling"), uid("p-new1"), uid("p-new2"), "p9"}
	courses := []string{"c1", "c2", "c3", "c-dangling"}
	sessions := []string{"s1", "s2", "s3", "s4", "s5", "s6", uid("s-new"), "s9"}
	seedBatch := `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"role":"secretary","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m2","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m3","fields":{"role":"member","app_enabled":true}}`
	for _, p := range profiles[:8] {
		seedBatch += fmt.Sprintf(`,{"entity":"profiles","op":"upsert","id":%q,"fields":{"owner_id":%q,"last_name":"N"}}`, p, pick(accounts...))
	}
	for i, s := range sessions[:6] {
		seedBatch += fmt.Sprintf(`,{"entity":"sessions","op":"upsert","id":%q,"fields":{"profile_id":%q,"therapist_id":%q,"protocol":"P%d"}}`,
			s, pick(profiles[:9]...), pick(accounts...), i)
	}
	for _, c := range courses[:3] {
		seedBatch += fmt.Sprintf(`,{"entity":"courses","op":"upsert","id":%q,"fields":{"therapist_id":%q,"weekday":1,"capacity":3}}`, c, pick(accounts...))
	}
	for i := range 6 {
		seedBatch += fmt.Sprintf(`,{"entity":"course_members","op":"upsert","id":"cm%d","fields":{"course_id":%q,"profile_id":%q,"units_total":10,"units_used":0}}`,
			i, pick(courses...), pick(profiles[:9]...))
	}
	for i := range 3 {
		seedBatch += fmt.Sprintf(`,{"entity":"profile_shares","op":"upsert","id":"sh%d","fields":{"profile_id":%q,"account_id":%q}}`,
			i, pick(profiles[:9]...), pick(append(members, model.ShareAll)...))
		seedBatch += fmt.Sprintf(`,{"entity":"transactions","op":"upsert","id":"t%d","fields":{"account_id":%q,"profile_id":%q,"kind":"invoice","amount_cents":100}}`,
			i, pick(accounts...), pick(profiles[:9]...))
	}
	mustApply(t, tn, "seed", seedBatch+`]`)

	roles := map[string]string{"a1": model.RoleAdmin, "s1": model.RoleSecretary, "m1": model.RoleMember, "m2": model.RoleMember, "m3": model.RoleMember}
	tokens := map[string][]byte{}
	for _, a := range accounts {
		tokens[a] = loginDevice(t, tn, a, "d-"+a)
	}
	accepted, refused := 0, 0
	for step := range 250 {
		writer := pick(accounts...)
		if r.IntN(3) > 0 {
			writer = pick(members...) // members are the ones the rule is about
		}
		v := model.Viewer{ID: writer, Role: roles[writer]}
		me := func() string {
			if r.IntN(3) > 0 {
				return writer
			}
			return pick(accounts...)
		}
		var f map[string]any
		entity := pick(model.Profiles, model.ProfileShares, model.Sessions, model.Attendances, model.Transactions)
		var id string
		switch entity {
		case model.Profiles:
			id, f = pick(profiles...), map[string]any{"owner_id": me(), "phone": "1"}
		case model.ProfileShares:
			id, f = pick(uid(fmt.Sprint("sh-d", step)), "sh-x"), map[string]any{"profile_id": pick(profiles...), "account_id": pick(append(accounts, model.ShareAll)...)}
		case model.Sessions:
			id, f = pick(sessions...), map[string]any{"profile_id": pick(profiles...), "therapist_id": me()}
			if r.IntN(3) == 0 {
				delete(f, "therapist_id")
			}
		case model.Attendances:
			id, f = uid(fmt.Sprint("at", r.IntN(5))), map[string]any{"course_id": pick(courses...), "profile_id": pick(profiles...), "date": "2026-11-30", "springer": r.IntN(2) == 0}
		case model.Transactions:
			id, f = pick("t0", "t1", "t2", uid(fmt.Sprint("t-d", step))), map[string]any{"account_id": me(), "profile_id": pick(profiles...), "kind": "invoice"}
			if r.IntN(2) == 0 {
				f["session_id"] = pick(sessions...)
				delete(f, "profile_id")
			}
		}
		before := visible(t, tn, v)
		c := model.Change{Entity: entity, Op: model.OpUpsert, ID: id, Fields: f}
		res, err := tn.Apply(ctx, store.Batch{Origin: "device:d-" + writer, Writer: &v, DeviceID: "d-" + writer,
			MutationIDs: []string{fmt.Sprint("mut", step)}, Changes: []model.Change{c}, TokenHash: tokens[writer]})
		if err != nil {
			t.Fatalf("step %d: Apply = %v", step, err)
		}
		if res.Refused[0] != nil {
			refused++
			continue
		}
		accepted++
		wrote := map[rowKey]bool{}
		for _, lc := range res.Changes {
			wrote[rowKey{lc.Entity, lc.ID}] = true
		}
		for k := range visible(t, tn, v) {
			if !before[k] && !wrote[k] {
				t.Fatalf("step %d: %s %s wrote %s %s %v and now sees %s %s, which it did not see before", step, v.Role, v.ID, entity, id, f, k.entity, k.id)
			}
		}
	}
	if accepted < 20 || refused < 20 {
		t.Fatalf("accepted %d, refused %d writes: the workload tests too little", accepted, refused)
	}
}

// TestDeviceCreatesUnderUUIDsOnly: a device cannot take an id the
// practice PC will give its own row (the practice's ids are often
// sequential): a member that pre-created "p2" would own the practice's
// next patient once its push merged into that row, and see its sessions;
// a share pre-created as "sh1" would block the practice's batch that
// creates it. Devices create rows only under UUIDs (DESIGN §3).
func TestDeviceCreatesUnderUUIDsOnly(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	mustApply(t, tn, "seed", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m2","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"role":"secretary","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p-m1","fields":{"owner_id":"m1"}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"Anna"}}
	]`)
	m1 := model.Viewer{ID: "m1", Role: model.RoleMember}
	squats := []struct {
		v      model.Viewer
		change string
	}{
		{m1, `{"entity":"profiles","op":"upsert","id":"p2","fields":{"owner_id":"m1"}}`},
		{m1, `{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p-m1","account_id":"m1"}}`},
		{m1, `{"entity":"transactions","op":"upsert","id":"t1","fields":{"account_id":"m1","kind":"invoice"}}`},
		{model.Viewer{ID: "s1", Role: model.RoleSecretary}, `{"entity":"profiles","op":"upsert","id":"p3","fields":{"first_name":"X"}}`},
		{model.Viewer{ID: "a1", Role: model.RoleAdmin}, `{"entity":"accounts","op":"upsert","id":"m3","fields":{"role":"member"}}`},
	}
	for i, sq := range squats {
		res := devicePush(t, tn, sq.v, "dev-"+sq.v.ID, []string{fmt.Sprint("sq", i)}, "["+sq.change+"]")
		if !errors.Is(res.Refused[0], model.ErrForbidden) {
			t.Errorf("%s creating %s = %v; want forbidden", sq.v.Role, sq.change, res.Refused[0])
		}
	}
	// The practice's own next rows go in as the practice gives them.
	if _, err := apply(t, tn, "later", `[
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"first_name":"Bernd","insurance":"AOK 123"}},
		{"entity":"sessions","op":"upsert","id":"s9","fields":{"profile_id":"p2","therapist_id":"m2","protocol":"Befund von Bernd"}},
		{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p1","account_id":"m2"}}
	]`); err != nil {
		t.Fatalf("the practice's batch = %v", err)
	}
	vis := visible(t, tn, m1)
	for _, k := range []rowKey{{model.Profiles, "p2"}, {model.Sessions, "s9"}} {
		if vis[k] {
			t.Errorf("m1 sees %s %s, the practice's patient and another therapist's session", k.entity, k.id)
		}
	}
	// Under a UUID the member's own new rows are fine.
	res := devicePush(t, tn, m1, "dev-m1", []string{"ok"}, fmt.Sprintf(`[{"entity":"profiles","op":"upsert","id":%q,"fields":{"owner_id":"m1"}}]`, uid("mine")))
	if len(res.Refused) != 0 {
		t.Errorf("a member's profile under a UUID: %v", res.Refused)
	}
}
