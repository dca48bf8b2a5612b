package wire_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// TestFrameJSON: every frame encodes as DESIGN §7 spells it, and decodes
// back to itself.
func TestFrameJSON(t *testing.T) {
	for _, tt := range []struct {
		name  string
		frame any
		want  string
	}{
		{"changes", wire.Changes{Type: wire.TypeChanges, Changes: []model.Change{{Seq: 7, Entity: "profiles", Op: model.OpUpsert, ID: "p1", Fields: map[string]any{"first_name": "Anna"}}, {Seq: 8, Entity: "sessions", Op: model.OpDelete, ID: "s1"}}},
			`{"type":"changes","changes":[{"seq":7,"entity":"profiles","op":"upsert","id":"p1","fields":{"first_name":"Anna"}},{"seq":8,"entity":"sessions","op":"delete","id":"s1"}]}`},
		{"caught_up", wire.CaughtUp{Type: wire.TypeCaughtUp, Seq: 42}, `{"type":"caught_up","seq":42}`},
		{"ack", wire.Ack{Type: wire.TypeAck, MutationIDs: []string{"m1", "m2"}, Seq: 9}, `{"type":"ack","mutation_ids":["m1","m2"],"seq":9}`},
		{"reject", wire.Reject{Type: wire.TypeReject, MutationID: "m3", Error: wire.CodeForbidden, Message: "no"}, `{"type":"reject","mutation_id":"m3","error":"forbidden","message":"no"}`},
		{"resync", wire.Resync{Type: wire.TypeResync, Reason: "the cursor is ahead"}, `{"type":"resync","reason":"the cursor is ahead"}`},
		{"wipe", wire.Wipe{Type: wire.TypeWipe}, `{"type":"wipe"}`},
		{"push", wire.Push{Type: wire.TypePush, Mutations: []wire.Mutation{
			{ID: "m1", Entity: "sessions", Op: model.OpUpsert, RowID: "s1", Fields: map[string]json.RawMessage{"price_cents": json.RawMessage(`3800`)}},
			{ID: "m2", Entity: "attendances", Op: model.OpDelete, RowID: "a1"},
		}}, `{"type":"push","mutations":[{"id":"m1","entity":"sessions","op":"upsert","row_id":"s1","fields":{"price_cents":3800}},{"id":"m2","entity":"attendances","op":"delete","row_id":"a1"}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.frame)
			if err != nil || string(b) != tt.want {
				t.Fatalf("encoded %s, %v; want %s", b, err, tt.want)
			}
			var h wire.Header
			if err := json.Unmarshal(b, &h); err != nil || h.Type != tt.name {
				t.Errorf("header %+v, %v; want type %q", h, err, tt.name)
			}
			back := reflect.New(reflect.TypeOf(tt.frame))
			if err := json.Unmarshal(b, back.Interface()); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back.Elem().Interface())
			if string(again) != tt.want {
				t.Errorf("round trip %s; want %s", again, tt.want)
			}
		})
	}
}

// TestContractNumbers: the close codes and limits are those of the
// contract (DESIGN §7, docs/api.md), which clients hard-code.
func TestContractNumbers(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want int
	}{
		{"CloseNormalClosure", wire.CloseNormalClosure, 1000},
		{"CloseGoingAway", wire.CloseGoingAway, 1001},
		{"ClosePolicyViolation", wire.ClosePolicyViolation, 1008},
		{"CloseMessageTooBig", wire.CloseMessageTooBig, 1009},
		{"CloseInternalServerErr", wire.CloseInternalServerErr, 1011},
		{"CloseTryAgainLater", wire.CloseTryAgainLater, 1013},
		{"CloseTokenGone", wire.CloseTokenGone, 4001},
		{"CloseRevoked", wire.CloseRevoked, 4003},
		{"MaxFrameBytes", wire.MaxFrameBytes, 4 << 20},
		{"MaxMutationsPerPush", wire.MaxMutationsPerPush, 500},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %d; want %d", tt.name, tt.got, tt.want)
		}
	}
}
