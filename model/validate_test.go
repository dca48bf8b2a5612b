package model_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/therasync/therasync/model"
)

func raw(tb testing.TB, js string) model.RawChange {
	tb.Helper()
	var rc model.RawChange
	if err := json.Unmarshal([]byte(js), &rc); err != nil {
		tb.Fatalf("decode %s: %v", js, err)
	}
	return rc
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		js   string
		want map[string]any
	}{
		{`{"entity":"accounts","op":"upsert","id":"a1","fields":{"name":"A","role":"member","app_enabled":true,"practice_ids":["p1","p2"]}}`,
			map[string]any{"name": "A", "role": "member", "app_enabled": true, "practice_ids": []string{"p1", "p2"}}},
		{`{"entity":"sessions","op":"upsert","id":"s1","fields":{"starts_at":"2026-11-22T09:00:00+01:00","duration_min":45,"price_cents":3800,"status":"done","protocol":null}}`,
			map[string]any{"starts_at": "2026-11-22T09:00:00+01:00", "duration_min": int64(45), "price_cents": int64(3800), "status": "done", "protocol": nil}},
		{`{"entity":"courses","op":"upsert","id":"c1","fields":{"weekday":7,"start_time":"17:30"}}`,
			map[string]any{"weekday": int64(7), "start_time": "17:30"}},
		{`{"entity":"profiles","op":"upsert","id":"p1","fields":{"birth_date":"1980-02-29"}}`,
			map[string]any{"birth_date": "1980-02-29"}},
		{`{"entity":"transactions","op":"upsert","id":"t1","fields":{"amount_cents":-500,"kind":"expense"}}`,
			map[string]any{"amount_cents": int64(-500), "kind": "expense"}},
		{`{"entity":"profiles","op":"delete","id":"p1"}`, nil},
		{`{"entity":"profiles","op":"erase","id":"p1"}`, nil},
	}
	for _, tt := range tests {
		c, err := raw(t, tt.js).Validate(0)
		if err != nil {
			t.Errorf("Validate(%s) = %v; want nil", tt.js, err)
			continue
		}
		if !reflect.DeepEqual(c.Fields, tt.want) {
			t.Errorf("Validate(%s).Fields = %#v; want %#v", tt.js, c.Fields, tt.want)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name, js string
		want     string // the error message
	}{
		{"unknown entity", `{"entity":"patients","op":"upsert","id":"x"}`, `changes[3]: unknown entity "patients"`},
		{"no entity", `{"op":"upsert","id":"x"}`, `changes[3]: entity is missing`},
		{"unknown op", `{"entity":"profiles","op":"merge","id":"x"}`, `changes[3] profiles: unknown op "merge" (want upsert or delete)`},
		{"no op", `{"entity":"profiles","id":"x"}`, `changes[3] profiles: op is missing (want upsert or delete)`},
		{"no id", `{"entity":"profiles","op":"upsert"}`, `changes[3] profiles.id: id is missing`},
		{"long id", `{"entity":"profiles","op":"upsert","id":"` + strings.Repeat("x", 129) + `"}`, `changes[3] profiles.id: id is longer than 128 bytes`},
		{"control in id", `{"entity":"profiles","op":"upsert","id":"a\nb"}`, `changes[3] profiles.id: id contains a control character`},
		{"reserved account id", `{"entity":"accounts","op":"upsert","id":"*"}`, `changes[3] accounts.id: "*" is reserved for shares to all members`},
		{"unknown field", `{"entity":"profiles","op":"upsert","id":"x","fields":{"diagnosis":"x"}}`, `changes[3] profiles.diagnosis: unknown field`},
		{"id in fields", `{"entity":"profiles","op":"upsert","id":"x","fields":{"id":"y"}}`, `changes[3] profiles.id: the id goes in the change, not in its fields`},
		{"string for int", `{"entity":"sessions","op":"upsert","id":"x","fields":{"price_cents":"38"}}`, `changes[3] sessions.price_cents: must be an integer`},
		{"float for int", `{"entity":"sessions","op":"upsert","id":"x","fields":{"price_cents":38.5}}`, `changes[3] sessions.price_cents: must be an integer`},
		{"int out of range", `{"entity":"courses","op":"upsert","id":"x","fields":{"weekday":8}}`, `changes[3] courses.weekday: must be between 1 and 7`},
		{"bad bool", `{"entity":"accounts","op":"upsert","id":"x","fields":{"app_enabled":1}}`, `changes[3] accounts.app_enabled: must be a boolean`},
		{"bad enum", `{"entity":"accounts","op":"upsert","id":"x","fields":{"role":"owner"}}`, `changes[3] accounts.role: must be one of ["admin" "member" "secretary"]`},
		{"bad list", `{"entity":"accounts","op":"upsert","id":"x","fields":{"practice_ids":"p1"}}`, `changes[3] accounts.practice_ids: must be a list of strings`},
		{"bad timestamp", `{"entity":"sessions","op":"upsert","id":"x","fields":{"starts_at":"22.11.2026 09:00"}}`, `changes[3] sessions.starts_at: must be an RFC 3339 timestamp`},
		{"bad date", `{"entity":"profiles","op":"upsert","id":"x","fields":{"birth_date":"1980-02-30"}}`, `changes[3] profiles.birth_date: must be a date (YYYY-MM-DD)`},
		{"bad clock", `{"entity":"courses","op":"upsert","id":"x","fields":{"start_time":"9:00"}}`, `changes[3] courses.start_time: must be a time of day (HH:MM)`},
		{"number for string", `{"entity":"profiles","op":"upsert","id":"x","fields":{"phone":123}}`, `changes[3] profiles.phone: must be a string`},
		{"delete with fields", `{"entity":"profiles","op":"delete","id":"x","fields":{"phone":"1"}}`, `changes[3] profiles: a delete carries no fields`},
		{"erase with fields", `{"entity":"profiles","op":"erase","id":"x","fields":{"phone":"1"}}`, `changes[3] profiles: an erase carries no fields`},
		{"erase of a session", `{"entity":"sessions","op":"erase","id":"x"}`, `changes[3] sessions: erase is only for profiles (delete other rows)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw(t, tt.js).Validate(3)
			if err == nil {
				t.Fatalf("Validate(%s) = nil; want %q", tt.js, tt.want)
			}
			if !errors.Is(err, model.ErrInvalid) {
				t.Errorf("Validate(%s) = %v; want it to match ErrInvalid", tt.js, err)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate(%s) = %q; want %q", tt.js, err, tt.want)
			}
		})
	}
}

func TestDecodeFieldsRoundTrip(t *testing.T) {
	in := map[string]any{"name": "A", "app_enabled": false, "practice_ids": []string{}, "email": nil}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := model.DecodeFields(model.Accounts, b)
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Errorf("DecodeFields(%s) = %#v, %v; want %#v", b, got, err, in)
	}
}

func TestEveryEntityOfTheDesign(t *testing.T) {
	want := map[string][]string{
		"accounts":       {"name", "email", "role", "app_enabled", "practice_ids"},
		"practices":      {"name"},
		"profiles":       {"owner_id", "first_name", "last_name", "birth_date", "phone", "email", "address", "insurance"},
		"profile_shares": {"profile_id", "account_id", "shared_by", "shared_at"},
		"sessions":       {"profile_id", "therapist_id", "practice_id", "starts_at", "duration_min", "price_cents", "status", "protocol"},
		"courses":        {"practice_id", "therapist_id", "title", "weekday", "start_time", "duration_min", "capacity"},
		"course_members": {"course_id", "profile_id", "units_total", "units_used"},
		"attendances":    {"course_id", "profile_id", "date", "checked_in_at", "signature", "springer", "device_id"},
		"transactions":   {"reference", "account_id", "profile_id", "session_id", "kind", "amount_cents", "status", "date"},
	}
	es := model.Entities()
	if len(es) != len(want) {
		t.Errorf("Entities() has %d entities; want %d", len(es), len(want))
	}
	for _, e := range es {
		var got []string
		for _, f := range e.Fields {
			got = append(got, f.Name)
		}
		if !reflect.DeepEqual(got, want[e.Name]) {
			t.Errorf("fields of %s = %v; want %v", e.Name, got, want[e.Name])
		}
	}
}
