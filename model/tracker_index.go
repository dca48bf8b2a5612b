package model

// This file holds the Tracker's reverse indexes and their bookkeeping: the
// rows by the course or account their reasons name (byCourse, byAccount:
// what Follow reads) and the followed members that see each profile and
// course (viewers: what Viewers reads).

// rowRef names a row.
type rowRef struct{ entity, id string }

// Viewers calls fn for the followed members that may see the row of entity
// with these link fields (a superset: check with SeesRow), each at most
// once per reason.
func (t *Tracker) Viewers(entity, id string, r LinkRow, fn func(member string)) {
	rule := memberRules[entity]
	every := func() {
		for m := range t.members {
			fn(m)
		}
	}
	if rule.All {
		every()
		return
	}
	for _, c := range rule.Conds {
		v := linkValue(entity, c.Field, id, r)
		switch {
		case v == "":
		case c.Self:
			if t.members[v] != nil {
				fn(v)
			}
		case c.In != "":
			if t.all[sightID{c.In, v}] > 0 {
				every()
				return
			}
			for m := range t.viewers[sightID{c.In, v}] {
				fn(m)
			}
		}
	}
}

// index adds (d 1) or removes (d -1) a row from an index by key ("" is
// not indexed).
func (t *Tracker) index(ix map[string]map[rowRef]struct{}, key string, ref rowRef, d int) {
	if key == "" {
		return
	}
	if d > 0 {
		if ix[key] == nil {
			ix[key] = map[rowRef]struct{}{}
		}
		ix[key][ref] = struct{}{}
		return
	}
	delete(ix[key], ref)
	if len(ix[key]) == 0 {
		delete(ix, key)
	}
}

// setViewer records (on) or forgets that member sees the profile or course
// k through its own reasons.
func (t *Tracker) setViewer(k sightID, member string, on bool) {
	if on {
		if t.viewers[k] == nil {
			t.viewers[k] = map[string]bool{}
		}
		t.viewers[k][member] = true
		return
	}
	delete(t.viewers[k], member)
	if len(t.viewers[k]) == 0 {
		delete(t.viewers, k)
	}
}
