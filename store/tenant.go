package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Tenant is one open tenant database: a read pool and a single writer
// goroutine that group-commits every write.
type Tenant struct {
	// Static: set by openTenant.
	id   string
	path string
	opts Options
	rdb  *sql.DB // the read pool, for any goroutine
	w    *writer // every write goes through it

	// Guarded by closeOnce.
	closeOnce sync.Once
	closeErr  error
}

func openTenant(ctx context.Context, id, path string, opts Options) (*Tenant, error) {
	wdb, err := openWriteDB(path)
	if err != nil {
		return nil, fmt.Errorf("open tenant %s: %w", id, err)
	}
	if err := migrate(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open tenant %s: %w", id, err)
	}
	rdb, err := openReadDB(path)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open tenant %s: %w", id, err)
	}
	t := &Tenant{id: id, path: path, opts: opts, rdb: rdb}
	t.w = newWriter(t, wdb)
	return t, nil
}

// ID returns the tenant's id.
func (t *Tenant) ID() string { return t.id }

// Path returns the file of the tenant's central database.
func (t *Tenant) Path() string { return t.path }

func (t *Tenant) close() error {
	t.closeOnce.Do(func() {
		werr := t.w.close()
		t.closeErr = errors.Join(werr, t.rdb.Close())
	})
	return t.closeErr
}

func (t *Tenant) nowString() string { return t.opts.Now().UTC().Format(time.RFC3339Nano) }
