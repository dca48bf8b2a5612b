package model

// LinkRow is the link fields of one row: the fields visibility depends on
// (see linkFields), A and B by entity.
type LinkRow struct{ A, B string }

// HasLinks reports whether the visibility of entity's rows depends on
// link fields.
func HasLinks(entity string) bool { _, ok := linkFields[entity]; return ok }

// LinkFields returns the names of entity's link fields A and B ("" for
// none, or for an entity without links).
func LinkFields(entity string) (a, b string) {
	f := linkFields[entity]
	return f[0], f[1]
}

// LinkedEntities returns the entities whose rows' visibility depends on
// link fields.
func LinkedEntities() []string {
	out := make([]string, 0, len(linkFields))
	for e := range linkFields {
		out = append(out, e)
	}
	return out
}

// linkValue returns field of a row from its id and link fields ("" for a
// field that is not one of them).
func linkValue(entity, field, id string, r LinkRow) string {
	names := linkFields[entity]
	switch field {
	case "id":
		return id
	case "":
		return ""
	case names[0]:
		return r.A
	case names[1]:
		return r.B
	}
	return ""
}

// Links is the part of a tenant's rows that visibility depends on: for each
// row of a linked entity, its id and link fields. It is built from the rows
// (Set) or kept current by applying every change (Apply).
type Links struct {
	rows map[string]map[string]LinkRow // entity → id → link fields
}

// NewLinks returns empty Links.
func NewLinks() *Links {
	l := &Links{rows: make(map[string]map[string]LinkRow, len(linkFields))}
	for e := range linkFields {
		l.rows[e] = map[string]LinkRow{}
	}
	return l
}

// Set records a row's link fields.
func (l *Links) Set(entity, id string, r LinkRow) {
	if m := l.rows[entity]; m != nil {
		m[id] = r
	}
}

// Get returns a row's link fields, and whether the row exists.
func (l *Links) Get(entity, id string) (LinkRow, bool) {
	r, ok := l.rows[entity][id]
	return r, ok
}

// Apply applies a change: an upsert merges the link fields it carries, a
// delete removes the row.
func (l *Links) Apply(c Change) {
	m := l.rows[c.Entity]
	if m == nil {
		return
	}
	if c.Op == OpDelete {
		delete(m, c.ID)
		return
	}
	r := m[c.ID]
	names := linkFields[c.Entity]
	if v, ok := c.Fields[names[0]]; ok {
		r.A, _ = v.(string)
	}
	if v, ok := c.Fields[names[1]]; ok && names[1] != "" {
		r.B, _ = v.(string)
	}
	m[c.ID] = r
}
