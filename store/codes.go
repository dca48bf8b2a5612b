package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// This file records when an account's access code was sent; the codes
// themselves live in Redis only (authcode).

// RecordCodeSent records when the account's newest access code was sent.
func (t *Tenant) RecordCodeSent(ctx context.Context, accountID string, sent, expires time.Time) error {
	_, err := t.execWrite(ctx, `INSERT INTO access_codes(account_id, sent_at, expires_at) VALUES (?,?,?)
		ON CONFLICT(account_id) DO UPDATE SET sent_at = excluded.sent_at, expires_at = excluded.expires_at`,
		accountID, sent.UTC().Format(time.RFC3339), expires.UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("record code sent: %w", err)
	}
	return nil
}

// LastCodeSent returns when the account's newest code was sent and until
// when it is valid, or ErrNotFound.
func (t *Tenant) LastCodeSent(ctx context.Context, accountID string) (sent, expires time.Time, err error) {
	var s, e string
	err = t.rdb.QueryRowContext(ctx, `SELECT sent_at, expires_at FROM access_codes WHERE account_id = ?`, accountID).Scan(&s, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, time.Time{}, ErrNotFound
	}
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("last code sent: %w", err)
	}
	sent, _ = time.Parse(time.RFC3339, s)
	expires, _ = time.Parse(time.RFC3339, e)
	return sent, expires, nil
}
