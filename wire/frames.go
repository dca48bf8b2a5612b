package wire

import (
	"encoding/json"

	"github.com/therasync/therasync/model"
)

// The frame types: the "type" of every frame.
const (
	TypeChanges  = "changes"
	TypeCaughtUp = "caught_up"
	TypeAck      = "ack"
	TypeReject   = "reject"
	TypeResync   = "resync"
	TypeWipe     = "wipe"
	TypePush     = "push"
)

// Header is what every frame has: decode it to learn which frame a message
// is.
type Header struct {
	Type string `json:"type"`
}

// Changes (server → device) carries changes after the device's cursor in
// seq order, never with a gap, each with its seq and projected to what the
// account sees.
type Changes struct {
	Type    string         `json:"type"` // TypeChanges
	Changes []model.Change `json:"changes"`
}

// CaughtUp (server → device) says the device has everything up to Seq of
// the log's history History (DESIGN §2): the device keeps both and sends
// them when it connects again; live changes follow as they commit.
type CaughtUp struct {
	Type    string `json:"type"` // TypeCaughtUp
	Seq     int64  `json:"seq"`
	History string `json:"history,omitempty"`
}

// Ack (server → device) says the listed mutations are durable; their
// effects are at or before Seq.
type Ack struct {
	Type        string   `json:"type"` // TypeAck
	MutationIDs []string `json:"mutation_ids"`
	Seq         int64    `json:"seq"`
}

// Reject (server → device) says a mutation changed nothing, with an error
// code and why; one without a MutationID refuses a whole frame.
type Reject struct {
	Type       string `json:"type"` // TypeReject
	MutationID string `json:"mutation_id"`
	Error      string `json:"error"`
	Message    string `json:"message"`
}

// Resync (server → device) says the cursor cannot be served or what the
// account sees shrank: download a fresh shard. CloseNormalClosure follows.
type Resync struct {
	Type   string `json:"type"` // TypeResync
	Reason string `json:"reason"`
}

// Wipe (server → device) tells a device revoked as lost to delete its
// local data. CloseRevoked follows.
type Wipe struct {
	Type string `json:"type"` // TypeWipe
}

// Push (device → server) carries a device's writes: at most
// MaxMutationsPerPush, with unique mutation ids, in at most MaxFrameBytes.
type Push struct {
	Type      string     `json:"type"` // TypePush
	Mutations []Mutation `json:"mutations"`
}

// Mutation is one write of a device: the change of one row, under an id
// that makes it idempotent (a retried mutation is acknowledged again and
// applied once).
type Mutation struct {
	ID     string                     `json:"id"`
	Entity string                     `json:"entity"`
	Op     model.Op                   `json:"op"`
	RowID  string                     `json:"row_id"`
	Fields map[string]json.RawMessage `json:"fields,omitempty"` // none for a delete
}
