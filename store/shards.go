package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// Shard describes one built shard file of an account.
type Shard struct {
	AccountID     string    `json:"account_id"`
	Seq           int64     `json:"seq"`
	Path          string    `json:"-"` // relative to the data directory
	Size          int64     `json:"size"`
	SHA256        string    `json:"sha256"`
	Role          string    `json:"role"`
	SchemaVersion int       `json:"schema_version"`
	BuiltAt       time.Time `json:"built_at"`
	// History is the history id of the log the shard was built from; only
	// shards of the log's current history are served or count as built.
	History string `json:"history"`
}

// servable is the SQL condition on a shards row that a device can go on
// from its seq: of the log's current history (DESIGN §2), and not below
// the log's compacted_to (changes after it may be gone).
const servable = `history = (SELECT history FROM log_meta) AND seq >= (SELECT compacted_to FROM log_meta)`

// KeepShards is how many shards per account are kept, files and records.
const KeepShards = 2

// RecordShard records a built shard and forgets all but the newest
// KeepShards of the account (the builder removes their files).
func (t *Tenant) RecordShard(ctx context.Context, s Shard) error {
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO shards(account_id, seq, path, size, sha256, role, schema_version, built_at, history)
		VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(account_id, seq) DO UPDATE SET path=excluded.path, size=excluded.size,
		sha256=excluded.sha256, role=excluded.role, schema_version=excluded.schema_version, built_at=excluded.built_at, history=excluded.history`,
			s.AccountID, s.Seq, s.Path, s.Size, s.SHA256, s.Role, s.SchemaVersion, s.BuiltAt.UTC().Format(time.RFC3339Nano), s.History); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM shards WHERE account_id = ? AND seq NOT IN
		(SELECT seq FROM shards WHERE account_id = ? ORDER BY seq DESC LIMIT ?)`, s.AccountID, s.AccountID, KeepShards)
		return err
	})
	if err != nil {
		return fmt.Errorf("record shard: %w", err)
	}
	return nil
}

// LatestShard returns the newest shard of the account that a device can
// go on from (servable): built from the log's current history, at or past
// its compacted_to; or ErrNotFound.
func (t *Tenant) LatestShard(ctx context.Context, accountID string) (Shard, error) {
	var (
		s     Shard
		built string
	)
	err := t.rdb.QueryRowContext(ctx, `SELECT account_id, seq, path, size, sha256, role, schema_version, built_at, history
		FROM shards WHERE account_id = ? AND `+servable+` ORDER BY seq DESC LIMIT 1`, accountID).
		Scan(&s.AccountID, &s.Seq, &s.Path, &s.Size, &s.SHA256, &s.Role, &s.SchemaVersion, &built, &s.History)
	if errors.Is(err, sql.ErrNoRows) {
		return Shard{}, ErrNotFound
	}
	if err != nil {
		return Shard{}, fmt.Errorf("latest shard of %s: %w", accountID, err)
	}
	s.BuiltAt, _ = time.Parse(time.RFC3339Nano, built)
	return s, nil
}

// RequestBuilds durably records that the accounts' shards are to be built.
// Only accounts that exist, are app-enabled and have a role are recorded;
// their ids are returned.
func (t *Tenant) RequestBuilds(ctx context.Context, accountIDs ...string) ([]string, error) {
	now := t.opts.Now().UTC().Format(time.RFC3339Nano)
	var out []string
	for _, id := range accountIDs {
		res, err := t.execWrite(ctx, `INSERT INTO shard_requests(account_id, requested_at)
			SELECT id, ? FROM accounts WHERE id = ? AND app_enabled = 1 AND role IN (?, ?, ?)
			ON CONFLICT(account_id) DO UPDATE SET requested_at = excluded.requested_at`,
			now, id, model.RoleAdmin, model.RoleMember, model.RoleSecretary)
		if err != nil {
			return out, fmt.Errorf("request build of %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// RequestOutdatedBuilds records a build request for every app-enabled
// account whose shard is missing, older than the tenant's seq, or of another
// schema version, and returns their ids.
func (t *Tenant) RequestOutdatedBuilds(ctx context.Context, schemaVersion int) ([]string, error) {
	rows, err := t.rdb.QueryContext(ctx, `
		SELECT a.id FROM accounts a
		LEFT JOIN (SELECT account_id, max(seq) AS seq FROM shards WHERE `+servable+` GROUP BY account_id) s ON s.account_id = a.id
		LEFT JOIN shards l ON l.account_id = a.id AND l.seq = s.seq
		WHERE a.app_enabled = 1 AND a.role IN (?, ?, ?)
		  AND (s.seq IS NULL OR s.seq < (SELECT coalesce(max(seq), 0) FROM changes) OR l.schema_version != ?)
		ORDER BY a.id`, model.RoleAdmin, model.RoleMember, model.RoleSecretary, schemaVersion)
	if err != nil {
		return nil, fmt.Errorf("outdated shards: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("outdated shards: %w", err)
	}
	return t.RequestBuilds(ctx, ids...)
}

// DueBuilds returns the accounts whose builds are due: every recorded
// request, and every app-enabled account without any shard.
func (t *Tenant) DueBuilds(ctx context.Context) ([]string, error) {
	rows, err := t.rdb.QueryContext(ctx, `
		SELECT account_id FROM shard_requests
		UNION
		SELECT a.id FROM accounts a WHERE a.app_enabled = 1 AND a.role IN (?, ?, ?)
		  AND NOT EXISTS (SELECT 1 FROM shards WHERE account_id = a.id AND `+servable+`)
		ORDER BY 1`, model.RoleAdmin, model.RoleMember, model.RoleSecretary)
	if err != nil {
		return nil, fmt.Errorf("due builds: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("due builds: %w", err)
	}
	return ids, nil
}

// BuildStarted reads the time a build starts, to be passed to BuildDone.
func (t *Tenant) BuildStarted() time.Time { return t.opts.Now() }

// BuildDone forgets the account's build request if it was made no later than
// started: a request that came in during the build stays due.
func (t *Tenant) BuildDone(ctx context.Context, accountID string, started time.Time) error {
	_, err := t.execWrite(ctx, `DELETE FROM shard_requests WHERE account_id = ? AND requested_at <= ?`,
		accountID, started.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("build done for %s: %w", accountID, err)
	}
	return nil
}

// ClaimWeekly records the weekly run named week and reports whether this
// call claimed it; of any number of processes, one does.
func (t *Tenant) ClaimWeekly(ctx context.Context, week string) (bool, error) {
	res, err := t.execWrite(ctx, `INSERT INTO weekly_runs(week, ran_at) VALUES (?, ?) ON CONFLICT(week) DO NOTHING`,
		week, t.opts.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return false, fmt.Errorf("claim weekly run %s: %w", week, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
