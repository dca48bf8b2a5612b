package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/therasync/therasync/model"
)

// Tenant is one open tenant database: a read pool and a single writer
// goroutine that group-commits every write.
type Tenant struct {
	id   string
	path string
	opts Options

	rdb *sql.DB
	w   *writer

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

// Settings returns the tenant's settings.
func (t *Tenant) Settings(ctx context.Context) (Settings, error) {
	st, _, err := t.settings(ctx)
	return st, err
}

func (t *Tenant) settings(ctx context.Context) (Settings, []byte, error) {
	return readSettings(ctx, t.rdb, t.id)
}

// readSettings reads the tenant's settings and the hash of its practice
// key.
func readSettings(ctx context.Context, q rowQueryer, id string) (Settings, []byte, error) {
	var (
		st      Settings
		lic     string
		created string
		hash    []byte
	)
	err := q.QueryRowContext(ctx, `SELECT id, name, licenses, tz, key_hash, created_at FROM tenant LIMIT 1`).
		Scan(&st.ID, &st.Name, &lic, &st.TZ, &hash, &created)
	if err != nil {
		return Settings{}, nil, fmt.Errorf("tenant %s settings: %w", id, err)
	}
	if err := json.Unmarshal([]byte(lic), &st.Licenses); err != nil {
		return Settings{}, nil, fmt.Errorf("tenant %s licenses: %w", id, err)
	}
	st.CreatedAt, _ = time.Parse(time.RFC3339, created)
	st.KeyHash = hash
	return st, hash, nil
}

// SettingsChange is a change of a tenant's settings; a nil field stays as
// it is.
type SettingsChange struct {
	Licenses []string // each LicenseSync or LicenseApp
	TZ       *string  // an IANA time zone
}

// SetSettings changes the tenant's settings and writes the audit line,
// with by as its actor (and addr), in one transaction; it returns the
// settings before and after. Devices of a tenant that lost a license the
// app needs may no longer sync (DESIGN §5): the caller closes their
// sockets.
func (t *Tenant) SetSettings(ctx context.Context, c SettingsChange, by, addr string) (before, after Settings, err error) {
	var lic []byte
	if c.Licenses != nil {
		l, err := licenseList(c.Licenses)
		if err != nil {
			return Settings{}, Settings{}, fmt.Errorf("set settings: %w", err)
		}
		lic, _ = json.Marshal(l)
	}
	if c.TZ != nil {
		if _, err := time.LoadLocation(*c.TZ); err != nil || *c.TZ == "" {
			return Settings{}, Settings{}, fmt.Errorf("set settings: unknown time zone %q", *c.TZ)
		}
	}
	err = t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if before, _, err = readSettings(ctx, tx, t.id); err != nil {
			return err
		}
		if lic != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE tenant SET licenses = ?`, string(lic)); err != nil {
				return err
			}
			if err := bumpAccessEpoch(ctx, tx); err != nil {
				return err
			}
		}
		if c.TZ != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE tenant SET tz = ?`, *c.TZ); err != nil {
				return err
			}
			t.w.loc = nil // this runs on the writer's goroutine: it reads the zone again
		}
		if after, _, err = readSettings(ctx, tx, t.id); err != nil {
			return err
		}
		detail := fmt.Sprintf("licenses %s, tz %s", strings.Join(after.Licenses, ","), after.TZ)
		return insertAudit(ctx, tx, t.opts.Now(), AuditEntry{Actor: by, Action: "settings_changed", Detail: detail, Addr: addr})
	})
	if err != nil {
		return Settings{}, Settings{}, fmt.Errorf("set settings: %w", err)
	}
	return before, after, nil
}

// Seq returns the tenant's newest committed seq (0 for an empty log).
func (t *Tenant) Seq(ctx context.Context) (int64, error) {
	var seq int64
	if err := t.rdb.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("tenant %s seq: %w", t.id, err)
	}
	return seq, nil
}

// Changes returns at most limit changes after seq since, in seq order, and
// the newest committed seq, read in one consistent snapshot.
func (t *Tenant) Changes(ctx context.Context, since int64, limit int) ([]model.Change, int64, error) {
	r, err := t.Read(ctx, since, limit)
	return r.Changes, r.Latest, err
}

// Read is what Tenant.Read returns: changes and, from the same snapshot,
// the newest seq and the access epoch.
type Read struct {
	Changes []model.Change
	Latest  int64
	// AccessEpoch moves with every change that ends an access outside the
	// change log (a device revoked or logged out, a token replaced, a
	// license withdrawn, the practice key replaced): a reader that sees it
	// moved checks its connections' access before sending Changes.
	AccessEpoch int64
}

// Read returns at most limit changes after seq since, in seq order, with
// the newest seq and the access epoch of the same snapshot.
func (t *Tenant) Read(ctx context.Context, since int64, limit int) (Read, error) {
	var r Read
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), (SELECT n FROM access_epoch) FROM changes`).Scan(&r.Latest, &r.AccessEpoch); err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, entity, op, row_id, fields FROM changes WHERE seq > ? ORDER BY seq LIMIT ?`, since, limit)
	if err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	defer rows.Close()
	r.Changes = make([]model.Change, 0, min(limit, 1024))
	for rows.Next() {
		var (
			c      model.Change
			fields []byte
		)
		if err := rows.Scan(&c.Seq, &c.Entity, &c.Op, &c.ID, &fields); err != nil {
			return r, fmt.Errorf("read changes: %w", err)
		}
		if fields != nil {
			if c.Fields, err = model.DecodeFields(c.Entity, fields); err != nil {
				return r, fmt.Errorf("read change %d: %w", c.Seq, err)
			}
		}
		r.Changes = append(r.Changes, c)
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("read changes: %w", err)
	}
	return r, nil
}

// AccessEpoch returns the tenant's access epoch (see Read).
func (t *Tenant) AccessEpoch(ctx context.Context) (int64, error) {
	var n int64
	if err := t.rdb.QueryRowContext(ctx, `SELECT n FROM access_epoch`).Scan(&n); err != nil {
		return 0, fmt.Errorf("access epoch: %w", err)
	}
	return n, nil
}

// bumpAccessEpoch moves the access epoch, within a writing transaction.
func bumpAccessEpoch(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE access_epoch SET n = n + 1`); err != nil {
		return fmt.Errorf("bump access epoch: %w", err)
	}
	return nil
}

// Row returns the current fields of one row, or ErrNotFound.
func (t *Tenant) Row(ctx context.Context, entity, id string) (map[string]any, error) {
	return scanRow(ctx, t.rdb, entity, id)
}

type rowQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func scanRow(ctx context.Context, q rowQueryer, entity, id string) (map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("row: unknown entity %q", entity)
	}
	var rowID string
	out, err := scanFields(e, q.QueryRowContext(ctx, `SELECT id, `+columnList(e)+` FROM `+quote(e.Name)+` WHERE id = ?`, id), &rowID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("row %s/%s: %w", entity, id, err)
	}
	return out, nil
}

// scanFields scans a row of id and the entity's columns, in schema order,
// into id and the fields' Go values.
func scanFields(e *model.Entity, sc interface{ Scan(...any) error }, id *string) (map[string]any, error) {
	vals := make([]any, len(e.Fields))
	ptrs := make([]any, 0, len(e.Fields)+1)
	ptrs = append(ptrs, id)
	for i := range vals {
		ptrs = append(ptrs, &vals[i])
	}
	if err := sc.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(e.Fields))
	for i, f := range e.Fields {
		v, err := fromColumn(f, vals[i])
		if err != nil {
			return nil, err
		}
		out[f.Name] = v
	}
	return out, nil
}

// RowsBy returns the current rows of entity whose field equals value, by
// id; field must be one of the entity's fields.
func (t *Tenant) RowsBy(ctx context.Context, entity, field, value string) (map[string]map[string]any, error) {
	e, ok := model.Lookup(entity)
	if !ok {
		return nil, fmt.Errorf("rows: unknown entity %q", entity)
	}
	if _, ok := e.Field(field); !ok {
		return nil, fmt.Errorf("rows: unknown field %s.%s", entity, field)
	}
	return queryRows(ctx, t.rdb, entity, `WHERE `+quote(field)+` = ?`, value)
}

// ExistedBefore reports whether the row existed just before seq: its
// newest change before seq is an upsert. A row none of whose earlier
// changes is in the log counts as not existing.
func (t *Tenant) ExistedBefore(ctx context.Context, entity, id string, seq int64) (bool, error) {
	var op string
	err := t.rdb.QueryRowContext(ctx, `SELECT op FROM changes WHERE entity = ? AND row_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1`,
		entity, id, seq).Scan(&op)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("row %s/%s before %d: %w", entity, id, seq, err)
	}
	return op == string(model.OpUpsert), nil
}

// RoleAt returns the account's role as of seq: the role its newest change
// at or before seq set, "" when none did.
func (t *Tenant) RoleAt(ctx context.Context, accountID string, seq int64) (string, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? AND fields IS NOT NULL
		ORDER BY seq DESC`, model.Accounts, accountID, seq)
	if err != nil {
		return "", fmt.Errorf("role of %s at %d: %w", accountID, seq, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return "", err
		}
		var f struct {
			Role *string `json:"role"`
		}
		if json.Unmarshal(b, &f) == nil && f.Role != nil {
			return *f.Role, nil
		}
	}
	return "", rows.Err()
}

// Links returns the link fields of every row of the tenant (what the access
// policy decides from) and the seq they are at, read in one snapshot.
func (t *Tenant) Links(ctx context.Context) (*model.Links, int64, error) {
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("read links: %w", err)
	}
	defer tx.Rollback()
	return readLinks(ctx, tx)
}

// LinksAt returns the link fields of every row as of seq: the current ones,
// with the rows changed after seq rebuilt from their own changes up to seq.
// It costs a read of the link columns plus the history of the rows changed
// since seq, not a replay of the whole log.
func (t *Tenant) LinksAt(ctx context.Context, seq int64) (*model.Links, error) {
	if seq <= 0 {
		return model.NewLinks(), nil // before the first change, no row existed
	}
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	defer tx.Rollback()
	l, head, err := readLinks(ctx, tx)
	if err != nil || head <= seq {
		return l, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT entity, row_id FROM changes WHERE seq > ?`, seq)
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	type rowKey struct{ entity, id string }
	var changed []rowKey
	for rows.Next() {
		var k rowKey
		if err := rows.Scan(&k.entity, &k.id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read links at %d: %w", seq, err)
		}
		if model.HasLinks(k.entity) {
			changed = append(changed, k)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	history, err := tx.PrepareContext(ctx, `SELECT op, fields FROM changes WHERE entity = ? AND row_id = ? AND seq <= ? ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read links at %d: %w", seq, err)
	}
	defer history.Close()
	for _, k := range changed {
		l.Apply(model.Change{Entity: k.entity, Op: model.OpDelete, ID: k.id})
		rows, err := history.QueryContext(ctx, k.entity, k.id, seq)
		if err != nil {
			return nil, fmt.Errorf("read links at %d: %w", seq, err)
		}
		for rows.Next() {
			c := model.Change{Entity: k.entity, ID: k.id}
			var fields []byte
			if err := rows.Scan(&c.Op, &fields); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read links at %d: %w", seq, err)
			}
			if fields != nil {
				if c.Fields, err = model.DecodeFields(c.Entity, fields); err != nil {
					rows.Close()
					return nil, fmt.Errorf("read links at %d: %w", seq, err)
				}
			}
			l.Apply(c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read links at %d: %w", seq, err)
		}
	}
	return l, nil
}

// readLinks reads every row's link fields and the seq, within tx.
func readLinks(ctx context.Context, tx *sql.Tx) (*model.Links, int64, error) {
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return nil, 0, fmt.Errorf("read links: %w", err)
	}
	l := model.NewLinks()
	for _, entity := range model.LinkedEntities() {
		a, b := model.LinkFields(entity)
		colB := `''`
		if b != "" {
			colB = `coalesce(` + quote(b) + `, '')`
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, coalesce(`+quote(a)+`, ''), `+colB+` FROM `+quote(entity))
		if err != nil {
			return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
		}
		for rows.Next() {
			var id string
			var r model.LinkRow
			if err := rows.Scan(&id, &r.A, &r.B); err != nil {
				rows.Close()
				return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
			}
			l.Set(entity, id, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, 0, fmt.Errorf("read links of %s: %w", entity, err)
		}
	}
	return l, seq, nil
}
