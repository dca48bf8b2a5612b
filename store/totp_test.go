package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/therasync/therasync/store"
)

// TestTOTPEnrolmentsOutliveRoles: an enrolment stays listed when its
// account is demoted or deleted, marked as no admin; a first enrolment is
// refused once anyone is enrolled.
func TestTOTPEnrolmentsOutliveRoles(t *testing.T) {
	_, tn, _ := newTenant(t, nil)
	ctx := context.Background()
	if _, err := apply(t, tn, "b1", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin"}},
		{"entity":"accounts","op":"upsert","id":"a2","fields":{"role":"admin"}}]`); err != nil {
		t.Fatal(err)
	}
	if err := tn.SetTOTP(ctx, "a1", []byte("s1"), true); err != nil {
		t.Fatalf("first enrolment: %v", err)
	}
	if err := tn.SetTOTP(ctx, "a2", []byte("s2"), true); !errors.Is(err, store.ErrTOTPEnrolled) {
		t.Fatalf("a second 'first' enrolment = %v; want ErrTOTPEnrolled", err)
	}
	if err := tn.SetTOTP(ctx, "a2", []byte("s2"), false); err != nil {
		t.Fatalf("a further enrolment: %v", err)
	}
	for _, tc := range []struct {
		name, batch string
		want        []store.TOTPEnrolment
	}{
		{"both admins", `[]`, []store.TOTPEnrolment{{"a1", []byte("s1"), true}, {"a2", []byte("s2"), true}}},
		{"a1 demoted", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"member"}}]`,
			[]store.TOTPEnrolment{{"a1", []byte("s1"), false}, {"a2", []byte("s2"), true}}},
		{"a2 deleted", `[{"entity":"accounts","op":"delete","id":"a2"}]`,
			[]store.TOTPEnrolment{{"a1", []byte("s1"), false}, {"a2", []byte("s2"), false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.batch != `[]` {
				if _, err := apply(t, tn, tc.name, tc.batch); err != nil {
					t.Fatal(err)
				}
			}
			got, err := tn.TOTPEnrolments(ctx)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("TOTPEnrolments = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestAuditBatch: a batch lands in order, with the given times kept and
// zero times set to now.
func TestAuditBatch(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	_, tn, _ := newTenant(t, func() time.Time { return now })
	ctx := context.Background()
	at := now.Add(-time.Minute)
	err := tn.AuditBatch(ctx, []store.AuditEntry{
		{At: at, Actor: "device", AccountID: "m1", DeviceID: "d1", Action: "login_failed", Detail: "invalid_code ×3", Addr: "10.0.0.1"},
		{Actor: "system", Action: "audit_dropped", Detail: "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tn.AuditLog(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].At.Equal(at) || got[0].Detail != "invalid_code ×3" || got[0].Addr != "10.0.0.1" ||
		!got[1].At.Equal(now) || got[1].Action != "audit_dropped" || got[1].AccountID != "" {
		t.Errorf("audit log = %+v", got)
	}
	if err := tn.AuditBatch(ctx, nil); err != nil {
		t.Errorf("an empty batch: %v", err)
	}
}
