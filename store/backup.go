package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/therasync/therasync/internal/fsutil"
	"github.com/therasync/therasync/model"
)

// Size returns the size in bytes of the tenant's database (its pages, the
// WAL not counted), an estimate of a backup's size.
func (t *Tenant) Size(ctx context.Context) (int64, error) {
	var n int64
	err := t.rdb.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("tenant %s size: %w", t.id, err)
	}
	return n, nil
}

// Backup writes a consistent copy of the tenant's database, as of one
// moment, to the new file path with VACUUM INTO while writers go on, then
// verifies it with integrity_check. The file, its directory and the
// directories created for it are fsynced: a backup that returned survives a
// power loss.
func (t *Tenant) Backup(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("backup tenant %s: %s exists", t.id, path)
	}
	if err := fsutil.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	// A connection of its own: the read pool is query_only.
	db, err := sql.Open("sqlite", "file:"+t.path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	if err := syncFile(path); err != nil {
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	if err := VerifyFile(ctx, path); err != nil {
		return fmt.Errorf("backup tenant %s: %w", t.id, err)
	}
	return nil
}

// VerifyFile runs PRAGMA integrity_check on the database file at path.
func VerifyFile(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	msgs, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		return fmt.Errorf("verify %s: integrity_check: %v", path, msgs)
	}
	return nil
}

// ErrExists is returned by Restore for a tenant that is in the data
// directory already, unless forced.
var ErrExists = errors.New("tenant exists")

// Restore verifies the backup file of one tenant's database and puts it in
// place as that tenant's database, replacing an existing one only when force
// is set. syncd and the worker must not run on the data directory meanwhile.
// It returns the tenant's id.
func (s *Store) Restore(ctx context.Context, backup string, force bool) (string, error) {
	if err := VerifyFile(ctx, backup); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+backup+"?mode=ro")
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	var id string
	err = db.QueryRowContext(ctx, `SELECT id FROM tenant LIMIT 1`).Scan(&id)
	db.Close()
	if err != nil {
		return "", fmt.Errorf("restore %s: not a tenant database: %w", backup, err)
	}
	if !tenantIDPattern.MatchString(id) {
		return "", fmt.Errorf("restore %s: bad tenant id %q", backup, id)
	}
	s.mu.Lock()
	_, open := s.tenants[id]
	s.mu.Unlock()
	if open {
		return "", fmt.Errorf("restore %s: tenant %s is open in this process", backup, id)
	}
	dst := s.tenantPath(id)
	if _, err := os.Stat(dst); err == nil && !force {
		return id, fmt.Errorf("restore tenant %s: %w (use --force to replace it)", id, ErrExists)
	}
	if err := fsutil.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return id, fmt.Errorf("restore: %w", err)
	}
	tmp := dst + ".restore"
	if err := s.prepareRestore(ctx, id, backup, tmp, dst); err != nil {
		os.Remove(tmp)
		return id, fmt.Errorf("restore: %w", err)
	}
	// The old WAL belongs to the old database: it must not be replayed
	// onto the restored one.
	for _, ext := range []string{"-wal", "-shm"} {
		if err := os.Remove(dst + ext); err != nil && !os.IsNotExist(err) {
			return id, fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return id, fmt.Errorf("restore: %w", err)
	}
	if err := syncFile(filepath.Dir(dst)); err != nil {
		return id, fmt.Errorf("restore: %w", err)
	}
	return id, VerifyFile(ctx, dst)
}

// prepareRestore copies backup to tmp and makes it the database that will
// replace dst: the access of dst kept (when there is one), a new history,
// and the tenant's shard files dropped (they are of another history: none
// may be served).
func (s *Store) prepareRestore(ctx context.Context, id, backup, tmp, dst string) error {
	if err := copyFile(backup, tmp); err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil {
		if err := keepAccess(ctx, tmp, dst, s.opts.Now()); err != nil {
			return err
		}
	}
	if err := restartHistory(ctx, tmp, s.opts.Now()); err != nil {
		return err
	}
	if err := os.RemoveAll(s.tenantShardsDir(id)); err != nil {
		return fmt.Errorf("drop the shards: %w", err)
	}
	return nil
}

// restartHistory makes the restored copy tmp a new history of the log
// (DESIGN §2): devices and practice PCs that saw more than the backup get
// resync or history_changed instead of going on from a cursor the log no
// longer continues. It forgets the shards the backup recorded and records
// a build request for every app-enabled account, so fresh shards are built
// as soon as the worker runs.
func restartHistory(ctx context.Context, tmp string, now time.Time) error {
	db, err := openWriteDB(tmp)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrate(ctx, db); err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("new history: %w", err)
	}
	defer tx.Rollback()
	if _, err := newHistory(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM shards`); err != nil {
		return fmt.Errorf("new history: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO shard_requests(account_id, requested_at)
		SELECT id, ? FROM accounts WHERE app_enabled = 1 AND role IN (?, ?, ?)
		ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at`,
		now.UTC().Format(time.RFC3339Nano), model.RoleAdmin, model.RoleMember, model.RoleSecretary); err != nil {
		return fmt.Errorf("new history: %w", err)
	}
	return tx.Commit()
}

// keepAccess carries over, into the restored copy tmp, what the replaced
// database cur says about access that a restore must not undo: every
// device as it is now (a device revoked, wiped or logged out after the
// backup stays so; a token issued since stays valid), the practice key
// (one rotated after the backup stays rotated), the TOTP enrolments and the
// audit lines written since the backup (the audit log is append-only); it
// moves the access epoch and audits the restore.
func keepAccess(ctx context.Context, tmp, cur string, now time.Time) error {
	for _, path := range []string{cur, tmp} { // both at the newest schema
		db, err := openWriteDB(path)
		if err != nil {
			return err
		}
		err = migrate(ctx, db)
		db.Close()
		if err != nil {
			return err
		}
	}
	db, err := openWriteDB(tmp)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS cur`, "file:"+cur+"?mode=ro"); err != nil {
		return fmt.Errorf("keep access: %w", err)
	}
	defer conn.ExecContext(context.Background(), `DETACH DATABASE cur`)
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keep access: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM main.changes`).Scan(&seq); err != nil {
		return fmt.Errorf("keep access: %w", err)
	}
	audit := `id, at, actor, account_id, device_id, action, detail, addr`
	for _, q := range []string{
		`INSERT OR REPLACE INTO main.devices(` + deviceCols + `) SELECT ` + deviceCols + ` FROM cur.devices`,
		`UPDATE main.tenant SET key_hash = (SELECT key_hash FROM cur.tenant LIMIT 1)`,
		`DELETE FROM main.totp`,
		`INSERT INTO main.totp(account_id, secret, enrolled_at) SELECT account_id, secret, enrolled_at FROM cur.totp`,
		`INSERT INTO main.audit(` + audit + `) SELECT ` + audit + ` FROM cur.audit WHERE id > (SELECT coalesce(max(id), 0) FROM main.audit) ORDER BY id`,
		`UPDATE main.access_epoch SET n = max(n, (SELECT n FROM cur.access_epoch)) + 1`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("keep access: %w", err)
		}
	}
	if err := insertAudit(ctx, tx, now, AuditEntry{Actor: "operator", Action: "restored",
		Detail: fmt.Sprintf("backup at seq %d; devices, practice key, TOTP enrolments and audit lines kept from the replaced database", seq)}); err != nil {
		return err
	}
	return tx.Commit()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncFile fsyncs a file or directory.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
