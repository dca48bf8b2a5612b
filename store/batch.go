package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// This file is what a batch of changes means: applied once per batch ID,
// change by change (a device's push mutation by mutation: mutation.go),
// each change after the domain rules (rules.go) and logged with its seq.

// The origins of changes that are not a device's.
const (
	// OriginPractice is the origin of changes pushed by a practice PC.
	OriginPractice = "practice"
	// OriginOperator is the origin of changes made by the server's operator
	// (the therasync command on the server).
	OriginOperator = "operator"
)

// Batch is a list of validated changes applied atomically: all or none.
type Batch struct {
	// ID makes the batch idempotent: a batch whose ID was applied before
	// applies nothing and returns the first result. Empty means no ID.
	ID string
	// Origin records who made the changes, e.g. OriginPractice.
	Origin string
	// Changes are the batch's changes, each validated by model.RawChange.Validate.
	Changes []model.Change
	// Writer, when set, makes this a device's push: every change is checked
	// with model.CanWrite for this account and applied on its own, so that a
	// refused change (reported in Result.Refused) changes nothing and
	// blocks none of the others. Nil means a practice PC: all or nothing.
	Writer *model.Viewer
	// DeviceID and MutationIDs (one per change) make a device's changes
	// idempotent: a mutation id applied before is acknowledged again and
	// applied once.
	DeviceID    string
	MutationIDs []string
	// TokenHash is, for a device's push, the hash of the token the device
	// authenticated with: the push is applied only while it is the device's
	// current token and the device may sync (checked in the transaction).
	TokenHash []byte
	// Addr is the client's address, for the audit lines the batch writes.
	Addr string
}

// actor returns who made the batch, as the audit log names it.
func (b Batch) actor() string {
	switch {
	case b.Writer != nil:
		return "device"
	case b.Origin == OriginOperator:
		return "operator"
	}
	return "practice"
}

// Result is the outcome of an applied batch.
type Result struct {
	// Seq is the tenant's seq once the batch committed: every change of the
	// batch is at or before it.
	Seq int64
	// Changes are the batch's changes as logged, with their seqs and any
	// server-assigned fields. A change that altered nothing is left out.
	Changes []model.Change
	// Repeated is true when the batch ID was applied before and nothing
	// was applied now.
	Repeated bool
	// BuildRequests are the accounts whose shard build the batch requested
	// (recorded durably with it): accounts whose app access was enabled or
	// whose role changed while enabled.
	BuildRequests []string
	// AccessChanges are the accounts whose app access the batch started or
	// ended, whatever the op and value (each also written to the audit log
	// in the batch's transaction).
	AccessChanges []AccessChange
	// Refused holds, for a device's push, the error of each refused change
	// by its index (a *model.ValidationError or *model.ForbiddenError).
	Refused map[int]error
	// History is the log's new history id when the batch erased a profile
	// (and so rewrote past changes), empty otherwise: every shard of the
	// tenant is forgotten and its file is to be removed (the erasure's
	// BuildRequests rebuild them).
	History string
}

// AccessChange is an account whose app access started (Enabled) or ended.
type AccessChange struct {
	AccountID string
	Enabled   bool
	// Reason says what changed: "app_enabled true", "app_enabled false",
	// "app_enabled null", "role removed", "account deleted", "role set".
	Reason string
}

// Apply applies the batch in one durable transaction and returns once it is
// on disk. Concurrent calls are group-committed by the tenant's writer.
// Errors: *model.ValidationError (ErrInvalid) and *model.ForbiddenError
// (ErrForbidden) for a change that cannot be applied, ErrConflict for a batch
// ID reused with other changes; on any error nothing of the batch is applied.
func (t *Tenant) Apply(ctx context.Context, b Batch) (Result, error) {
	return t.submit(ctx, b)
}

func (t *Tenant) submit(ctx context.Context, b Batch) (Result, error) {
	if b.Writer != nil && (b.DeviceID == "" || len(b.MutationIDs) != len(b.Changes)) {
		return Result{}, fmt.Errorf("apply: a device's push needs its device id and one mutation id per change")
	}
	// Encoding happens here, on the caller's goroutine, so that the one
	// writer goroutine only executes statements.
	enc := make([]encoded, len(b.Changes))
	h := sha256.New()
	for i, c := range b.Changes {
		var err error
		if enc[i], err = encodeChange(i, c); err != nil {
			return Result{}, err
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", c.Entity, c.Op, c.ID)
		h.Write(enc[i].fields)
		h.Write([]byte{0})
	}
	r := &writeReq{ctx: ctx, batch: b, enc: enc, done: make(chan writeRes, 1)}
	h.Sum(r.digest[:0])
	return t.enqueue(ctx, r)
}

// applyBatch applies batch r under the group's transaction: once per batch
// ID, a device's push only while the device may sync, every change with
// its audit lines; it returns the batch's result.
func (w *writer) applyBatch(ctx context.Context, tx *sql.Tx, r *writeReq, seq *int64, now time.Time) (Result, error) {
	b := r.batch
	if b.ID != "" {
		if res, repeated, err := w.repeatedBatch(ctx, tx, r); err != nil || repeated {
			return res, err
		}
	}
	if b.Writer != nil {
		if err := w.checkPush(ctx, tx, b); err != nil {
			return Result{}, err
		}
	}
	w.builds = w.builds[:0]
	w.access = w.access[:0]
	w.erased = false
	logged, refused, err := w.applyChanges(ctx, tx, r, seq, now)
	if err != nil {
		return Result{}, err
	}
	var history string
	if w.erased {
		if history, err = w.afterErasure(ctx, tx, now); err != nil {
			return Result{}, err
		}
	}
	if err := w.auditAccess(ctx, tx, b, now); err != nil {
		return Result{}, err
	}
	if b.ID != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO batches(batch_id, digest, seq, created_at) VALUES (?,?,?,?)`,
			b.ID, r.digest[:], *seq, now.UTC().Format(time.RFC3339)); err != nil {
			return Result{}, fmt.Errorf("record batch: %w", err)
		}
	}
	res := Result{Seq: *seq, Changes: logged, Refused: refused, History: history}
	if len(w.builds) > 0 {
		res.BuildRequests = append([]string(nil), w.builds...)
	}
	if len(w.access) > 0 {
		res.AccessChanges = append([]AccessChange(nil), w.access...)
	}
	return res, nil
}

// repeatedBatch looks up batch r's ID: applied before with the same
// changes, it returns the first result and repeated; with other changes,
// ErrConflict.
func (w *writer) repeatedBatch(ctx context.Context, tx *sql.Tx, r *writeReq) (res Result, repeated bool, err error) {
	var (
		digest []byte
		first  int64
	)
	err = tx.QueryRowContext(ctx, `SELECT digest, seq FROM batches WHERE batch_id = ?`, r.batch.ID).Scan(&digest, &first)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Result{}, false, nil
	case err != nil:
		return Result{}, false, fmt.Errorf("look up batch: %w", err)
	case !bytes.Equal(digest, r.digest[:]):
		return Result{}, false, fmt.Errorf("batch_id %q was applied before with other changes: %w", r.batch.ID, ErrConflict)
	}
	return Result{Seq: first, Repeated: true}, true, nil
}

// applyChanges applies and logs the changes of batch r: a practice's all
// or none, a device's each on its own (refused: the refusals by index).
func (w *writer) applyChanges(ctx context.Context, tx *sql.Tx, r *writeReq, seq *int64, now time.Time) (logged []model.Change, refused map[int]error, err error) {
	b := r.batch
	logged = make([]model.Change, 0, len(b.Changes))
	for i, c := range b.Changes {
		if b.Writer != nil {
			lcs, err := w.applyMutation(ctx, tx, r, i, seq, now)
			if err != nil {
				if !refusal(err) {
					return nil, nil, err
				}
				if refused == nil {
					refused = map[int]error{}
				}
				refused[i] = err
			}
			logged = append(logged, lcs...)
			continue
		}
		if c.Op == model.OpErase {
			lcs, err := w.erase(ctx, tx, i, c.ID, b, seq, now)
			if err != nil {
				return nil, nil, err
			}
			logged = append(logged, lcs...)
			continue
		}
		lc, err := w.applyAndLog(ctx, tx, i, c, r.enc[i], b.Origin, seq, now)
		if err != nil {
			return nil, nil, err
		}
		if lc != nil {
			logged = append(logged, *lc)
		}
	}
	return logged, refused, nil
}

// auditAccess writes an audit line for every app access the batch being
// applied started or ended.
func (w *writer) auditAccess(ctx context.Context, tx *sql.Tx, b Batch, now time.Time) error {
	for _, ac := range w.access {
		action := "app_disabled"
		if ac.Enabled {
			action = "app_enabled"
		}
		if err := insertAudit(ctx, tx, now, AuditEntry{Actor: b.actor(), AccountID: ac.AccountID, DeviceID: b.DeviceID, Action: action, Detail: ac.Reason, Addr: b.Addr}); err != nil {
			return err
		}
	}
	return nil
}

// applyAndLog applies one change and appends it to the change log with the
// next seq; it returns the logged change, or nil when nothing changed.
func (w *writer) applyAndLog(ctx context.Context, tx *sql.Tx, i int, c model.Change, enc encoded, origin string, seq *int64, now time.Time) (*model.Change, error) {
	lc, enc, err := w.applyChange(ctx, tx, i, c, enc, now)
	if err != nil || lc == nil {
		return nil, err
	}
	if err := w.logChange(ctx, tx, lc, enc, origin, seq, now); err != nil {
		return nil, err
	}
	return lc, nil
}

// logChange appends applied change lc (encoded as enc) to the change log
// with the next seq, which it sets in lc.
func (w *writer) logChange(ctx context.Context, tx *sql.Tx, lc *model.Change, enc encoded, origin string, seq *int64, now time.Time) error {
	*seq++
	lc.Seq = *seq
	var fields any
	if enc.fields != nil {
		fields = enc.fields
	}
	if _, err := w.exec(ctx, tx, "log", `INSERT INTO changes(seq, entity, op, row_id, fields, origin, created_at) VALUES (?,?,?,?,?,?,?)`,
		lc.Seq, lc.Entity, string(lc.Op), lc.ID, fields, origin, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("log change: %w", err)
	}
	return nil
}

// applyChange applies one change and returns it as it is to be logged, or
// nil when it changed nothing.
func (w *writer) applyChange(ctx context.Context, tx *sql.Tx, index int, c model.Change, enc encoded, now time.Time) (*model.Change, encoded, error) {
	e, ok := model.Lookup(c.Entity)
	if !ok {
		return nil, enc, &model.ValidationError{Index: index, Reason: fmt.Sprintf("unknown entity %q", c.Entity)}
	}
	c, enc, skip, err := w.fieldRules(ctx, tx, index, c, enc, now)
	if err != nil || skip {
		return nil, enc, err
	}
	if c.Op != model.OpDelete && c.Op != model.OpUpsert {
		return nil, enc, &model.ValidationError{Index: index, Entity: e.Name, Reason: fmt.Sprintf("unknown op %q", c.Op)}
	}
	// An account's app access before the change, when it may change it
	// (also when a field is set to null).
	var before *model.AppAccess
	if model.SetsAppAccess(c) {
		a, err := w.appAccess(ctx, tx, c.ID)
		if err != nil {
			return nil, enc, err
		}
		before = &a
	}
	changed, err := w.writeRow(ctx, tx, e.Name, c, enc)
	if err != nil || !changed {
		return nil, enc, err
	}
	if before != nil {
		if err := w.accessChanged(ctx, tx, c, *before, now); err != nil {
			return nil, enc, err
		}
	}
	if c.Op == model.OpDelete {
		return &model.Change{Entity: e.Name, Op: model.OpDelete, ID: c.ID}, enc, nil
	}
	return &model.Change{Entity: e.Name, Op: model.OpUpsert, ID: c.ID, Fields: c.Fields}, enc, nil
}

// writeRow deletes or upserts the row of change c (encoded as enc) and
// reports whether it changed: a delete of no row and an empty upsert of an
// existing row change nothing.
func (w *writer) writeRow(ctx context.Context, tx *sql.Tx, entity string, c model.Change, enc encoded) (bool, error) {
	if c.Op == model.OpDelete {
		res, err := w.exec(ctx, tx, "del:"+entity, `DELETE FROM `+quote(entity)+` WHERE id = ?`, c.ID)
		if err != nil {
			return false, fmt.Errorf("delete %s/%s: %w", entity, c.ID, err)
		}
		n, _ := res.RowsAffected()
		return n > 0, nil
	}
	name, query := upsertQuery(entity, enc.names)
	res, err := w.exec(ctx, tx, name, query, enc.args...)
	if err != nil {
		return false, fmt.Errorf("upsert %s/%s: %w", entity, c.ID, err)
	}
	if len(enc.names) > 0 {
		return true, nil
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
