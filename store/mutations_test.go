package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// loginDevice logs the account in on the device and returns the hash of
// its token, as a device's push presents it.
func loginDevice(tb testing.TB, tn *store.Tenant, account, device string) []byte {
	tb.Helper()
	tok, _, err := tn.LoginDevice(context.Background(), account, device, device, "test")
	if err != nil {
		tb.Fatalf("LoginDevice(%s, %s) = %v", account, device, err)
	}
	_, secret, _ := strings.Cut(tok, ".")
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func devicePush(tb testing.TB, tn *store.Tenant, v model.Viewer, device string, ids []string, js string) store.Result {
	tb.Helper()
	res, err := tn.Apply(context.Background(), store.Batch{Origin: "device:" + device, Writer: &v, DeviceID: device, MutationIDs: ids, Changes: changes(tb, js),
		TokenHash: loginDevice(tb, tn, v.ID, device)})
	if err != nil {
		tb.Fatalf("Apply(device push) = %v", err)
	}
	return res
}

// TestDeviceMutations: each change of a device's push stands alone: the
// refused ones change nothing and block none of the others; a mutation id
// is applied once.
func TestDeviceMutations(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"role":"secretary","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p-m2","fields":{"owner_id":"m2"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"therapist_id":"m2","protocol":"alt"}}
	]`)
	m1 := model.Viewer{ID: "m1", Role: model.RoleMember}
	res := devicePush(t, tn, m1, "phone-1", []string{"u1", "u2", "u3", "u4"}, `[
		{"entity":"profiles","op":"upsert","id":"p-new","fields":{"owner_id":"m1","first_name":"Erika"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"protocol":"überschrieben"}},
		{"entity":"transactions","op":"upsert","id":"t-new","fields":{"account_id":"m1","kind":"invoice","amount_cents":100}},
		{"entity":"profiles","op":"upsert","id":"p-m2","fields":{"phone":"1"}}
	]`)
	if len(res.Refused) != 2 || !errors.Is(res.Refused[1], model.ErrForbidden) || !errors.Is(res.Refused[3], model.ErrForbidden) {
		t.Fatalf("Refused = %v; want changes 1 and 3 forbidden", res.Refused)
	}
	if len(res.Changes) != 2 || res.Changes[1].Fields["reference"] == nil {
		t.Errorf("logged = %+v; want the profile and the transaction, with its reference", res.Changes)
	}
	if row, _ := tn.Row(ctx, model.Sessions, "s-m2"); row["protocol"] != "alt" {
		t.Errorf("a refused change changed the row: %v", row)
	}
	seq := res.Seq
	// A retry of the same mutations: applied ones once, refused ones again.
	res = devicePush(t, tn, m1, "phone-1", []string{"u1", "u2", "u3", "u4"}, `[
		{"entity":"profiles","op":"upsert","id":"p-new","fields":{"owner_id":"m1","first_name":"Erika"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"protocol":"überschrieben"}},
		{"entity":"transactions","op":"upsert","id":"t-new","fields":{"account_id":"m1","kind":"invoice","amount_cents":100}},
		{"entity":"profiles","op":"upsert","id":"p-m2","fields":{"phone":"1"}}
	]`)
	if res.Seq != seq || len(res.Changes) != 0 || len(res.Refused) != 2 {
		t.Errorf("retry = seq %d, %d changes, refused %v; want seq %d, nothing applied again, the same two refused", res.Seq, len(res.Changes), res.Refused, seq)
	}
	// A mutation id is the device's: another device may use the same one.
	res = devicePush(t, tn, m1, "phone-2", []string{"u1"}, `[{"entity":"profiles","op":"upsert","id":"p-new2","fields":{"owner_id":"m1"}}]`)
	if len(res.Changes) != 1 {
		t.Errorf("another device's u1 = %+v; want applied", res)
	}
	s1 := model.Viewer{ID: "s1", Role: model.RoleSecretary}
	res = devicePush(t, tn, s1, "tablet", []string{"x1", "x2"}, `[
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"protocol":"x"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"status":"cancelled"}}
	]`)
	if len(res.Refused) != 1 || res.Refused[0] == nil || len(res.Changes) != 1 {
		t.Errorf("secretary push = %+v; want the protocol refused, the status applied", res)
	}
	cs, _, _ := tn.Changes(ctx, 0, 100)
	for _, c := range cs {
		if c.Entity == model.Sessions && c.Fields["protocol"] == "x" {
			t.Errorf("the refused protocol reached the log: %+v", c)
		}
	}
	if _, err := tn.Apply(ctx, store.Batch{Writer: &m1, Changes: changes(t, `[{"entity":"profiles","op":"delete","id":"x"}]`)}); err == nil {
		t.Errorf("a device push without device and mutation ids = nil error")
	}
}
