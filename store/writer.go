package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// This file is a tenant's group-commit engine: one writer goroutine takes
// every queued write (a batch, or a function of the store's), applies each
// under a savepoint of its own and commits them all with one fsync; it
// keeps the statements it runs prepared. What a batch means is batch.go's.

// write runs fn in the writer's next group commit, under a savepoint of its
// own: fn's writes are durable when write returns nil, and undone when fn
// fails. fn runs on the writer goroutine and must only use tx.
func (t *Tenant) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	_, err := t.enqueue(ctx, &writeReq{ctx: ctx, fn: fn, done: make(chan writeRes, 1)})
	return err
}

// exclusive runs fn on the writer's connection outside any transaction,
// between two group commits: for what cannot run in one (VACUUM, a
// checkpoint). Writes wait meanwhile. fn runs on the writer goroutine and
// must only use db.
func (t *Tenant) exclusive(ctx context.Context, fn func(ctx context.Context, db *sql.DB) error) error {
	_, err := t.enqueue(ctx, &writeReq{ctx: ctx, conn: fn, done: make(chan writeRes, 1)})
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

type writeReq struct {
	// Static: set by the caller before it queues the request, then only
	// read (by the writer goroutine).
	ctx context.Context
	// fn, when set, is run instead of applying batch.
	fn func(ctx context.Context, tx *sql.Tx) error
	// conn, when set, is run alone on the connection, outside a
	// transaction (exclusive).
	conn   func(ctx context.Context, db *sql.DB) error
	batch  Batch
	enc    []encoded // one per change of batch
	digest [32]byte

	// done carries the one result from the writer goroutine to the caller;
	// buffered: the writer never blocks on it.
	done chan writeRes
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
	// Static: set by newWriter.
	t    *Tenant
	db   *sql.DB // the tenant's one write connection
	reqs chan *writeReq
	stop chan struct{} // closed by close: stop taking batches
	done chan struct{} // closed when loop has returned

	// Owned by the writer goroutine (loop and everything it runs, the
	// functions given to Tenant.write included); nothing else touches them.
	//
	// The batch being applied:
	builds []string       // its build requests
	access []AccessChange // the app access it started or ended
	erased bool           // it erased a profile
	// erasedGroup is set when the group being committed erased; walDirty
	// from then until the WAL was checkpointed and truncated
	// (truncateWAL): until then it may hold pages with what was erased.
	erasedGroup, walDirty bool
	// Prepared statements:
	stmts   map[string]*sql.Stmt // prepared on the connection
	pending map[string]string    // name → query, to prepare after this group
	local   map[string]*sql.Stmt // bound to the current group's transaction
	// loc is the tenant's time zone, read by the first commit; nil makes
	// the next commit read it again (SetSettings).
	loc *time.Location
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
		// A process may have ended between an erasure's commit and the
		// WAL's truncation: truncate it once now.
		walDirty: true,
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
	// retry, while the WAL may hold erased pages (walDirty), is when
	// truncateWAL tries again if no commit comes first.
	var (
		retry   = time.After(0)
		backoff = walRetry
	)
	for {
		var first *writeReq
		select {
		case first = <-w.reqs:
		case <-retry:
			retry = nil
			if !w.truncateWAL(context.Background(), 1) {
				backoff = min(2*backoff, walRetryMax)
				retry = time.After(backoff)
			}
			continue
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
		if first.conn != nil {
			w.runAlone(first)
			continue
		}
		group := []*writeReq{first}
		n := len(first.batch.Changes)
		var alone *writeReq // an exclusive request, run after the group
	collect:
		for n < w.t.opts.MaxGroupChanges {
			select {
			case r := <-w.reqs:
				if r.conn != nil {
					alone = r
					break collect
				}
				group = append(group, r)
				n += len(r.batch.Changes)
			default:
				break collect
			}
		}
		w.commit(group)
		switch {
		case !w.walDirty:
			retry, backoff = nil, walRetry
		case retry == nil:
			retry = time.After(backoff)
		}
		if alone != nil {
			w.runAlone(alone)
		}
	}
}

// runAlone runs an exclusive request on the connection, outside a
// transaction, and replies to it.
func (w *writer) runAlone(r *writeReq) {
	if err := r.ctx.Err(); err != nil {
		r.done <- writeRes{err: err}
		return
	}
	r.done <- writeRes{err: r.conn(context.Background(), w.db)}
}

// commit applies a group of batches in one transaction, each under its own
// savepoint so that a failing batch leaves the others intact, and replies to
// every batch once the transaction is durable.
func (w *writer) commit(group []*writeReq) {
	results := make([]writeRes, len(group))
	err := w.commitTx(group, results)
	if w.erasedGroup {
		// Before the answer: an erasure is answered once no WAL frame
		// holds what it erased, unless readers keep it busy (then the
		// loop tries again).
		w.erasedGroup = false
		w.truncateWAL(context.Background(), walAttempts)
	}
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
