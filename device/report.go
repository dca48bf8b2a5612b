package device

import (
	"fmt"
	"strings"

	"github.com/therasync/therasync/wire"
)

// This file is what a sync tells its caller as it goes (SyncOptions.Report):
// a terminal's `therasync device sync --follow` prints it.

// Event is one thing that happened during Sync, said in a line for a
// person (never patient data: counts, seqs, ids and error codes only).
type Event struct {
	// Kind is connected, changes, caught_up, ack, reject, resync, wipe,
	// disconnected or read_only.
	Kind string
	// Text says the event in words.
	Text string
}

// String is the event's text.
func (e Event) String() string { return e.Text }

// report hands e to opts.Report, if set.
func (o SyncOptions) report(kind, format string, args ...any) {
	if o.Report != nil {
		o.Report(Event{Kind: kind, Text: fmt.Sprintf(format, args...)})
	}
}

// reportFrame reports frame f, received and handled.
func (o SyncOptions) reportFrame(f any) {
	switch f := f.(type) {
	case *wire.Changes:
		if n := len(f.Changes); n > 0 {
			o.report("changes", "applied %d changes up to seq %d", n, f.Changes[n-1].Seq)
		}
	case *wire.CaughtUp:
		o.report("caught_up", "caught up at seq %d; following live changes", f.Seq)
	case *wire.Ack:
		o.report("ack", "the server acknowledged %d writes (seq %d): %s", len(f.MutationIDs), f.Seq, strings.Join(f.MutationIDs, ", "))
	case *wire.Reject:
		o.report("reject", "the server refused write %s: %s: %s", f.MutationID, f.Error, f.Message)
	case *wire.Resync:
		o.report("resync", "the server asks for a fresh shard (%s); downloading it", f.Reason)
	case *wire.Wipe:
		o.report("wipe", "the practice revoked this device as lost: its local data is deleted")
	}
}
