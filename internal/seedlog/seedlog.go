// Package seedlog writes a long synthetic change log into a tenant's
// central database, fast (plain SQL in one transaction, not the store's
// writer): for benchmarks of compaction and for load tests against a
// tenant with a long history. The rows it writes are consistent with its
// changes: replaying the log gives the tables.
package seedlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Options say what to write.
type Options struct {
	// Changes is how many changes to append to the log.
	Changes int
	// Rows is how many distinct rows (profiles, and sessions of them)
	// the changes fall on.
	Rows int
	// From and To spread the changes' created_at, in seq order.
	From, To time.Time
	// BatchEvery records a batch id every that many changes (0: none).
	BatchEvery int
	// Seed makes the log reproducible.
	Seed uint64
}

// Stats is what Write wrote.
type Stats struct {
	FirstSeq, LastSeq int64
	Deletes           int
	Rows              int // rows that exist at the end
}

// Write appends opts.Changes changes to the log of the tenant database at
// path, after its head, with the rows they leave. The tenant must not be
// open for writing in another process meanwhile (its writer would wait
// for this one transaction).
func Write(ctx context.Context, path string, opts Options) (Stats, error) {
	var st Stats
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(60000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&st.LastSeq); err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	st.FirstSeq = st.LastSeq + 1
	logChange, err := tx.PrepareContext(ctx, `INSERT INTO changes(seq, entity, op, row_id, fields, origin, created_at) VALUES (?,?,?,?,?,'practice',?)`)
	if err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	defer logChange.Close()
	batch, err := tx.PrepareContext(ctx, `INSERT INTO batches(batch_id, digest, seq, created_at) VALUES (?, x'00', ?, ?)`)
	if err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	defer batch.Close()
	r := rand.New(rand.NewPCG(opts.Seed, 29))
	rows := map[[2]string]map[string]any{} // the current rows, by entity and id
	span := opts.To.Sub(opts.From)
	for i := range opts.Changes {
		seq := st.FirstSeq + int64(i)
		at := opts.From.Add(time.Duration(float64(span) * float64(i) / float64(max(opts.Changes-1, 1)))).UTC().Format(time.RFC3339Nano)
		entity, id, fields := change(r, opts.Rows)
		key := [2]string{entity, id}
		var logged any
		op := "upsert"
		if rows[key] != nil && r.IntN(20) == 0 {
			op = "delete"
			delete(rows, key)
			st.Deletes++
		} else {
			b, _ := json.Marshal(fields)
			logged = string(b)
			if rows[key] == nil {
				rows[key] = map[string]any{}
			}
			for k, v := range fields {
				rows[key][k] = v
			}
		}
		if _, err := logChange.ExecContext(ctx, seq, entity, op, id, logged, at); err != nil {
			return st, fmt.Errorf("seed %s: change %d: %w", path, seq, err)
		}
		if opts.BatchEvery > 0 && (i+1)%opts.BatchEvery == 0 {
			if _, err := batch.ExecContext(ctx, fmt.Sprintf("seed-%d", seq), seq, at[:19]+"Z"); err != nil {
				return st, fmt.Errorf("seed %s: %w", path, err)
			}
		}
		st.LastSeq = seq
	}
	for key, fields := range rows {
		cols, marks, args := `"id"`, "?", []any{key[1]}
		for k, v := range fields {
			cols += `,"` + k + `"`
			marks += ",?"
			args = append(args, v)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO "`+key[0]+`"(`+cols+`) VALUES (`+marks+`)`, args...); err != nil {
			return st, fmt.Errorf("seed %s: row %s/%s: %w", path, key[0], key[1], err)
		}
	}
	st.Rows = len(rows)
	if err := tx.Commit(); err != nil {
		return st, fmt.Errorf("seed %s: %w", path, err)
	}
	return st, nil
}

// change returns a random change's row and fields: a profile (of nobody's
// accounts: no member sees it) or a session of one, of rows rows.
func change(r *rand.Rand, rows int) (entity, id string, fields map[string]any) {
	n := r.IntN(max(rows/2, 1))
	if r.IntN(2) == 0 {
		id = fmt.Sprintf("seed-p%d", n)
		fields = map[string]any{"owner_id": "seed-owner"}
		switch r.IntN(4) {
		case 0:
			fields["first_name"], fields["last_name"] = fmt.Sprint("Vorname", r.IntN(1000)), fmt.Sprint("Nachname", r.IntN(1000))
		case 1:
			fields["phone"] = fmt.Sprintf("+49 30 %07d", r.IntN(10000000))
		case 2:
			fields["address"] = fmt.Sprintf("Musterstraße %d, 10115 Berlin", r.IntN(200))
		default:
			fields["email"] = fmt.Sprintf("patient%d@example.org", r.IntN(100000))
		}
		return "profiles", id, fields
	}
	id = fmt.Sprintf("seed-s%d", n)
	fields = map[string]any{"profile_id": fmt.Sprintf("seed-p%d", n), "therapist_id": "seed-therapist"}
	switch r.IntN(3) {
	case 0:
		fields["status"] = []string{"planned", "done", "cancelled"}[r.IntN(3)]
	case 1:
		fields["protocol"] = fmt.Sprintf("Befund %d: Beweglichkeit der Schulter verbessert, Übungen für zu Hause besprochen, nächste Einheit in einer Woche.", r.IntN(1000))
	default:
		fields["price_cents"], fields["duration_min"] = int64(3000+r.IntN(5000)), int64(30+15*r.IntN(4))
	}
	return "sessions", id, fields
}
