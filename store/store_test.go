package store_test

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// newTenant opens a store in a temporary directory with one tenant holding
// every license.
func newTenant(tb testing.TB, now func() time.Time) (*store.Store, *store.Tenant, string) {
	tb.Helper()
	s, err := store.Open(tb.TempDir(), store.Options{Now: now})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	st, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "Praxis Test", Licenses: []string{"sync", "app"}})
	if err != nil {
		tb.Fatalf("CreateTenant: %v", err)
	}
	t, err := s.Tenant(context.Background(), st.ID)
	if err != nil {
		tb.Fatalf("Tenant: %v", err)
	}
	return s, t, key
}

// uid returns the UUID a device would give the row it calls name: devices
// create rows only under UUIDs.
func uid(name string) string {
	h := sha1.Sum([]byte(name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// changes decodes a JSON list of changes and validates them.
func changes(tb testing.TB, js string) []model.Change {
	tb.Helper()
	var raw []model.RawChange
	if err := json.Unmarshal([]byte(js), &raw); err != nil {
		tb.Fatalf("decode %s: %v", js, err)
	}
	out := make([]model.Change, len(raw))
	for i, rc := range raw {
		c, err := rc.Validate(i)
		if err != nil {
			tb.Fatalf("Validate(%s) = %v", js, err)
		}
		out[i] = c
	}
	return out
}

func apply(tb testing.TB, t *store.Tenant, id, js string) (store.Result, error) {
	tb.Helper()
	return t.Apply(context.Background(), store.Batch{ID: id, Origin: store.OriginPractice, Changes: changes(tb, js)})
}

func mustApply(tb testing.TB, t *store.Tenant, id, js string) store.Result {
	tb.Helper()
	res, err := apply(tb, t, id, js)
	if err != nil {
		tb.Fatalf("Apply(%s) = %v", js, err)
	}
	return res
}

func TestAuthenticate(t *testing.T) {
	s, tn, key := newTenant(t, nil)
	ctx := context.Background()
	got, st, err := s.Authenticate(ctx, key)
	if err != nil || got != tn {
		t.Fatalf("Authenticate(key) = %v, %v; want the tenant", got, err)
	}
	if st.TZ != store.DefaultTZ || !st.HasLicense(store.LicenseSync) || !st.HasLicense(store.LicenseApp) {
		t.Errorf("Settings = %+v; want default tz and both licenses", st)
	}
	for _, bad := range []string{"", key + "x", tn.ID() + ".", "nosuchtenant.abc", "../x.y", tn.ID()} {
		if _, _, err := s.Authenticate(ctx, bad); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("Authenticate(%q) = %v; want ErrUnauthorized", bad, err)
		}
	}
}

func TestCreateTenantRefusesBadInput(t *testing.T) {
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, nt := range []store.NewTenant{
		{Name: ""},
		{Name: "x", TZ: "Mars/Olympus"},
		{Name: "x", Licenses: []string{"gold"}},
	} {
		if _, _, err := s.CreateTenant(context.Background(), nt); err == nil {
			t.Errorf("CreateTenant(%+v) = nil error; want an error", nt)
		}
	}
	ids, err := s.TenantIDs()
	if err != nil || len(ids) != 0 {
		t.Errorf("TenantIDs() = %v, %v; want none", ids, err)
	}
}

func TestApplyMergesAndLogs(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	r1 := mustApply(t, tn, "b1", `[
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"Anna","last_name":"Schmidt","owner_id":"a1"}},
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"Dr. A","role":"member","app_enabled":true,"practice_ids":["pr1"]}}
	]`)
	if r1.Seq != 2 || len(r1.Changes) != 2 || r1.Changes[0].Seq != 1 || r1.Changes[1].Seq != 2 {
		t.Fatalf("first batch = %+v; want seqs 1 and 2", r1)
	}
	r2 := mustApply(t, tn, "b2", `[{"entity":"profiles","op":"upsert","id":"p1","fields":{"phone":"0301234","last_name":null}}]`)
	if r2.Seq != 3 {
		t.Fatalf("second batch seq = %d; want 3", r2.Seq)
	}
	row, err := tn.Row(ctx, model.Profiles, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if row["first_name"] != "Anna" || row["phone"] != "0301234" || row["last_name"] != nil || row["owner_id"] != "a1" {
		t.Errorf("Row(p1) = %v; want merged fields", row)
	}
	acc, err := tn.Row(ctx, model.Accounts, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if acc["app_enabled"] != true || !reflect.DeepEqual(acc["practice_ids"], []string{"pr1"}) {
		t.Errorf("Row(a1) = %v; want typed bool and list", acc)
	}
	mustApply(t, tn, "b3", `[{"entity":"profiles","op":"delete","id":"p1"}, {"entity":"profiles","op":"delete","id":"never-existed"}]`)
	if _, err := tn.Row(ctx, model.Profiles, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Row(p1) after delete = %v; want ErrNotFound", err)
	}
	cs, latest, err := tn.Changes(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if latest != 4 || len(cs) != 4 {
		t.Fatalf("Changes(0) = %d changes, latest %d; want 4, 4 (a delete of a missing row logs nothing)", len(cs), latest)
	}
	for i, c := range cs {
		if c.Seq != int64(i+1) {
			t.Errorf("Changes(0)[%d].Seq = %d; want %d", i, c.Seq, i+1)
		}
	}
	if cs[3].Op != model.OpDelete || cs[3].ID != "p1" || cs[3].Fields != nil {
		t.Errorf("Changes(0)[3] = %+v; want delete of p1", cs[3])
	}
	if cs[0].Fields["first_name"] != "Anna" {
		t.Errorf("Changes(0)[0].Fields = %v; want first_name Anna", cs[0].Fields)
	}
	page, _, err := tn.Changes(ctx, 1, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 2 || page[1].Seq != 3 {
		t.Errorf("Changes(1, limit 2) = %+v, %v; want seqs 2, 3", page, err)
	}
}

func TestApplyRepeatedBatch(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	js := `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`
	r1 := mustApply(t, tn, "same", js)
	r2 := mustApply(t, tn, "same", js)
	if !r2.Repeated || r2.Seq != r1.Seq || len(r2.Changes) != 0 {
		t.Errorf("repeated Apply = %+v; want Repeated with seq %d", r2, r1.Seq)
	}
	_, err := apply(t, tn, "same", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Nord"}}]`)
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("Apply(reused batch_id, other changes) = %v; want ErrConflict", err)
	}
	if seq, _ := tn.Seq(context.Background()); seq != 1 {
		t.Errorf("Seq() = %d; want 1", seq)
	}
}

func TestApplyShares(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	_, tn, _ := newTenant(t, func() time.Time { return now })
	ctx := context.Background()
	r := mustApply(t, tn, "s1", `[{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p1","account_id":"*","shared_by":"a1"}}]`)
	if got := r.Changes[0].Fields["shared_at"]; got != "2026-03-01T10:00:00Z" {
		t.Errorf("shared_at = %v; want the acceptance time", got)
	}
	tests := []struct {
		name string
		js   string
		want error
	}{
		{"change", `[{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"account_id":"a2"}}]`, model.ErrForbidden},
		{"delete", `[{"entity":"profile_shares","op":"delete","id":"sh1"}]`, model.ErrForbidden},
		{"incomplete", `[{"entity":"profile_shares","op":"upsert","id":"sh2","fields":{"profile_id":"p1"}}]`, model.ErrInvalid},
		{"identical", `[{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"account_id":"*","profile_id":"p1"}}]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := apply(t, tn, "", tt.js)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Apply(%s) = %v; want %v", tt.js, err, tt.want)
			}
		})
	}
	if seq, _ := tn.Seq(ctx); seq != 1 {
		t.Errorf("Seq() = %d; want 1: no refused or identical share change is logged", seq)
	}
	row, _ := tn.Row(ctx, model.ProfileShares, "sh1")
	if row["account_id"] != "*" {
		t.Errorf("share account_id = %v; want *", row["account_id"])
	}
	// A shared profile is deleted by nobody: its share would name nothing.
	if _, err := apply(t, tn, "", `[{"entity":"profiles","op":"delete","id":"p1"}]`); !errors.Is(err, model.ErrForbidden) || !strings.Contains(err.Error(), "erase") {
		t.Errorf("practice delete of a shared profile = %v; want forbidden, naming erasure", err)
	}
	if seq, _ := tn.Seq(ctx); seq != 1 {
		t.Errorf("Seq() = %d after a refused delete; want 1", seq)
	}
}

// TestDeviceShareNamesItsSharer: a device's new share is stored with its
// account as shared_by when the device leaves it out.
func TestDeviceShareNamesItsSharer(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"ad","fields":{"role":"admin","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"m1"}}
	]`)
	sh1, sh2 := uid("share-1"), uid("share-2")
	res := devicePush(t, tn, model.Viewer{ID: "m1", Role: model.RoleMember}, "phone-m1", []string{"u1"},
		`[{"entity":"profile_shares","op":"upsert","id":"`+sh1+`","fields":{"profile_id":"p1","account_id":"*"}}]`)
	res2 := devicePush(t, tn, model.Viewer{ID: "ad", Role: model.RoleAdmin}, "phone-ad", []string{"u1"},
		`[{"entity":"profile_shares","op":"upsert","id":"`+sh2+`","fields":{"profile_id":"p1","account_id":"m2","shared_by":"m1"}}]`)
	if len(res.Refused)+len(res2.Refused) != 0 {
		t.Fatalf("refused %v %v", res.Refused, res2.Refused)
	}
	for id, want := range map[string]string{sh1: "m1", sh2: "m1"} {
		row, _ := tn.Row(ctx, model.ProfileShares, id)
		if row["shared_by"] != want {
			t.Errorf("share %s shared_by = %v; want %s", id, row["shared_by"], want)
		}
	}
	if got := res.Changes[0].Fields["shared_by"]; got != "m1" {
		t.Errorf("logged share = %v; want shared_by m1 in the change log too", res.Changes[0].Fields)
	}
}

func TestApplyTransactionReferences(t *testing.T) {
	now := time.Date(2026, 12, 31, 23, 30, 0, 0, time.UTC) // already 2027 in Berlin
	_, tn, _ := newTenant(t, func() time.Time { return now })
	ctx := context.Background()
	mustApply(t, tn, "accounts", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"Anna"}},
		{"entity":"accounts","op":"upsert","id":"a2","fields":{"name":"Ben"}}
	]`)
	r := mustApply(t, tn, "t1", `[
		{"entity":"transactions","op":"upsert","id":"x1","fields":{"account_id":"a1","kind":"invoice","amount_cents":5000}},
		{"entity":"transactions","op":"upsert","id":"x2","fields":{"account_id":"a1","kind":"payment","amount_cents":5000}},
		{"entity":"transactions","op":"upsert","id":"x3","fields":{"account_id":"a2","kind":"expense","amount_cents":-100}},
		{"entity":"transactions","op":"upsert","id":"x1","fields":{"status":"paid"}}
	]`)
	want := []string{"2027-1-a1", "2027-2-a1", "2027-1-a2"}
	for i, w := range want {
		if got := r.Changes[i].Fields["reference"]; got != w {
			t.Errorf("reference of change %d = %v; want %s", i, got, w)
		}
	}
	if _, ok := r.Changes[3].Fields["reference"]; ok {
		t.Errorf("update of x1 logged a reference: %v", r.Changes[3].Fields)
	}
	row, _ := tn.Row(ctx, model.Transactions, "x1")
	if row["reference"] != "2027-1-a1" || row["status"] != "paid" {
		t.Errorf("Row(x1) = %v; want reference kept and status paid", row)
	}
	for _, js := range []string{
		`[{"entity":"transactions","op":"upsert","id":"x9","fields":{"kind":"invoice"}}]`,
		`[{"entity":"transactions","op":"upsert","id":"x9","fields":{"account_id":"a1","reference":"2027-9-a1"}}]`,
		`[{"entity":"transactions","op":"upsert","id":"x1","fields":{"reference":"2027-5-a1"}}]`,
		`[{"entity":"transactions","op":"upsert","id":"x9","fields":{"account_id":"ghost","kind":"invoice"}}]`,
	} {
		if _, err := apply(t, tn, "", js); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("Apply(%s) = %v; want ErrInvalid", js, err)
		}
	}
	// Re-sending the stored reference unchanged is harmless.
	mustApply(t, tn, "", `[{"entity":"transactions","op":"upsert","id":"x1","fields":{"reference":"2027-1-a1","status":"billed"}}]`)
}

func TestApplyBatchIsAtomic(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	mustApply(t, tn, "", `[{"entity":"profile_shares","op":"upsert","id":"sh1","fields":{"profile_id":"p1","account_id":"a1"}}]`)
	_, err := apply(t, tn, "b", `[
		{"entity":"profiles","op":"upsert","id":"p2","fields":{"first_name":"Ben"}},
		{"entity":"profile_shares","op":"delete","id":"sh1"}
	]`)
	var fe *model.ForbiddenError
	if !errors.As(err, &fe) || fe.Index != 1 {
		t.Fatalf("Apply = %v; want ForbiddenError at index 1", err)
	}
	if _, err := tn.Row(context.Background(), model.Profiles, "p2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Row(p2) = %v; want ErrNotFound: a refused batch applies nothing", err)
	}
	// The refused batch's id is free for a corrected retry.
	mustApply(t, tn, "b", `[{"entity":"profiles","op":"upsert","id":"p2","fields":{"first_name":"Ben"}}]`)
}

// TestConcurrentWriters pushes from many goroutines at once: every batch
// commits, the log has no gap and no "database is locked" reaches a caller.
func TestConcurrentWriters(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	const writers, batches, size = 16, 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				cs := make([]model.Change, size)
				for i := range cs {
					cs[i] = model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: fmt.Sprintf("s-%d-%d-%d", w, b, i),
						Fields: map[string]any{"status": "planned", "duration_min": int64(30)}}
				}
				if _, err := tn.Apply(context.Background(), store.Batch{ID: fmt.Sprintf("w%d-b%d", w, b), Origin: store.OriginPractice, Changes: cs}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Apply = %v", err)
	}
	cs, latest, err := tn.Changes(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(writers * batches * size); latest != want || int64(len(cs)) != want {
		t.Fatalf("Changes = %d, latest %d; want %d", len(cs), latest, want)
	}
	for i, c := range cs {
		if c.Seq != int64(i+1) {
			t.Fatalf("Changes[%d].Seq = %d; want %d (no gaps)", i, c.Seq, i+1)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, key, err := s.CreateTenant(context.Background(), store.NewTenant{Name: "P", Licenses: []string{"sync"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := s.Tenant(context.Background(), st.ID)
	mustApply(t, tn, "b", `[{"entity":"practices","op":"upsert","id":"pr1","fields":{"name":"Mitte"}}]`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Apply(context.Background(), store.Batch{Changes: changes(t, `[{"entity":"practices","op":"delete","id":"pr1"}]`)}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Apply after Close = %v; want ErrClosed", err)
	}
	s2, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	tn2, _, err := s2.Authenticate(context.Background(), key)
	if err != nil {
		t.Fatalf("Authenticate after reopen = %v", err)
	}
	if row, err := tn2.Row(context.Background(), model.Practices, "pr1"); err != nil || row["name"] != "Mitte" {
		t.Errorf("Row(pr1) after reopen = %v, %v; want Mitte", row, err)
	}
	if ids, _ := s2.TenantIDs(); len(ids) != 1 || ids[0] != st.ID {
		t.Errorf("TenantIDs() = %v; want [%s]", ids, st.ID)
	}
}

// TestReadEmptyLog: a tenant without a change yet reads its history (a
// join of the empty log with log_meta once answered NULL).
func TestReadEmptyLog(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts, _, err := st.CreateTenant(context.Background(), store.NewTenant{Name: "Q", Licenses: []string{"sync"}})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := st.Tenant(context.Background(), ts.ID)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tn.Read(context.Background(), 0, 500)
	if err != nil || len(r.History) != 32 || r.Latest != 0 {
		t.Fatalf("Read of an empty log = %+v, %v; want seq 0 and its history", r, err)
	}
}

// TestAccountDefaultsToMember: an account pushed without a role (or with a
// null one) is a member, and its enabled app gets its shard build; an
// existing account keeps its role when a change leaves it out, and loses
// it to an explicit null.
func TestAccountDefaultsToMember(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	r := mustApply(t, tn, "new", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"email":"anna@example.org","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"a2","fields":{"role":null,"name":"Ben"}},
		{"entity":"accounts","op":"upsert","id":"a3","fields":{"role":"secretary"}}
	]`)
	for id, want := range map[string]any{"a1": "member", "a2": "member", "a3": "secretary"} {
		if row, _ := tn.Row(ctx, model.Accounts, id); row["role"] != want {
			t.Errorf("role of %s = %v; want %v", id, row["role"], want)
		}
	}
	if r.Changes[0].Fields["role"] != "member" {
		t.Errorf("logged account = %v; want role member in the change log too", r.Changes[0].Fields)
	}
	if len(r.BuildRequests) != 1 || r.BuildRequests[0] != "a1" {
		t.Errorf("builds requested = %v; want a1's", r.BuildRequests)
	}
	mustApply(t, tn, "keep", `[{"entity":"accounts","op":"upsert","id":"a3","fields":{"name":"Sabine"}}]`)
	mustApply(t, tn, "remove", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":null}}]`)
	if row, _ := tn.Row(ctx, model.Accounts, "a3"); row["role"] != "secretary" {
		t.Errorf("role of a3 after a change without role = %v; want secretary kept", row["role"])
	}
	if row, _ := tn.Row(ctx, model.Accounts, "a1"); row["role"] != nil {
		t.Errorf("role of a1 after role null = %v; want removed", row["role"])
	}
}

// TestActivationsInOneBatch: one batch that starts one account's app
// access and ends another's records both (an activation, and none).
func TestActivationsInOneBatch(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"a2","fields":{"email":"b@x.de","app_enabled":true}}]`)
	mustApply(t, tn, "both", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"email":"a@x.de","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"a2","fields":{"app_enabled":false}},
		{"entity":"accounts","op":"upsert","id":"a3","fields":{"email":"c@x.de","app_enabled":true}}
	]`)
	for id, want := range map[string]bool{"a1": true, "a2": false, "a3": true} {
		if got, err := tn.ActivationPending(ctx, id); err != nil || got != want {
			t.Errorf("ActivationPending(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
}
