package syncd

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// mutation is a decoded mutation: a valid change, or the reason it is not.
type mutation struct {
	ID     string
	Change model.Change
	Err    error // a *model.ValidationError for an invalid mutation
}

// decodePush decodes a device's frame. An error means the frame itself is
// unusable (not JSON, not a push, no or duplicate mutation ids); a single
// invalid mutation is returned with its Err set and the others stand.
func decodePush(data []byte) ([]mutation, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f wire.Push
	if err := dec.Decode(&f); err != nil {
		return nil, badRequest("invalid frame: %v", err)
	}
	if dec.More() {
		return nil, badRequest("invalid frame: data after the JSON object")
	}
	if f.Type != wire.TypePush {
		return nil, badRequest("unknown frame type %q (want push)", f.Type)
	}
	if len(f.Mutations) == 0 {
		return nil, badRequest("a push carries at least one mutation")
	}
	if len(f.Mutations) > wire.MaxMutationsPerPush {
		return nil, badRequest("a push carries at most %d mutations, this one %d", wire.MaxMutationsPerPush, len(f.Mutations))
	}
	seen := make(map[string]bool, len(f.Mutations))
	out := make([]mutation, len(f.Mutations))
	for i, m := range f.Mutations {
		if err := model.ValidID(m.ID); err != nil {
			return nil, badRequest("mutations[%d]: mutation id: %v", i, err)
		}
		if seen[m.ID] {
			return nil, badRequest("mutations[%d]: mutation id %q appears twice", i, m.ID)
		}
		seen[m.ID] = true
		c, err := model.RawChange{Entity: m.Entity, Op: m.Op, ID: m.RowID, Fields: m.Fields}.Validate(i)
		out[i] = mutation{ID: m.ID, Change: c, Err: err}
	}
	return out, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("syncd: encode frame: %v", err)) // frames are plain structs
	}
	return b
}
