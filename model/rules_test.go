package model_test

import (
	"errors"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
)

// countRows is mapRows that also counts (model.CheckInRows).
type countRows struct{ mapRows }

func (m countRows) Count(entity string, match map[string]any) (int64, error) {
	var n int64
	for _, f := range m.mapRows[entity] {
		ok := true
		for k, v := range match {
			ok = ok && f[k] == v
		}
		if ok {
			n++
		}
	}
	return n, nil
}

var ruleNow = time.Date(2027, 1, 1, 0, 30, 0, 0, time.UTC)

func TestShareWrite(t *testing.T) {
	rows := mapRows{model.ProfileShares: {"sh1": {"profile_id": "p1", "account_id": "m2", "shared_by": nil, "shared_at": "2026-01-01T00:00:00Z"}}}
	up := func(id string, f map[string]any) model.Change {
		return model.Change{Entity: model.ProfileShares, Op: model.OpUpsert, ID: id, Fields: f}
	}
	given := map[string]any{"profile_id": "p1", "account_id": "m3"}
	c, skip, err := model.ShareWrite(0, up("sh2", given), rows, ruleNow)
	if err != nil || skip || c.Fields["shared_at"] != "2027-01-01T00:30:00Z" || given["shared_at"] != nil {
		t.Errorf("new share = %v, %v, %v; want stamped with shared_at, the given fields untouched", c.Fields, skip, err)
	}
	if _, _, err := model.ShareWrite(0, up("sh3", map[string]any{"profile_id": "p1"}), rows, ruleNow); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("a share without account_id = %v; want invalid", err)
	}
	if _, skip, err := model.ShareWrite(0, up("sh1", map[string]any{"account_id": "m2"}), rows, ruleNow); err != nil || !skip {
		t.Errorf("a repeated share = %v, %v; want skipped", skip, err)
	}
	for name, c := range map[string]model.Change{
		"changed": up("sh1", map[string]any{"account_id": "m3"}),
		"deleted": {Entity: model.ProfileShares, Op: model.OpDelete, ID: "sh1"},
	} {
		if _, _, err := model.ShareWrite(0, c, rows, ruleNow); !errors.Is(err, model.ErrForbidden) {
			t.Errorf("a share %s = %v; want forbidden", name, err)
		}
	}
}

func TestAssignReference(t *testing.T) {
	rows := mapRows{
		model.Transactions: {"x1": {"reference": "2026-4-a1", "account_id": "a1"}},
		model.Accounts:     {"a1": {"name": "Anna"}},
	}
	counted := map[string]int64{}
	next := func(account string, year int) (int64, error) {
		counted[account]++
		return counted[account], nil
	}
	up := func(id string, f map[string]any) model.Change {
		return model.Change{Entity: model.Transactions, Op: model.OpUpsert, ID: id, Fields: f}
	}
	c, err := model.AssignReference(0, up("x2", map[string]any{"account_id": "a1"}), rows, ruleNow, next)
	if err != nil || c.Fields["reference"] != "2027-1-a1" {
		t.Errorf("new transaction = %v, %v; want reference 2027-1-a1", c.Fields, err)
	}
	c, err = model.AssignReference(0, up("x1", map[string]any{"reference": "2026-4-a1", "status": "paid"}), rows, ruleNow, next)
	if _, ok := c.Fields["reference"]; err != nil || ok || c.Fields["status"] != "paid" {
		t.Errorf("the current reference repeated = %v, %v; want it dropped", c.Fields, err)
	}
	for name, c := range map[string]model.Change{
		"a reference set on a new transaction": up("x3", map[string]any{"account_id": "a1", "reference": "2027-9-a1"}),
		"a reference changed":                  up("x1", map[string]any{"reference": "2027-9-a1"}),
		"a new transaction without account":    up("x4", map[string]any{"status": "paid"}),
		"a new transaction of no account":      up("x5", map[string]any{"account_id": "ghost"}),
	} {
		if _, err := model.AssignReference(0, c, rows, ruleNow, next); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s = %v; want invalid", name, err)
		}
	}
	if counted["a1"] != 1 || counted["ghost"] != 0 {
		t.Errorf("counted %v references; want 1 of a1 and none of ghost", counted)
	}
}

func TestAppAccessChange(t *testing.T) {
	on := model.AppAccess{Exists: true, Enabled: true, Role: model.RoleMember}
	up := func(f map[string]any) model.Change {
		return model.Change{Entity: model.Accounts, Op: model.OpUpsert, ID: "a1", Fields: f}
	}
	tests := []struct {
		name          string
		c             model.Change
		before, after model.AppAccess
		want          model.AccessChange
	}{
		{"enabled", up(map[string]any{"app_enabled": true}), model.AppAccess{Exists: true, Role: model.RoleMember}, on,
			model.AccessChange{Changed: true, Enabled: true, Reason: "app_enabled true", Build: true}},
		{"disabled", up(map[string]any{"app_enabled": false}), on, model.AppAccess{Exists: true, Role: model.RoleMember},
			model.AccessChange{Changed: true, Reason: "app_enabled false"}},
		{"nulled", up(map[string]any{"app_enabled": nil}), on, model.AppAccess{Exists: true, Role: model.RoleMember},
			model.AccessChange{Changed: true, Reason: "app_enabled null"}},
		{"role removed", up(map[string]any{"role": nil}), on, model.AppAccess{Exists: true, Enabled: true},
			model.AccessChange{Changed: true, Reason: "role removed"}},
		{"role set", up(map[string]any{"role": "member"}), model.AppAccess{Exists: true, Enabled: true}, on,
			model.AccessChange{Changed: true, Enabled: true, Reason: "role set", Build: true}},
		{"role changed while on", up(map[string]any{"role": "admin"}), on, model.AppAccess{Exists: true, Enabled: true, Role: model.RoleAdmin},
			model.AccessChange{Build: true}},
		{"role repeated", up(map[string]any{"role": "member"}), on, on, model.AccessChange{}},
		{"deleted", model.Change{Entity: model.Accounts, Op: model.OpDelete, ID: "a1"}, on, model.AppAccess{},
			model.AccessChange{Changed: true, Reason: "account deleted"}},
	}
	for _, tt := range tests {
		if !model.SetsAppAccess(tt.c) {
			t.Errorf("%s: SetsAppAccess = false", tt.name)
		}
		if got := model.AppAccessChange(tt.c, tt.before, tt.after); got != tt.want {
			t.Errorf("%s: AppAccessChange = %+v; want %+v", tt.name, got, tt.want)
		}
	}
	if model.SetsAppAccess(up(map[string]any{"name": "x"})) {
		t.Errorf("a name change sets the app access")
	}
}

func TestDeviceMaySync(t *testing.T) {
	ok := model.DeviceFacts{TokenHash: []byte("t"), Presented: []byte("t"), Licenses: []string{"app", "sync"},
		Account: model.AppAccess{Exists: true, Enabled: true, Role: model.RoleMember}}
	with := func(f func(*model.DeviceFacts)) model.DeviceFacts { d := ok; f(&d); return d }
	tests := []struct {
		name    string
		f       model.DeviceFacts
		want    model.SyncDenial
		license string
	}{
		{"allowed", ok, model.SyncAllowed, ""},
		{"token not checked", with(func(d *model.DeviceFacts) { d.Presented = nil }), model.SyncAllowed, ""},
		{"another token", with(func(d *model.DeviceFacts) { d.Presented = []byte("u") }), model.SyncTokenEnded, ""},
		{"logged out", with(func(d *model.DeviceFacts) { d.LoggedOut, d.Revoked = true, true }), model.SyncTokenEnded, ""},
		{"revoked", with(func(d *model.DeviceFacts) { d.Revoked, d.Licenses = true, nil }), model.SyncRevoked, ""},
		{"no sync license", with(func(d *model.DeviceFacts) { d.Licenses = []string{"app"} }), model.SyncNoLicense, "sync"},
		{"account gone", with(func(d *model.DeviceFacts) { d.Account = model.AppAccess{} }), model.SyncNoAccount, ""},
		{"app disabled", with(func(d *model.DeviceFacts) { d.Account.Enabled = false }), model.SyncAccessOff, ""},
		{"no role", with(func(d *model.DeviceFacts) { d.Account.Role = "" }), model.SyncAccessOff, ""},
	}
	for _, tt := range tests {
		if got, l := model.DeviceMaySync(tt.f); got != tt.want || l != tt.license {
			t.Errorf("%s: DeviceMaySync = %v, %q; want %v, %q", tt.name, got, l, tt.want, tt.license)
		}
	}
}

// tinyPNG is a 1×1 PNG, base64: a valid check-in signature.
const tinyPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="

func TestCheckIn(t *testing.T) {
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC) // the day after the check-ins' Monday
	rows := countRows{mapRows{
		model.Courses: {
			"c1": {"practice_id": "pr1", "capacity": int64(2), "weekday": int64(1)},
			"c2": {"practice_id": "pr1", "weekday": int64(1)},
			"c3": {"practice_id": "pr2", "weekday": int64(2)},
		},
		model.CourseMembers: {
			"cm1":  {"course_id": "c1", "profile_id": "p1", "units_used": int64(4), "units_total": int64(10)},
			"cm3a": {"course_id": "c2", "profile_id": "p3", "units_used": int64(5), "units_total": int64(5)},
			"cm3b": {"course_id": "c3", "profile_id": "p3", "units_used": int64(1), "units_total": int64(5)},
			"cm4":  {"course_id": "c2", "profile_id": "p4", "units_used": int64(0), "units_total": int64(5)},
		},
		model.Attendances: {},
	}}
	tests := []struct {
		name, id, course, profile string
		springer                  bool
		want                      error  // nil: accepted
		unit                      string // the membership counted
	}{
		{"a regular", "a1", "c1", "p1", false, nil, "cm1"},
		{"the regular again", "a2", "c1", "p1", false, model.ErrAlreadyCheckedIn, ""},
		{"a Springer: the membership with units left", "a3", "c1", "p3", true, nil, "cm3b"},
		{"a Springer past capacity", "a4", "c1", "p4", true, model.ErrCourseFull, ""},
		{"a non-member without springer", "a5", "c2", "p1", false, model.ErrInvalid, ""},
		{"a regular as Springer", "a6", "c2", "p4", true, model.ErrInvalid, ""},
		{"at an unknown course", "a7", "nope", "p1", false, model.ErrInvalid, ""},
	}
	for _, tt := range tests {
		atts := rows.mapRows[model.Attendances]
		atts[tt.id] = map[string]any{"course_id": tt.course, "profile_id": tt.profile, "date": "2026-11-23", "springer": tt.springer, "signature": tinyPNG}
		got, err := model.CheckIn(0, tt.id, nil, now, rows)
		if tt.want != nil {
			delete(atts, tt.id) // a refused check-in is rolled back
		}
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: CheckIn = %v; want %v", tt.name, err, tt.want)
			continue
		}
		if tt.unit != "" && (got == nil || got.ID != tt.unit || got.Fields["units_used"] != rows.mapRows[model.CourseMembers][tt.unit]["units_used"].(int64)+1) {
			t.Errorf("%s: counted %+v; want one more unit of %s", tt.name, got, tt.unit)
		}
	}
	if got, err := model.CheckIn(0, "a1", rows.mapRows[model.Attendances]["a1"], now, rows); got != nil || err != nil {
		t.Errorf("a correction = %+v, %v; want nothing counted", got, err)
	}
}
