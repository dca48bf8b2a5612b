// Package store is Therasync's central store: one SQLite database per tenant
// (practice group) under a data directory, holding the current rows of every
// entity and the tenant's change log.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/therasync/therasync/internal/fsutil"
	"github.com/therasync/therasync/model"
)

// Errors returned by the store.
var (
	ErrNotFound       = errors.New("not found")
	ErrUnauthorized   = errors.New("unauthorized")
	ErrLicenseMissing = errors.New("license missing")
	ErrConflict       = errors.New("conflict")
	ErrClosed         = errors.New("store closed")
)

// The licenses a tenant can hold (model's).
const (
	LicenseSync = model.LicenseSync
	LicenseApp  = model.LicenseApp
)

// DefaultTZ is a tenant's time zone when none is given.
const DefaultTZ = "Europe/Berlin"

var tenantIDPattern = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

// Options configure a Store.
type Options struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// MaxGroupChanges caps the changes committed in one group commit;
	// zero means 20,000.
	MaxGroupChanges int
	// CompactBatch is about how many changes of the log one write
	// transaction of a compaction folds; zero means 1024.
	CompactBatch int
	// FullVacuumMax is the most live bytes of a database made before
	// compaction existed (auto_vacuum NONE) that a compaction VACUUMs,
	// writes waiting, to give space back; zero means 64 MiB. Bigger ones
	// are left to Tenant.Vacuum.
	FullVacuumMax int64
}

// Store opens and holds the tenants of one data directory. Tenants are
// opened on first use and stay open until Close.
type Store struct {
	// Static: set by Open.
	dir  string
	opts Options

	mu sync.Mutex
	// Guarded by mu.
	tenants map[string]*Tenant
	closed  bool
}

// Open returns a Store over the data directory dir, creating it if needed.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxGroupChanges <= 0 {
		opts.MaxGroupChanges = 20000
	}
	if opts.CompactBatch <= 0 {
		opts.CompactBatch = 1024
	}
	if opts.FullVacuumMax <= 0 {
		opts.FullVacuumMax = 64 << 20
	}
	if err := fsutil.MkdirAll(filepath.Join(dir, "tenants"), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{dir: dir, opts: opts, tenants: make(map[string]*Tenant)}, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close stops every open tenant's writer and closes its databases.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	ts := s.tenants
	s.tenants = map[string]*Tenant{}
	s.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.close())
	}
	return errors.Join(errs...)
}

func (s *Store) tenantPath(id string) string {
	return filepath.Join(s.dir, "tenants", id, "central.db")
}

// tenantShardsDir is the directory of every shard file of the tenant
// (shardbuilder.ShardDir puts each account's under it).
func (s *Store) tenantShardsDir(id string) string {
	return filepath.Join(s.dir, "shards", id)
}

// NewTenant describes a tenant to create.
type NewTenant struct {
	Name     string
	Licenses []string // each LicenseSync or LicenseApp
	TZ       string   // IANA zone; empty means DefaultTZ
}

// CreateTenant creates a tenant and returns its settings and its practice
// key. The key is shown only here: the store keeps only its hash.
func (s *Store) CreateTenant(ctx context.Context, nt NewTenant) (Settings, string, error) {
	if strings.TrimSpace(nt.Name) == "" {
		return Settings{}, "", fmt.Errorf("create tenant: name is empty")
	}
	if nt.TZ == "" {
		nt.TZ = DefaultTZ
	}
	if _, err := time.LoadLocation(nt.TZ); err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: unknown time zone %q", nt.TZ)
	}
	lic, err := licenseList(nt.Licenses)
	if err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	id, err := newTenantID()
	if err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	secret, err := randomToken(32)
	if err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	path := s.tenantPath(id)
	// The tenant's directory must outlive a power loss, as its database.
	if err := fsutil.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	db, err := openWriteDB(path)
	if err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	defer db.Close()
	if err := migrate(ctx, db); err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	st := Settings{ID: id, Name: strings.TrimSpace(nt.Name), Licenses: lic, TZ: nt.TZ, CreatedAt: s.opts.Now().UTC().Truncate(time.Second)}
	licJSON, _ := json.Marshal(lic)
	hash := sha256.Sum256([]byte(secret))
	if _, err := db.ExecContext(ctx, `INSERT INTO tenant(id, name, licenses, tz, key_hash, created_at) VALUES (?,?,?,?,?,?)`,
		id, st.Name, string(licJSON), st.TZ, hash[:], st.CreatedAt.Format(time.RFC3339)); err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	// The database's own directory entries (the file, its WAL).
	if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
		return Settings{}, "", fmt.Errorf("create tenant: %w", err)
	}
	return st, id + "." + secret, nil
}

// TenantIDs lists the ids of every tenant in the data directory.
func (s *Store) TenantIDs() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "tenants"))
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if !e.IsDir() || !tenantIDPattern.MatchString(e.Name()) {
			continue
		}
		if _, err := os.Stat(s.tenantPath(e.Name())); err == nil {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Tenant returns the open tenant id, opening it on first use. An unknown id
// gives ErrNotFound.
func (s *Store) Tenant(ctx context.Context, id string) (*Tenant, error) {
	if !tenantIDPattern.MatchString(id) {
		return nil, ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if t, ok := s.tenants[id]; ok {
		return t, nil
	}
	path := s.tenantPath(id)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	// Opening runs migrations on a new handle; it happens once per tenant and
	// process, so holding s.mu for it keeps two opens from racing.
	t, err := openTenant(ctx, id, path, s.opts)
	if err != nil {
		return nil, err
	}
	s.tenants[id] = t
	return t, nil
}

// Authenticate returns the tenant whose practice key is key, or
// ErrUnauthorized.
func (s *Store) Authenticate(ctx context.Context, key string) (*Tenant, Settings, error) {
	t, secret, err := s.credentialTenant(ctx, key)
	if err != nil {
		return nil, Settings{}, err
	}
	st, hash, err := t.settings(ctx)
	if err != nil {
		return nil, Settings{}, err
	}
	got := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], hash) != 1 {
		return nil, Settings{}, ErrUnauthorized
	}
	return t, st, nil
}

// credentialTenant splits a practice key or device token,
// "<tenant id>.<secret>", and returns the open tenant it names and the
// secret; ErrUnauthorized when it names none.
func (s *Store) credentialTenant(ctx context.Context, cred string) (*Tenant, string, error) {
	id, secret, ok := strings.Cut(cred, ".")
	if !ok || secret == "" {
		return nil, "", ErrUnauthorized
	}
	t, err := s.Tenant(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, "", ErrUnauthorized
	}
	if err != nil {
		return nil, "", err
	}
	return t, secret, nil
}

func newTenantID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "t" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// openWriteDB opens the single-connection handle that writes a tenant's
// database: WAL, synchronous=FULL, immediate transactions, and
// secure_delete, so that what a delete or an update removes is zeroed in
// its page (table and index b-trees alike) and freed pages are zeroed too:
// an erased value leaves no byte behind (DESIGN §2). A new file gets
// auto_vacuum=INCREMENTAL (so that compaction can give space back in
// steps); on an existing file that pragma changes nothing until a VACUUM.
func openWriteDB(path string) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=auto_vacuum(INCREMENTAL)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=secure_delete(ON)" +
		"&_pragma=foreign_keys(OFF)&_pragma=cache_size(-16000)&_pragma=temp_store(MEMORY)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// openReadDB opens the pool of read-only connections of a tenant's database.
func openReadDB(path string) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=cache_size(-8000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	return db, nil
}
