package syncd

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/therasync/therasync/model"
)

// FuzzDecodePush feeds arbitrary frames to the decoder and the mutation
// validation: they never panic, refuse with a bad_request, and every
// accepted mutation is a valid change whose fields survive a round trip.
// The corpus is in testdata/fuzz/FuzzDecodePush; scripts/test runs it
// briefly.
func FuzzDecodePush(f *testing.F) {
	for _, seed := range []string{
		`{"type":"push","mutations":[{"id":"u1","entity":"profiles","op":"upsert","row_id":"p1","fields":{"first_name":"Anna","birth_date":"1980-02-29"}}]}`,
		`{"type":"push","mutations":[{"id":"u2","entity":"sessions","op":"upsert","row_id":"s1","fields":{"price_cents":3800,"status":"done"}},{"id":"u3","entity":"attendances","op":"delete","row_id":"a1"}]}`,
		`{"type":"push","mutations":[{"id":"u4","entity":"accounts","op":"upsert","row_id":"x","fields":{"practice_ids":["a","b"],"app_enabled":true}}]}`,
		`{"type":"push","mutations":[]}`,
		`{"type":"pull"}`,
		`not json`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := decodePush(data)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("decodePush(%q) = %v; want a bad request", data, err)
			}
			return
		}
		seen := map[string]bool{}
		for _, m := range ms {
			if model.ValidID(m.ID) != nil || seen[m.ID] {
				t.Fatalf("accepted mutation id %q (valid, unique ids only)", m.ID)
			}
			seen[m.ID] = true
			if m.Err != nil {
				if !errors.Is(m.Err, model.ErrInvalid) {
					t.Fatalf("mutation error %v; want a validation error", m.Err)
				}
				continue
			}
			if _, ok := model.Lookup(m.Change.Entity); !ok || model.ValidID(m.Change.ID) != nil {
				t.Fatalf("accepted change %+v", m.Change)
			}
			if m.Change.Fields == nil {
				continue
			}
			b, err := json.Marshal(m.Change.Fields)
			if err != nil {
				t.Fatalf("fields of an accepted change do not encode: %v", err)
			}
			back, err := model.DecodeFields(m.Change.Entity, b)
			if err != nil || !reflect.DeepEqual(back, m.Change.Fields) {
				t.Fatalf("fields %v do not survive a round trip: %v, %v", m.Change.Fields, back, err)
			}
		}
	})
}
