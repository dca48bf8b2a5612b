package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
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
		{"entity":"profiles","op":"upsert","id":"0821242e-7270-d41b-0aaa-8b7f03751b83","fields":{"owner_id":"m1","first_name":"Erika"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"protocol":"überschrieben"}},
		{"entity":"transactions","op":"upsert","id":"e2a5b31f-4fd3-e4c6-8710-647300a54457","fields":{"account_id":"m1","kind":"invoice","amount_cents":100}},
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
		{"entity":"profiles","op":"upsert","id":"0821242e-7270-d41b-0aaa-8b7f03751b83","fields":{"owner_id":"m1","first_name":"Erika"}},
		{"entity":"sessions","op":"upsert","id":"s-m2","fields":{"protocol":"überschrieben"}},
		{"entity":"transactions","op":"upsert","id":"e2a5b31f-4fd3-e4c6-8710-647300a54457","fields":{"account_id":"m1","kind":"invoice","amount_cents":100}},
		{"entity":"profiles","op":"upsert","id":"p-m2","fields":{"phone":"1"}}
	]`)
	if res.Seq != seq || len(res.Changes) != 0 || len(res.Refused) != 2 {
		t.Errorf("retry = seq %d, %d changes, refused %v; want seq %d, nothing applied again, the same two refused", res.Seq, len(res.Changes), res.Refused, seq)
	}
	// A mutation id is the device's: another device may use the same one.
	res = devicePush(t, tn, m1, "phone-2", []string{"u1"}, `[{"entity":"profiles","op":"upsert","id":"de16b3b6-9d5d-b7c2-bbea-f6aaf761f8df","fields":{"owner_id":"m1"}}]`)
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

// TestDevicePushNeedsCurrentAccess: a device's push is applied only while
// the token it presents is the device's current one and the device may
// sync, decided in the writing transaction: after a logout, a newer login,
// a revocation, a disabled account or a role change, nothing of it is
// applied.
func TestDevicePushNeedsCurrentAccess(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}}]`)
	m1 := model.Viewer{ID: "m1", Role: model.RoleMember}
	n := 0
	push := func(device string, token []byte, v model.Viewer) error {
		n++
		_, err := tn.Apply(ctx, store.Batch{Origin: "device:" + device, Writer: &v, DeviceID: device, TokenHash: token,
			MutationIDs: []string{fmt.Sprint("mut-", n)}, Changes: changes(t, fmt.Sprintf(`[{"entity":"profiles","op":"upsert","id":%q,"fields":{"owner_id":"m1"}}]`, uid(fmt.Sprint("p", n))))})
		return err
	}
	steps := []struct {
		name, device string
		before       func() []byte // returns the token the push presents
		v            model.Viewer
		want         error
	}{
		{"a current token", "d1", func() []byte { return loginDevice(t, tn, "m1", "d1") }, m1, nil},
		{"no token", "d2", func() []byte { loginDevice(t, tn, "m1", "d2"); return nil }, m1, store.ErrUnauthorized},
		{"a token replaced by a newer login", "d3", func() []byte {
			old := loginDevice(t, tn, "m1", "d3")
			loginDevice(t, tn, "m1", "d3")
			return old
		}, m1, store.ErrUnauthorized},
		{"after a logout", "d4", func() []byte {
			tok := loginDevice(t, tn, "m1", "d4")
			if err := tn.LogoutDevice(ctx, "d4"); err != nil {
				t.Fatal(err)
			}
			return tok
		}, m1, store.ErrUnauthorized},
		{"a revoked device", "d5", func() []byte {
			tok := loginDevice(t, tn, "m1", "d5")
			if _, err := tn.RevokeDevice(ctx, "d5", false, "practice", ""); err != nil {
				t.Fatal(err)
			}
			return tok
		}, m1, store.ErrRevoked},
		{"a role the account no longer has", "d6", func() []byte { return loginDevice(t, tn, "m1", "d6") },
			model.Viewer{ID: "m1", Role: model.RoleAdmin}, store.ErrRoleChanged},
		{"a disabled account", "d7", func() []byte {
			tok := loginDevice(t, tn, "m1", "d7")
			mustApply(t, tn, "disable", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"app_enabled":null}}]`)
			return tok
		}, m1, store.ErrRevoked},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			tok := st.before()
			seq, _ := tn.Seq(ctx)
			err := push(st.device, tok, st.v)
			if !errors.Is(err, st.want) || st.want == nil && err != nil {
				t.Fatalf("push = %v; want %v", err, st.want)
			}
			after, _ := tn.Seq(ctx)
			if st.want != nil && after != seq {
				t.Errorf("a refused push moved the seq %d → %d", seq, after)
			}
		})
	}
}

// TestAccessChangesOfEveryOp: whatever op and value end (or start) an
// account's app access, the batch reports it and writes its audit line.
func TestAccessChangesOfEveryOp(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	steps := []struct {
		change string
		want   []store.AccessChange
	}{
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"role":"member","app_enabled":true}}`, []store.AccessChange{{AccountID: "a", Enabled: true, Reason: "app_enabled true"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"app_enabled":false}}`, []store.AccessChange{{AccountID: "a", Reason: "app_enabled false"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"app_enabled":true}}`, []store.AccessChange{{AccountID: "a", Enabled: true, Reason: "app_enabled true"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"app_enabled":null}}`, []store.AccessChange{{AccountID: "a", Reason: "app_enabled null"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"app_enabled":true}}`, []store.AccessChange{{AccountID: "a", Enabled: true, Reason: "app_enabled true"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"role":null}}`, []store.AccessChange{{AccountID: "a", Reason: "role removed"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"role":"admin"}}`, []store.AccessChange{{AccountID: "a", Enabled: true, Reason: "role set"}}},
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"role":"member"}}`, nil}, // a role change keeps the access
		{`{"entity":"accounts","op":"upsert","id":"a","fields":{"name":"A"}}`, nil},
		{`{"entity":"accounts","op":"delete","id":"a"}`, []store.AccessChange{{AccountID: "a", Reason: "account deleted"}}},
		{`{"entity":"accounts","op":"delete","id":"a"}`, nil}, // nothing left to end
		{`{"entity":"accounts","op":"upsert","id":"b","fields":{"app_enabled":false}}`, nil},
	}
	for i, st := range steps {
		res := mustApply(t, tn, fmt.Sprint("s", i), "["+st.change+"]")
		if !reflect.DeepEqual(res.AccessChanges, st.want) {
			t.Errorf("%s: access changes %+v; want %+v", st.change, res.AccessChanges, st.want)
		}
	}
	log, err := tn.AuditLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		got = append(got, e.Actor+" "+e.Action+" "+e.Detail)
	}
	want := []string{"practice app_enabled app_enabled true", "practice app_disabled app_enabled false", "practice app_enabled app_enabled true",
		"practice app_disabled app_enabled null", "practice app_enabled app_enabled true", "practice app_disabled role removed",
		"practice app_enabled role set", "practice app_disabled account deleted"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("audit = %q; want %q", got, want)
	}
}

// TestDevicesSaySuspended: the devices list tells a device that cannot
// sync because of its account or the licenses (suspended, and why) from
// an active one.
func TestDevicesSaySuspended(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}}]`)
	loginDevice(t, tn, "m1", "phone-1")
	state := func() (string, string) {
		t.Helper()
		ds, err := tn.Devices(ctx, "m1")
		if err != nil || len(ds) != 1 {
			t.Fatalf("Devices = %v, %v", ds, err)
		}
		return ds[0].State, ds[0].Blocked
	}
	if s, b := state(); s != "active" || b != "" {
		t.Errorf("state = %s %s; want active", s, b)
	}
	mustApply(t, tn, "off", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"app_enabled":false}}]`)
	if s, b := state(); s != "suspended" || b != "app_disabled" {
		t.Errorf("state with the app disabled = %s %s; want suspended app_disabled", s, b)
	}
	mustApply(t, tn, "on", `[{"entity":"accounts","op":"upsert","id":"m1","fields":{"app_enabled":true}}]`)
	if _, _, err := tn.SetSettings(ctx, store.SettingsChange{Licenses: []string{store.LicenseSync}}, "test", ""); err != nil {
		t.Fatal(err)
	}
	if s, b := state(); s != "suspended" || b != "license_missing" {
		t.Errorf("state without the app license = %s %s; want suspended license_missing", s, b)
	}
	if _, _, err := tn.SetSettings(ctx, store.SettingsChange{Licenses: []string{store.LicenseSync, store.LicenseApp}}, "test", ""); err != nil {
		t.Fatal(err)
	}
	mustApply(t, tn, "gone", `[{"entity":"accounts","op":"delete","id":"m1"}]`)
	if s, b := state(); s != "suspended" || b != "account_deleted" {
		t.Errorf("state of a deleted account's device = %s %s; want suspended account_deleted", s, b)
	}
	if _, err := tn.RevokeDevice(ctx, "phone-1", false, "test", ""); err != nil {
		t.Fatal(err)
	}
	if s, b := state(); s != "revoked" || b != "" {
		t.Errorf("state of a revoked device = %s %s; want revoked", s, b)
	}
}
