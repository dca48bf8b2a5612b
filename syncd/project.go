package syncd

// This file is the fields a viewer sees of a change (model.Fields).

import "github.com/therasync/therasync/model"

// emptied reports whether projection took every field of the upsert ch
// (pc is its projection): the viewer may see none of what it changed. Such
// a change of a row that existed tells the viewer nothing but that
// something it may not see changed, so it is not sent; an upsert that
// creates the row is sent even without fields (the row is in the viewer's
// shard), and so is one that had no fields to start with.
func emptied(ch, pc model.Change) bool {
	return ch.Op == model.OpUpsert && len(ch.Fields) > 0 && len(pc.Fields) == 0
}

// project returns the change as a viewer may see it: its visible fields
// only (model.Fields: a secretary never sees a protocol, a member only the
// name and role of accounts); practice PCs see everything. Which rows a
// member sees, memberOut decides.
func project(practice bool, role string, ch model.Change) model.Change {
	if practice || ch.Fields == nil {
		return ch
	}
	fields := model.Fields(role, ch.Entity)
	if e, ok := model.Lookup(ch.Entity); ok && len(fields) == len(e.Fields) {
		return ch // the viewer sees every field: nothing to copy
	}
	keep := make(map[string]any, len(ch.Fields))
	for _, f := range fields {
		if v, ok := ch.Fields[f.Name]; ok {
			keep[f.Name] = v
		}
	}
	ch.Fields = keep
	return ch
}
