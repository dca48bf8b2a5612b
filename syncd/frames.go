package syncd

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/therasync/therasync/model"
)

// Limits of the frames a device sends.
const (
	maxFrameBytes        = 4 << 20 // a push with a few signatures fits
	maxMutationsPerFrame = 500
)

// The frames of DESIGN §7.
type (
	changesFrame struct {
		Type    string         `json:"type"` // "changes"
		Changes []model.Change `json:"changes"`
	}
	caughtUpFrame struct {
		Type string `json:"type"` // "caught_up"
		Seq  int64  `json:"seq"`
	}
	ackFrame struct {
		Type        string   `json:"type"` // "ack"
		MutationIDs []string `json:"mutation_ids"`
		Seq         int64    `json:"seq"`
	}
	rejectFrame struct {
		Type       string `json:"type"` // "reject"
		MutationID string `json:"mutation_id"`
		Error      string `json:"error"`
		Message    string `json:"message"`
	}
	resyncFrame struct {
		Type   string `json:"type"` // "resync"
		Reason string `json:"reason"`
	}
	wipeFrame struct {
		Type string `json:"type"` // "wipe"
	}
)

// rawMutation is a mutation as a device sends it.
type rawMutation struct {
	ID     string                     `json:"id"`
	Entity string                     `json:"entity"`
	Op     model.Op                   `json:"op"`
	RowID  string                     `json:"row_id"`
	Fields map[string]json.RawMessage `json:"fields"`
}

type pushFrame struct {
	Type      string        `json:"type"`
	Mutations []rawMutation `json:"mutations"`
}

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
	var f pushFrame
	if err := dec.Decode(&f); err != nil {
		return nil, badRequest("invalid frame: %v", err)
	}
	if dec.More() {
		return nil, badRequest("invalid frame: data after the JSON object")
	}
	if f.Type != "push" {
		return nil, badRequest("unknown frame type %q (want push)", f.Type)
	}
	if len(f.Mutations) == 0 {
		return nil, badRequest("a push carries at least one mutation")
	}
	if len(f.Mutations) > maxMutationsPerFrame {
		return nil, badRequest("a push carries at most %d mutations, this one %d", maxMutationsPerFrame, len(f.Mutations))
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
