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
		ON CONFLICT(account_id) DO UPDATE SET sent_at = excluded.sent_at, expires_at = excluded.expires_at,
		delivered_at = NULL, failed_at = NULL, failure = NULL`,
		accountID, sent.UTC().Format(time.RFC3339), expires.UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("record code sent: %w", err)
	}
	return nil
}

// CodeMail is what the store knows of an account's newest access code.
type CodeMail struct {
	SentAt, ExpiresAt time.Time
	// DeliveredAt is when its mail was handed to the mail server (or the
	// outbox); nil while queued or failed.
	DeliveredAt *time.Time
	// FailedAt and Failure say that and why its delivery failed last.
	FailedAt *time.Time
	Failure  string
}

// LastCodeSent returns what became of the account's newest code, or
// ErrNotFound.
func (t *Tenant) LastCodeSent(ctx context.Context, accountID string) (CodeMail, error) {
	var (
		s, e              string
		delivered, failed sql.NullString
		failure           sql.NullString
	)
	err := t.rdb.QueryRowContext(ctx, `SELECT sent_at, expires_at, delivered_at, failed_at, failure FROM access_codes WHERE account_id = ?`, accountID).
		Scan(&s, &e, &delivered, &failed, &failure)
	if errors.Is(err, sql.ErrNoRows) {
		return CodeMail{}, ErrNotFound
	}
	if err != nil {
		return CodeMail{}, fmt.Errorf("last code sent: %w", err)
	}
	var m CodeMail
	m.SentAt, _ = time.Parse(time.RFC3339, s)
	m.ExpiresAt, _ = time.Parse(time.RFC3339, e)
	m.DeliveredAt, m.FailedAt, m.Failure = parseNullTime(delivered), parseNullTime(failed), failure.String
	return m, nil
}

// RecordCodeDelivery records the outcome of delivering the mail of the
// code that expires at expires (a newer code's record is left alone):
// failure empty means delivered at at.
func (t *Tenant) RecordCodeDelivery(ctx context.Context, accountID string, expires, at time.Time, failure string) error {
	q := `UPDATE access_codes SET delivered_at = ?, failed_at = NULL, failure = NULL WHERE account_id = ? AND expires_at = ?`
	args := []any{at.UTC().Format(time.RFC3339), accountID, expires.UTC().Format(time.RFC3339)}
	if failure != "" {
		q = `UPDATE access_codes SET failed_at = ?, failure = ? WHERE account_id = ? AND expires_at = ? AND delivered_at IS NULL`
		args = []any{at.UTC().Format(time.RFC3339), failure, accountID, expires.UTC().Format(time.RFC3339)}
	}
	if _, err := t.execWrite(ctx, q, args...); err != nil {
		return fmt.Errorf("record code delivery: %w", err)
	}
	return nil
}

// Activation is an account whose app access started and whose code mail
// is still to be sent (DESIGN §5).
type Activation struct {
	AccountID string
	// RequestedAt names the activation: an access that ends and starts
	// again is a new one.
	RequestedAt string
}

// ActivationPending reports whether the account's app access started and
// its code mail is still to be sent (see the activations table).
func (t *Tenant) ActivationPending(ctx context.Context, accountID string) (bool, error) {
	_, ok, err := t.PendingActivation(ctx, accountID)
	return ok, err
}

// PendingActivation returns the account's pending activation, if any.
func (t *Tenant) PendingActivation(ctx context.Context, accountID string) (Activation, bool, error) {
	a := Activation{AccountID: accountID}
	err := t.rdb.QueryRowContext(ctx, `SELECT requested_at FROM activations WHERE account_id = ?`, accountID).Scan(&a.RequestedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Activation{}, false, nil
	}
	if err != nil {
		return Activation{}, false, fmt.Errorf("activation of %s: %w", accountID, err)
	}
	return a, true, nil
}

// PendingActivations returns every pending activation of the tenant.
func (t *Tenant) PendingActivations(ctx context.Context) ([]Activation, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT account_id, requested_at FROM activations ORDER BY requested_at`)
	if err != nil {
		return nil, fmt.Errorf("pending activations: %w", err)
	}
	defer rows.Close()
	var out []Activation
	for rows.Next() {
		var a Activation
		if err := rows.Scan(&a.AccountID, &a.RequestedAt); err != nil {
			return nil, fmt.Errorf("pending activations: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending activations: %w", err)
	}
	return out, nil
}

// ActivationDone records that the account's code mail was sent by the
// practice: whatever activation is pending needs no mail of its own.
func (t *Tenant) ActivationDone(ctx context.Context, accountID string) error {
	if _, err := t.execWrite(ctx, `DELETE FROM activations WHERE account_id = ?`, accountID); err != nil {
		return fmt.Errorf("activation of %s done: %w", accountID, err)
	}
	return nil
}

// ActivationSent records that activation a's mail was sent. A newer
// activation of the account (its access ended and started again since a
// was read) stays pending: it gets its own mail.
func (t *Tenant) ActivationSent(ctx context.Context, a Activation) error {
	if _, err := t.execWrite(ctx, `DELETE FROM activations WHERE account_id = ? AND requested_at = ?`, a.AccountID, a.RequestedAt); err != nil {
		return fmt.Errorf("activation of %s sent: %w", a.AccountID, err)
	}
	return nil
}
