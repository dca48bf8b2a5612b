package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/therasync/therasync/model"
)

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

// write runs fn in the writer's next group commit, under a savepoint of its
// own: fn's writes are durable when write returns nil, and undone when fn
// fails. fn runs on the writer goroutine and must only use tx.
func (t *Tenant) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	_, err := t.enqueue(ctx, &writeReq{ctx: ctx, fn: fn, done: make(chan writeRes, 1)})
	return err
}

// execWrite runs one statement through the writer (see write).
func (t *Tenant) execWrite(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
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

// enqueue hands r to the writer and waits for its result.
func (t *Tenant) enqueue(ctx context.Context, r *writeReq) (Result, error) {
	select {
	case t.w.reqs <- r:
	case <-t.w.stop:
		return Result{}, ErrClosed
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.res, res.err
	case <-t.w.done:
		select {
		case res := <-r.done:
			return res.res, res.err
		default:
			return Result{}, ErrClosed
		}
	case <-ctx.Done():
		// The batch may still commit; a retry with the same ID is safe.
		return Result{}, ctx.Err()
	}
}

// encoded is a change turned into what the writer executes and logs.
type encoded struct {
	names  []string // the given fields, sorted
	args   []any    // the row id, then the column value of each name
	fields []byte   // the fields as logged (JSON); nil for a delete
}

// encodeChange converts a validated change into column values and its log
// form.
func encodeChange(index int, c model.Change) (encoded, error) {
	e, ok := model.Lookup(c.Entity)
	if !ok {
		return encoded{}, &model.ValidationError{Index: index, Reason: fmt.Sprintf("unknown entity %q", c.Entity)}
	}
	if c.Op != model.OpUpsert {
		return encoded{args: []any{c.ID}}, nil
	}
	enc := encoded{names: make([]string, 0, len(c.Fields)), args: make([]any, 1, len(c.Fields)+1)}
	enc.args[0] = c.ID
	for k := range c.Fields {
		enc.names = append(enc.names, k)
	}
	sort.Strings(enc.names)
	for _, n := range enc.names {
		f, ok := e.Field(n)
		if !ok {
			return encoded{}, &model.ValidationError{Index: index, Entity: e.Name, Field: n, Reason: "unknown field"}
		}
		v, err := toColumn(f, c.Fields[n])
		if err != nil {
			return encoded{}, fmt.Errorf("encode %s.%s: %w", e.Name, n, err)
		}
		enc.args = append(enc.args, v)
	}
	var err error
	if enc.fields, err = json.Marshal(c.Fields); err != nil {
		return encoded{}, fmt.Errorf("encode %s/%s: %w", e.Name, c.ID, err)
	}
	return enc, nil
}

type writeReq struct {
	ctx context.Context
	// fn, when set, is run instead of applying batch.
	fn     func(ctx context.Context, tx *sql.Tx) error
	batch  Batch
	enc    []encoded // one per change of batch
	digest [32]byte
	done   chan writeRes // buffered: the writer never blocks on it
}

type writeRes struct {
	res Result
	err error
}

// maxCachedStmts bounds the writer's cache of prepared upserts.
const maxCachedStmts = 512

// writer owns a tenant's write connection. One goroutine (loop) takes every
// queued batch, applies each under its own savepoint and commits them all
// with one fsync.
type writer struct {
	t    *Tenant
	db   *sql.DB
	reqs chan *writeReq
	stop chan struct{} // closed by close: stop taking batches
	done chan struct{} // closed when loop has returned

	// Owned by loop.
	builds  []string             // build requests of the batch being applied
	access  []AccessChange       // app access changes of the batch being applied
	stmts   map[string]*sql.Stmt // prepared on the connection
	pending map[string]string    // name → query, to prepare after this group
	local   map[string]*sql.Stmt // bound to the current group's transaction
	loc     *time.Location
}

func newWriter(t *Tenant, db *sql.DB) *writer {
	w := &writer{
		t:       t,
		db:      db,
		reqs:    make(chan *writeReq, 1024),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		stmts:   make(map[string]*sql.Stmt),
		pending: make(map[string]string),
		local:   make(map[string]*sql.Stmt),
	}
	go w.loop()
	return w
}

func (w *writer) close() error {
	close(w.stop)
	<-w.done
	for _, s := range w.stmts {
		s.Close()
	}
	return w.db.Close()
}

func (w *writer) loop() {
	defer close(w.done)
	for {
		var first *writeReq
		select {
		case first = <-w.reqs:
		case <-w.stop:
			for {
				select {
				case r := <-w.reqs:
					r.done <- writeRes{err: ErrClosed}
				default:
					return
				}
			}
		}
		group := []*writeReq{first}
		n := len(first.batch.Changes)
	collect:
		for n < w.t.opts.MaxGroupChanges {
			select {
			case r := <-w.reqs:
				group = append(group, r)
				n += len(r.batch.Changes)
			default:
				break collect
			}
		}
		w.commit(group)
	}
}

// commit applies a group of batches in one transaction, each under its own
// savepoint so that a failing batch leaves the others intact, and replies to
// every batch once the transaction is durable.
func (w *writer) commit(group []*writeReq) {
	results := make([]writeRes, len(group))
	err := w.commitTx(group, results)
	w.cachePending(context.Background())
	for i, r := range group {
		if err != nil && results[i].err == nil {
			results[i] = writeRes{err: err}
		}
		r.done <- results[i]
	}
}

func (w *writer) commitTx(group []*writeReq, results []writeRes) error {
	ctx := context.Background() // a batch's commit is not abandoned halfway
	if w.loc == nil {
		st, err := w.t.Settings(ctx)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		w.loc = st.Location()
	}
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("commit: begin: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return fmt.Errorf("commit: read seq: %w", err)
	}
	now := w.t.opts.Now()
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			results[i].err = err
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT batch`); err != nil {
			return fmt.Errorf("commit: savepoint: %w", err)
		}
		start := seq
		var (
			res Result
			err error
		)
		if r.fn != nil {
			err = r.fn(ctx, tx)
		} else {
			res, err = w.applyBatch(ctx, tx, r, &seq, now)
		}
		if err != nil {
			seq = start
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO batch`); rerr != nil {
				return fmt.Errorf("commit: rollback to savepoint: %w", rerr)
			}
			results[i].err = err
		} else {
			results[i].res = res
		}
		if _, err := tx.ExecContext(ctx, `RELEASE batch`); err != nil {
			return fmt.Errorf("commit: release savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (w *writer) applyBatch(ctx context.Context, tx *sql.Tx, r *writeReq, seq *int64, now time.Time) (Result, error) {
	b := r.batch
	if b.ID != "" {
		var (
			digest []byte
			first  int64
		)
		err := tx.QueryRowContext(ctx, `SELECT digest, seq FROM batches WHERE batch_id = ?`, b.ID).Scan(&digest, &first)
		switch {
		case err == nil:
			if !bytes.Equal(digest, r.digest[:]) {
				return Result{}, fmt.Errorf("batch_id %q was applied before with other changes: %w", b.ID, ErrConflict)
			}
			return Result{Seq: first, Repeated: true}, nil
		case !errors.Is(err, sql.ErrNoRows):
			return Result{}, fmt.Errorf("look up batch: %w", err)
		}
	}
	if b.Writer != nil {
		if err := w.checkPush(ctx, tx, b); err != nil {
			return Result{}, err
		}
	}
	w.builds = w.builds[:0]
	w.access = w.access[:0]
	logged := make([]model.Change, 0, len(b.Changes))
	var refused map[int]error
	for i, c := range b.Changes {
		if b.Writer != nil {
			lcs, err := w.applyMutation(ctx, tx, r, i, seq, now)
			if err != nil {
				if !refusal(err) {
					return Result{}, err
				}
				if refused == nil {
					refused = map[int]error{}
				}
				refused[i] = err
			}
			logged = append(logged, lcs...)
			continue
		}
		lc, err := w.applyAndLog(ctx, tx, i, c, r.enc[i], b.Origin, seq, now)
		if err != nil {
			return Result{}, err
		}
		if lc != nil {
			logged = append(logged, *lc)
		}
	}
	for _, ac := range w.access {
		action := "app_disabled"
		if ac.Enabled {
			action = "app_enabled"
		}
		if err := insertAudit(ctx, tx, now, AuditEntry{Actor: b.actor(), AccountID: ac.AccountID, DeviceID: b.DeviceID, Action: action, Detail: ac.Reason, Addr: b.Addr}); err != nil {
			return Result{}, err
		}
	}
	if b.ID != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO batches(batch_id, digest, seq, created_at) VALUES (?,?,?,?)`,
			b.ID, r.digest[:], *seq, now.UTC().Format(time.RFC3339)); err != nil {
			return Result{}, fmt.Errorf("record batch: %w", err)
		}
	}
	res := Result{Seq: *seq, Changes: logged, Refused: refused}
	if len(w.builds) > 0 {
		res.BuildRequests = append([]string(nil), w.builds...)
	}
	if len(w.access) > 0 {
		res.AccessChanges = append([]AccessChange(nil), w.access...)
	}
	return res, nil
}

// applyAndLog applies one change and appends it to the change log with the
// next seq; it returns the logged change, or nil when nothing changed.
func (w *writer) applyAndLog(ctx context.Context, tx *sql.Tx, i int, c model.Change, enc encoded, origin string, seq *int64, now time.Time) (*model.Change, error) {
	lc, enc, err := w.applyChange(ctx, tx, i, c, enc, now)
	if err != nil || lc == nil {
		return nil, err
	}
	*seq++
	lc.Seq = *seq
	var fields any
	if enc.fields != nil {
		fields = enc.fields
	}
	if _, err := w.exec(ctx, tx, "log", `INSERT INTO changes(seq, entity, op, row_id, fields, origin, created_at) VALUES (?,?,?,?,?,?,?)`,
		lc.Seq, lc.Entity, string(lc.Op), lc.ID, fields, origin, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return nil, fmt.Errorf("log change: %w", err)
	}
	return lc, nil
}

// refusal reports whether err refuses one change of a device's push (and
// leaves the others to apply) rather than failing the whole group.
func refusal(err error) bool {
	var (
		ve *model.ValidationError
		fe *model.ForbiddenError
		ce *model.ConflictError
	)
	return errors.As(err, &ve) || errors.As(err, &fe) || errors.As(err, &ce)
}

// applyMutation applies change i of a device's push under a savepoint of
// its own, once per mutation id, if the writer may make it. It returns the
// logged changes: the mutation's and any the server derived from it.
func (w *writer) applyMutation(ctx context.Context, tx *sql.Tx, r *writeReq, i int, seq *int64, now time.Time) (lcs []model.Change, err error) {
	b := r.batch
	c := b.Changes[i]
	var first int64
	err = w.scan(ctx, tx, "mutation", `SELECT seq FROM mutations WHERE device_id = ? AND id = ?`, []any{b.DeviceID, b.MutationIDs[i]}, &first)
	if err == nil {
		return nil, nil // applied before: acknowledged again
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("look up mutation: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT mutation`); err != nil {
		return nil, err
	}
	start, builds, access := *seq, len(w.builds), len(w.access)
	defer func() {
		if err != nil {
			*seq = start
			w.builds, w.access = w.builds[:builds], w.access[:access]
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO mutation`); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		if _, rerr := tx.ExecContext(ctx, `RELEASE mutation`); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	rows := w.rows(ctx, tx)
	before, err := rows.Row(c.Entity, c.ID)
	if err != nil {
		return nil, err
	}
	if err := model.CanWrite(*b.Writer, i, c, before, rows); err != nil {
		return nil, err
	}
	enc := r.enc[i]
	checkIn := model.IsCheckIn(c)
	if checkIn {
		if c, err = model.StampCheckIn(i, c, before, b.DeviceID, now); err != nil {
			return nil, err
		}
		if enc, err = encodeChange(i, c); err != nil {
			return nil, err
		}
	}
	lc, err := w.applyAndLog(ctx, tx, i, c, enc, b.Origin, seq, now)
	if err != nil {
		return nil, err
	}
	if lc != nil {
		lcs = append(lcs, *lc)
		if checkIn {
			counted, err := w.checkIn(ctx, tx, i, c.ID, before, b.Origin, seq, now)
			if err != nil {
				return nil, err
			}
			lcs = append(lcs, counted...)
		}
	}
	if _, err := w.exec(ctx, tx, "mutated", `INSERT INTO mutations(device_id, id, seq, created_at) VALUES (?,?,?,?)`,
		b.DeviceID, b.MutationIDs[i], *seq, now.UTC().Format(time.RFC3339)); err != nil {
		return nil, fmt.Errorf("record mutation: %w", err)
	}
	return lcs, nil
}

// txRows reads the current rows within a writing transaction, for the
// domain rules' decisions on a write (model.Rows, model.CheckInRows), with
// the writer's prepared statements.
type txRows struct {
	w   *writer
	ctx context.Context
	tx  *sql.Tx
}

// rows returns the rows as tx reads them.
func (w *writer) rows(ctx context.Context, tx *sql.Tx) txRows { return txRows{w, ctx, tx} }

// Row returns a row's fields, nil when there is none.
func (r txRows) Row(entity, id string) (map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("row: unknown entity %q", entity)
	}
	s, err := r.w.prepared(r.ctx, r.tx, "row:"+e.Name, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE id = ?`)
	if err != nil {
		return nil, err
	}
	var rowID string
	out, err := scanFields(e, s.QueryRowContext(r.ctx, id), &rowID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("row %s/%s: %w", entity, id, err)
	}
	return out, nil
}

// Find returns the rows of entity whose fields equal match's values.
func (r txRows) Find(entity string, match map[string]string) (map[string]map[string]any, error) {
	args := make(map[string]any, len(match))
	for f, v := range match {
		args[f] = v
	}
	e, name, where, vals, err := r.where("find", entity, args)
	if err != nil {
		return nil, err
	}
	s, err := r.w.prepared(r.ctx, r.tx, name, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE `+where)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(r.ctx, vals...)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", entity, err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var id string
		fields, err := scanFields(e, rows, &id)
		if err != nil {
			return nil, fmt.Errorf("find %s: %w", entity, err)
		}
		out[id] = fields
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find %s: %w", entity, err)
	}
	return out, nil
}

// Count returns how many rows of entity have fields equal to match's
// values.
func (r txRows) Count(entity string, match map[string]any) (int64, error) {
	e, name, where, vals, err := r.where("count", entity, match)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := r.w.scan(r.ctx, r.tx, name, `SELECT count(*) FROM `+quote(e.Name)+` WHERE `+where, vals, &n); err != nil {
		return 0, fmt.Errorf("count %s: %w", entity, err)
	}
	return n, nil
}

// where renders match, a condition on entity's fields, as an SQL WHERE
// clause and its arguments, and names the statement (op, the entity and
// the fields: one prepared statement per shape).
func (r txRows) where(op, entity string, match map[string]any) (e *model.Entity, name, where string, args []any, err error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, "", "", nil, fmt.Errorf("%s: unknown entity %q", op, entity)
	}
	if len(match) == 0 {
		return nil, "", "", nil, fmt.Errorf("%s: %s rows without a condition", op, entity)
	}
	names := make([]string, 0, len(match))
	for f := range match {
		names = append(names, f)
	}
	sort.Strings(names)
	conds := make([]string, len(names))
	args = make([]any, len(names))
	for i, n := range names {
		f, ok := e.Field(n)
		if !ok {
			return nil, "", "", nil, fmt.Errorf("%s: unknown field %s.%s", op, entity, n)
		}
		if v, ok := match[n].(string); ok {
			args[i] = v // as the column holds it, whatever the field's kind
		} else if args[i], err = toColumn(f, match[n]); err != nil {
			return nil, "", "", nil, fmt.Errorf("%s: %s.%s: %w", op, entity, n, err)
		}
		conds[i] = quote(n) + ` = ?`
	}
	return e, op + ":" + e.Name + ":" + strings.Join(names, ","), strings.Join(conds, ` AND `), args, nil
}

// applyChange applies one change and returns it as it is to be logged, or
// nil when it changed nothing.
func (w *writer) applyChange(ctx context.Context, tx *sql.Tx, index int, c model.Change, enc encoded, now time.Time) (*model.Change, encoded, error) {
	e, ok := model.Lookup(c.Entity)
	if !ok {
		return nil, enc, &model.ValidationError{Index: index, Reason: fmt.Sprintf("unknown entity %q", c.Entity)}
	}
	if e.Name == model.ProfileShares && (c.Op == model.OpDelete || c.Op == model.OpUpsert) {
		var (
			skip bool
			err  error
		)
		if c, skip, err = model.ShareWrite(index, c, w.rows(ctx, tx), now); err != nil || skip {
			return nil, enc, err
		}
		if enc, err = encodeChange(index, c); err != nil {
			return nil, enc, err
		}
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
	if c.Op == model.OpDelete {
		res, err := w.exec(ctx, tx, "del:"+e.Name, `DELETE FROM `+quote(e.Name)+` WHERE id = ?`, c.ID)
		if err != nil {
			return nil, enc, fmt.Errorf("delete %s/%s: %w", e.Name, c.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, enc, nil
		}
		if before != nil {
			if err := w.accessChanged(ctx, tx, c, *before, now); err != nil {
				return nil, enc, err
			}
		}
		return &model.Change{Entity: e.Name, Op: model.OpDelete, ID: c.ID}, enc, nil
	}
	if e.Name == model.Transactions {
		var err error
		if c, err = model.AssignReference(index, c, w.rows(ctx, tx), now.In(w.loc), w.nextRef(ctx, tx)); err != nil {
			return nil, enc, err
		}
		if enc, err = encodeChange(index, c); err != nil {
			return nil, enc, err
		}
	}
	name, query := upsertQuery(e.Name, enc.names)
	res, err := w.exec(ctx, tx, name, query, enc.args...)
	if err != nil {
		return nil, enc, fmt.Errorf("upsert %s/%s: %w", e.Name, c.ID, err)
	}
	if before != nil {
		if err := w.accessChanged(ctx, tx, c, *before, now); err != nil {
			return nil, enc, err
		}
	}
	if len(enc.names) == 0 {
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, enc, nil // an empty upsert of an existing row
		}
	}
	return &model.Change{Entity: e.Name, Op: model.OpUpsert, ID: c.ID, Fields: c.Fields}, enc, nil
}

// appAccess reads what decides the app access of account id, within tx.
func (w *writer) appAccess(ctx context.Context, tx *sql.Tx, id string) (model.AppAccess, error) {
	var (
		enabled sql.NullInt64
		role    sql.NullString
	)
	err := w.scan(ctx, tx, "access", `SELECT app_enabled, role FROM accounts WHERE id = ?`, []any{id}, &enabled, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return model.AppAccess{}, nil
	}
	if err != nil {
		return model.AppAccess{}, fmt.Errorf("look up account %s: %w", id, err)
	}
	return model.AppAccess{Exists: true, Enabled: enabled.Int64 != 0, Role: role.String}, nil
}

// accessChanged records, in the batch's transaction, what applied change c
// of an account did to its app access (before: the access before it, see
// model.AppAccessChange): an access that started or ended, and a shard
// build request.
func (w *writer) accessChanged(ctx context.Context, tx *sql.Tx, c model.Change, before model.AppAccess, now time.Time) error {
	after, err := w.appAccess(ctx, tx, c.ID)
	if err != nil {
		return err
	}
	ac := model.AppAccessChange(c, before, after)
	if ac.Changed {
		w.access = append(w.access, AccessChange{AccountID: c.ID, Enabled: ac.Enabled, Reason: ac.Reason})
	}
	if !ac.Build {
		return nil
	}
	if _, err := w.exec(ctx, tx, "request", `INSERT INTO shard_requests(account_id, requested_at) VALUES (?, ?)
		ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at`, c.ID, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("request build of %s: %w", c.ID, err)
	}
	w.builds = append(w.builds, c.ID)
	return nil
}

// nextRef counts transaction references in ref_counters, within tx.
func (w *writer) nextRef(ctx context.Context, tx *sql.Tx) model.NextRef {
	return func(account string, year int) (int64, error) {
		var n int64
		err := w.scan(ctx, tx, "refctr", `INSERT INTO ref_counters(account_id, year, n) VALUES (?, ?, 1)
		ON CONFLICT(account_id, year) DO UPDATE SET n = n + 1 RETURNING n`, []any{account, year}, &n)
		if err != nil {
			return 0, fmt.Errorf("count reference: %w", err)
		}
		return n, nil
	}
}

// prepared returns the statement called name bound to tx. Statements are
// prepared once per group on the transaction; after the group they are
// prepared on the connection (free again then) and reused by later groups.
func (w *writer) prepared(ctx context.Context, tx *sql.Tx, name, query string) (*sql.Stmt, error) {
	if s, ok := w.local[name]; ok {
		return s, nil
	}
	var s *sql.Stmt
	if c, ok := w.stmts[name]; ok {
		s = tx.StmtContext(ctx, c)
	} else {
		var err error
		if s, err = tx.PrepareContext(ctx, query); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", name, err)
		}
		if len(w.stmts)+len(w.pending) < maxCachedStmts {
			w.pending[name] = query
		}
	}
	w.local[name] = s
	return s, nil
}

// cachePending prepares on the connection the statements that the last
// group prepared on its transaction. It runs between transactions.
func (w *writer) cachePending(ctx context.Context) {
	for name, q := range w.pending {
		if s, err := w.db.PrepareContext(ctx, q); err == nil {
			w.stmts[name] = s
		}
		delete(w.pending, name)
	}
	clear(w.local)
}

func (w *writer) exec(ctx context.Context, tx *sql.Tx, name, query string, args ...any) (sql.Result, error) {
	s, err := w.prepared(ctx, tx, name, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

func (w *writer) scan(ctx context.Context, tx *sql.Tx, name, query string, args []any, dest ...any) error {
	s, err := w.prepared(ctx, tx, name, query)
	if err != nil {
		return err
	}
	return s.QueryRowContext(ctx, args...).Scan(dest...)
}

func upsertQuery(entity string, names []string) (name, query string) {
	key := "up:" + entity + ":" + strings.Join(names, ",")
	var q strings.Builder
	q.WriteString(`INSERT INTO ` + quote(entity) + ` ("id"`)
	for _, n := range names {
		q.WriteString("," + quote(n))
	}
	q.WriteString(`) VALUES (?` + strings.Repeat(",?", len(names)) + `) ON CONFLICT("id") DO `)
	if len(names) == 0 {
		q.WriteString(`NOTHING`)
	} else {
		q.WriteString(`UPDATE SET `)
		for i, n := range names {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(quote(n) + `=excluded.` + quote(n))
		}
	}
	return key, q.String()
}
