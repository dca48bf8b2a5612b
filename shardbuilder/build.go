// Package shardbuilder builds shards: SQLite files holding exactly what one
// account sees of its tenant, as the access policy (model.Scope) decides.
// The same builder makes the per-account backups and the data behind
// statistics.
package shardbuilder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/therasync/therasync/model"
)

// SchemaVersion is the version of the shard file format: the tables and
// sync_meta written here. A shard of another version is outdated.
const SchemaVersion = 1

// Errors of a build.
var (
	ErrNoAccount = errors.New("no such account")
	ErrNoRole    = errors.New("account has no valid role")
)

// Source is the tenant database a shard is built from.
type Source struct {
	TenantID string
	Path     string // the tenant's central database file
}

// Meta describes a built shard file.
type Meta struct {
	TenantID      string
	AccountID     string
	Role          string
	Seq           int64
	History       string // the history id of the log at Seq (DESIGN §2)
	SchemaVersion int
	BuiltAt       time.Time
	Size          int64
	SHA256        string // hex
	Rows          int64  // entity rows in the shard
}

// index is a shard index, created after the rows when its table has all
// its columns.
type index struct {
	name, table string
	cols        []string
}

// indexes serve the device's queries: a patient's sessions, a therapist's
// day, a course's members and attendances.
var indexes = []index{
	{"profiles_owner", model.Profiles, []string{"owner_id"}},
	{"profile_shares_profile", model.ProfileShares, []string{"profile_id"}},
	{"sessions_profile", model.Sessions, []string{"profile_id"}},
	{"sessions_therapist", model.Sessions, []string{"therapist_id", "starts_at"}},
	{"courses_therapist", model.Courses, []string{"therapist_id"}},
	{"course_members_course", model.CourseMembers, []string{"course_id"}},
	{"course_members_profile", model.CourseMembers, []string{"profile_id"}},
	{"attendances_course", model.Attendances, []string{"course_id", "date"}},
	{"transactions_profile", model.Transactions, []string{"profile_id"}},
	{"transactions_account", model.Transactions, []string{"account_id"}},
}

// WriteFile builds the shard of account from src into the new file path (it
// must not exist) at one consistent seq of the source, and fsyncs it. On
// error the file is removed.
func WriteFile(ctx context.Context, src Source, accountID, path string, now time.Time) (m Meta, err error) {
	if _, err := os.Lstat(path); err == nil {
		return Meta{}, fmt.Errorf("build shard: %s exists", path)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	m, err = build(ctx, src, accountID, path, now)
	if err != nil {
		return Meta{}, fmt.Errorf("build shard of %s/%s: %w", src.TenantID, accountID, err)
	}
	if m.Size, m.SHA256, err = syncAndHash(path); err != nil {
		return Meta{}, fmt.Errorf("build shard of %s/%s: %w", src.TenantID, accountID, err)
	}
	return m, nil
}

// build writes the shard of accountID from src into the new file path, all
// of it from one snapshot of the source; WriteFile adds size and hash.
func build(ctx context.Context, src Source, accountID, path string, now time.Time) (Meta, error) {
	db, conn, err := openShard(ctx, path, src.Path)
	if err != nil {
		return Meta{}, err
	}
	defer db.Close()
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return Meta{}, err
	}
	defer tx.Rollback()

	m := Meta{TenantID: src.TenantID, AccountID: accountID, SchemaVersion: SchemaVersion, BuiltAt: now.UTC().Truncate(time.Millisecond)}
	if err := readAccount(ctx, tx, &m); err != nil {
		return Meta{}, err
	}
	if err := fillShard(ctx, tx, &m); err != nil {
		return Meta{}, err
	}
	if err := tx.Commit(); err != nil {
		return Meta{}, err
	}
	if _, err := conn.ExecContext(ctx, `DETACH DATABASE c`); err != nil {
		return Meta{}, fmt.Errorf("detach: %w", err)
	}
	return m, nil
}

// openShard opens the new shard file at path on one connection, with the
// central database srcPath attached read-only as c.
func openShard(ctx context.Context, path, srcPath string) (*sql.DB, *sql.Conn, error) {
	// Build-time pragmas: the file is private until renamed, so it needs no
	// journal and no syncs; WriteFile fsyncs it once at the end. 16 KiB pages
	// build a third faster than 4 KiB ones (fewer page writes and frees);
	// larger pages would be faster still but make every later write of the
	// device's small row updates costlier. Temporary data (the scope sets,
	// the index sorter) stays in temp files: in memory, modernc's allocator
	// returns every freed buffer to the OS, which costs more than the files.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)"+
		"&_pragma=page_size(16384)&_pragma=cache_size(-16000)&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	if err := attachSource(ctx, conn, srcPath); err != nil {
		conn.Close()
		db.Close()
		return nil, nil, err
	}
	return db, conn, nil
}

// attachSource locks the shard of conn for itself and attaches the central
// database srcPath read-only as c.
func attachSource(ctx context.Context, conn *sql.Conn, srcPath string) error {
	// Exclusive locking for the shard alone: set before ATTACH, it would
	// also lock the attached central database.
	if _, err := conn.ExecContext(ctx, `PRAGMA main.locking_mode = EXCLUSIVE`); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS c`, "file:"+srcPath+"?mode=ro"); err != nil {
		return fmt.Errorf("attach %s: %w", srcPath, err)
	}
	return nil
}

// readAccount reads the source's seq and the account's role into m. Its
// first read opens the snapshot of c that every later read of tx sees.
func readAccount(ctx context.Context, tx *sql.Tx, m *Meta) error {
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), (SELECT history FROM c.log_meta) FROM c.changes`).Scan(&m.Seq, &m.History); err != nil {
		return fmt.Errorf("read seq: %w", err)
	}
	var role sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT role FROM c.accounts WHERE id = ?`, m.AccountID).Scan(&role)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNoAccount
	}
	if err != nil {
		return fmt.Errorf("read account: %w", err)
	}
	if !model.ValidRole(role.String) {
		return ErrNoRole
	}
	m.Role = role.String
	return nil
}

// fillShard writes what m's account sees into the shard: its rows (counted
// in m.Rows), the indexes and sync_meta.
func fillShard(ctx context.Context, tx *sql.Tx, m *Meta) error {
	scope, err := loadScope(ctx, tx, model.Viewer{ID: m.AccountID, Role: m.Role})
	if err != nil {
		return err
	}
	if err := writeScopeSets(ctx, tx, scope); err != nil {
		return err
	}
	for _, e := range model.Entities() {
		n, err := copyEntity(ctx, tx, scope, e)
		if err != nil {
			return fmt.Errorf("copy %s: %w", e.Name, err)
		}
		m.Rows += n
	}
	for _, ix := range indexes {
		if err := createIndex(ctx, tx, m.Role, ix); err != nil {
			return err
		}
	}
	return writeMeta(ctx, tx, *m)
}

// loadScope reads the link fields of the source and lets the policy decide
// what the viewer sees. Admins and secretaries need no links.
func loadScope(ctx context.Context, tx *sql.Tx, v model.Viewer) (*model.Scope, error) {
	l := model.NewLinks()
	if v.Role != model.RoleMember {
		return model.NewScope(v, l), nil
	}
	load := func(query string, add func(id, a, b string)) error {
		rows, err := tx.QueryContext(ctx, query)
		if err != nil {
			return fmt.Errorf("load links: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id   string
				a, b sql.NullString
			)
			if err := rows.Scan(&id, &a, &b); err != nil {
				return fmt.Errorf("load links: %w", err)
			}
			add(id, a.String, b.String)
		}
		return rows.Err()
	}
	for _, entity := range model.ReasonEntities() { // all a scope needs
		a, b := model.LinkFields(entity)
		colB := `NULL`
		if b != "" {
			colB = `"` + b + `"`
		}
		query := `SELECT id, "` + a + `", ` + colB + ` FROM c."` + entity + `"`
		if err := load(query, func(id, a, b string) { l.Set(entity, id, model.LinkRow{A: a, B: b}) }); err != nil {
			return nil, err
		}
	}
	return model.NewScope(v, l), nil
}

// writeScopeSets puts the scope's id sets into temporary tables that the
// copy statements test against.
func writeScopeSets(ctx context.Context, tx *sql.Tx, s *model.Scope) error {
	for _, set := range []struct {
		name model.Set
		ids  map[string]bool
	}{{model.SetProfiles, s.Profiles}, {model.SetCourses, s.Courses}} {
		if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE `+setTable(set.name)+` (id TEXT PRIMARY KEY) WITHOUT ROWID`); err != nil {
			return fmt.Errorf("scope table: %w", err)
		}
		if len(set.ids) == 0 {
			continue
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO `+setTable(set.name)+` (id) VALUES (?)`)
		if err != nil {
			return fmt.Errorf("scope table: %w", err)
		}
		for id := range set.ids {
			if _, err := stmt.ExecContext(ctx, id); err != nil {
				stmt.Close()
				return fmt.Errorf("scope table: %w", err)
			}
		}
		stmt.Close()
	}
	return nil
}

// setTable is the temporary table holding a scope set.
func setTable(s model.Set) string { return "temp.scope_" + string(s) }

// whereSQL renders a policy rule as an SQL condition with its arguments;
// ok is false when the rule admits no row.
func whereSQL(r model.Rule, viewerID string) (cond string, args []any, ok bool) {
	if r.All {
		return "1", nil, true
	}
	if len(r.Conds) == 0 {
		return "", nil, false
	}
	parts := make([]string, 0, len(r.Conds))
	for _, c := range r.Conds {
		col := quote(c.Field)
		switch {
		case c.Self:
			parts = append(parts, col+" = ?")
			args = append(args, viewerID)
		case c.In != "":
			parts = append(parts, col+" IN (SELECT id FROM "+setTable(c.In)+")")
		}
	}
	return strings.Join(parts, " OR "), args, true
}

// copyEntity creates the entity's table with the columns the viewer sees and
// copies the visible rows into it in one statement.
func copyEntity(ctx context.Context, tx *sql.Tx, s *model.Scope, e *model.Entity) (int64, error) {
	fields := model.Fields(s.Viewer.Role, e.Name)
	cols := []string{`"id"`}
	defs := []string{`"id" TEXT PRIMARY KEY`}
	for _, f := range fields {
		cols = append(cols, quote(f.Name))
		defs = append(defs, quote(f.Name)+" "+sqlType(f.Kind))
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE main.`+quote(e.Name)+` (`+strings.Join(defs, ", ")+`)`); err != nil {
		return 0, err
	}
	cond, args, ok := whereSQL(s.RuleFor(e.Name), s.Viewer.ID)
	if !ok {
		return 0, nil
	}
	colList := strings.Join(cols, ", ")
	res, err := tx.ExecContext(ctx, `INSERT INTO main.`+quote(e.Name)+` (`+colList+`) SELECT `+colList+
		` FROM c.`+quote(e.Name)+` WHERE `+cond, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// createIndex creates index ix in the shard, unless the role does not see
// all its columns.
func createIndex(ctx context.Context, tx *sql.Tx, role string, ix index) error {
	have := map[string]bool{}
	for _, f := range model.Fields(role, ix.table) {
		have[f.Name] = true
	}
	cols := make([]string, len(ix.cols))
	for i, c := range ix.cols {
		if !have[c] {
			return nil
		}
		cols[i] = quote(c)
	}
	_, err := tx.ExecContext(ctx, `CREATE INDEX main.`+quote(ix.name)+` ON `+quote(ix.table)+` (`+strings.Join(cols, ", ")+`)`)
	if err != nil {
		return fmt.Errorf("index %s: %w", ix.name, err)
	}
	return nil
}

// writeMeta writes the shard's sync_meta table from m.
func writeMeta(ctx context.Context, tx *sql.Tx, m Meta) error {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE main.sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("sync_meta: %w", err)
	}
	for _, kv := range [][2]string{
		{"tenant_id", m.TenantID},
		{"account_id", m.AccountID},
		{"role", m.Role},
		{"seq", strconv.FormatInt(m.Seq, 10)},
		{"history", m.History},
		{"schema_version", strconv.Itoa(m.SchemaVersion)},
		{"built_at", m.BuiltAt.Format(time.RFC3339Nano)},
	} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO main.sync_meta (key, value) VALUES (?, ?)`, kv[0], kv[1]); err != nil {
			return fmt.Errorf("sync_meta: %w", err)
		}
	}
	return nil
}

// syncAndHash fsyncs the file and returns its size and SHA-256.
func syncAndHash(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("fsync %s: %w", path, err)
	}
	return Sum(f)
}

// quote quotes an SQL identifier.
func quote(name string) string { return `"` + name + `"` }

// sqlType is the SQLite column type of a field kind.
func sqlType(k model.Kind) string {
	switch k {
	case model.Int, model.Bool:
		return "INTEGER"
	}
	return "TEXT"
}
