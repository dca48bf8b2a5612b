package model

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// This file is erasure (DESIGN §2, GDPR Art. 17): which rows erasing a
// profile deletes, and whose past changes in the log lose their fields.
// Which fields name a row is derived from the policy's tables (table.go)
// and the schema's naming convention, so that a new entity naming
// profiles is erased with them without more code.

// RowRef names one row.
type RowRef struct {
	Entity, ID string
}

// Naming returns the fields that name a row of entity target, sorted: the
// fields the member rules test against the target's set and the targets
// of the reasons that grant it (for profiles and courses), the fields that
// name accounts in the rules and reasons (for accounts), and, by the
// schema's convention, every field called after the target in the
// singular with "_id" (attendances.profile_id, transactions.session_id).
func Naming(target string) []Dependent {
	var out []Dependent
	add := func(entity, field string) {
		d := Dependent{Entity: entity, Field: field}
		if field != "" && field != "id" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	for entity, r := range memberRules {
		for _, c := range r.Conds {
			if c.In == Set(target) || c.Self && target == Accounts {
				add(entity, c.Field)
			}
		}
	}
	for _, rs := range reasons {
		if rs.grants == Set(target) {
			add(rs.entity, rs.target)
		}
		if target == Courses {
			add(rs.entity, rs.course)
		}
		if target == Accounts {
			add(rs.entity, rs.account)
		}
	}
	ref := strings.TrimSuffix(target, "s") + "_id"
	for _, e := range Entities() {
		if _, ok := e.Field(ref); ok {
			add(e.Name, ref)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Entity != out[j].Entity {
			return out[i].Entity < out[j].Entity
		}
		return out[i].Field < out[j].Field
	})
	return out
}

// ErasureRows is what Erase reads of a tenant: its current rows (Find on
// any field) and which rows its change log says once named a row.
type ErasureRows interface {
	Rows
	// Logged returns the ids of the rows of entity of which a change in
	// the log set field to value.
	Logged(entity, field, value string) ([]string, error)
}

// Erasure is what erasing a profile does to a tenant.
type Erasure struct {
	// Delete are the rows to delete: the profile and every row that names
	// it or a row deleted with it (a session's transactions), those that
	// name others before what they name, the profile last.
	Delete []RowRef
	// Scrub are the rows every past change of which becomes a field-less
	// delete in the log: Delete's, the rows that named an erased row and
	// are gone already, and Keep's.
	Scrub []RowRef
	// Keep are rows that exist and named an erased row only in the past (a
	// session moved to another profile): they stay, and, their past changes
	// scrubbed, they are logged anew whole.
	Keep []RowRef
}

// Erase returns what erasing profile id does, reading the tenant with look
// (the store answers it inside the erasing transaction): the rows that
// name the profile (Naming), now or, if they are gone, in the log, and,
// the same way, the rows that name those. It returns look's error.
func Erase(id string, look ErasureRows) (Erasure, error) {
	var (
		er     Erasure
		erased = map[RowRef]bool{}
		exists = map[RowRef]bool{}
		keep   = map[RowRef]bool{}
		order  []RowRef // the erased rows, breadth first from the profile
	)
	add := func(r RowRef, now bool) {
		if now {
			exists[r] = true
		}
		if !erased[r] {
			erased[r] = true
			delete(keep, r)
			order = append(order, r)
		}
	}
	p, err := look.Row(Profiles, id)
	if err != nil {
		return Erasure{}, err
	}
	add(RowRef{Profiles, id}, p != nil)
	for next := 0; next < len(order); next++ {
		target := order[next]
		for _, n := range Naming(target.Entity) {
			rows, err := look.Find(n.Entity, map[string]string{n.Field: target.ID})
			if err != nil {
				return Erasure{}, err
			}
			for _, rid := range sortedKeys(rows) {
				add(RowRef{n.Entity, rid}, true)
			}
			logged, err := look.Logged(n.Entity, n.Field, target.ID)
			if err != nil {
				return Erasure{}, err
			}
			for _, rid := range logged {
				r := RowRef{n.Entity, rid}
				if erased[r] || keep[r] {
					continue
				}
				row, err := look.Row(r.Entity, r.ID)
				if err != nil {
					return Erasure{}, err
				}
				if row == nil {
					add(r, false) // gone: nothing names it, its past is the profile's
				} else {
					keep[r] = true // unless it names an erased row now (add)
				}
			}
		}
	}
	for i := len(order) - 1; i >= 0; i-- {
		if exists[order[i]] {
			er.Delete = append(er.Delete, order[i])
		}
	}
	er.Scrub = append(er.Scrub, order...)
	for r := range keep {
		er.Keep = append(er.Keep, r)
	}
	sort.Slice(er.Keep, func(i, j int) bool {
		a, b := er.Keep[i], er.Keep[j]
		return a.Entity < b.Entity || a.Entity == b.Entity && a.ID < b.ID
	})
	er.Scrub = append(er.Scrub, er.Keep...)
	return er, nil
}

// sortedKeys returns the ids of rows, sorted.
func sortedKeys(rows map[string]map[string]any) []string {
	out := make([]string, 0, len(rows))
	for id := range rows {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// ErasedRows is what RefuseErased reads: the current rows, and whether a
// row was erased (the store keeps the ids of erased rows, never their
// values).
type ErasedRows interface {
	Rows
	Erased(entity, id string) (bool, error)
}

// namesOf are, by entity, its fields that name a row, with the entity
// they name (Naming turned around), in Entities' order.
var namesOf = func() map[string][][2]string {
	m := map[string][][2]string{}
	for _, t := range Entities() {
		for _, d := range Naming(t.Name) {
			m[d.Entity] = append(m[d.Entity], [2]string{d.Field, t.Name})
		}
	}
	return m
}()

// RefuseErased refuses a device's change c that would bring an erased row
// back, index being its position in its batch: the creation of an erased
// row (before is the row's current fields, nil when there is none), or a
// row that names, in a field c sets, an erased row that nobody created
// again — an offline device's write, queued before the erasure, of the
// patient or of a row of it. The practice PC, the master of its data, may
// create them again. It returns nil, a *ForbiddenError matching ErrErased
// or look's error.
func RefuseErased(index int, c Change, before map[string]any, look ErasedRows) error {
	if c.Op != OpUpsert {
		return nil
	}
	deny := func(reason string) error {
		return &ForbiddenError{Index: index, Entity: c.Entity, Reason: reason, Err: ErrErased}
	}
	if before == nil {
		gone, err := look.Erased(c.Entity, c.ID)
		if err != nil {
			return err
		}
		if gone {
			return deny(fmt.Sprintf("%s was erased (GDPR Art. 17); only the practice creates it again", c.ID))
		}
	}
	for _, n := range namesOf[c.Entity] {
		f, target := n[0], n[1]
		id, _ := c.Fields[f].(string)
		if id == "" {
			continue
		}
		gone, err := look.Erased(target, id)
		if err != nil {
			return err
		}
		if !gone {
			continue
		}
		row, err := look.Row(target, id)
		if err != nil {
			return err
		}
		if row == nil {
			return deny(fmt.Sprintf("%s names %s, which was erased (GDPR Art. 17)", f, id))
		}
	}
	return nil
}
