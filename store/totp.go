package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file is the accounts' TOTP enrolments for the admin step-up
// (DESIGN §5); the secrets come sealed by the caller.

// ErrTOTPEnrolled refuses a first enrolment (SetTOTP with first) when an
// account of the tenant is enrolled already: that enrolment needs the
// step-up.
var ErrTOTPEnrolled = errors.New("an account of the practice group is enrolled for TOTP already")

// SetTOTP stores an account's sealed TOTP secret, replacing an earlier one.
// With first, it stores it only if no account of the tenant is enrolled,
// checked in the same transaction (else ErrTOTPEnrolled), so that two
// enrolments racing past an unenrolled tenant do not both skip the step-up.
func (t *Tenant) SetTOTP(ctx context.Context, accountID string, sealed []byte, first bool) error {
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if first {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM totp`).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return ErrTOTPEnrolled
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO totp(account_id, secret, enrolled_at) VALUES (?,?,?)
		ON CONFLICT(account_id) DO UPDATE SET secret = excluded.secret, enrolled_at = excluded.enrolled_at`,
			accountID, sealed, t.nowString())
		return err
	})
	if err != nil {
		return fmt.Errorf("set totp of %s: %w", accountID, err)
	}
	return nil
}

// TOTPEnrolment is an account's enrolment for the admin step-up.
type TOTPEnrolment struct {
	AccountID string
	// Secret is the TOTP secret as sealed by the caller.
	Secret []byte
	// Admin is true when the account exists and is an admin now.
	Admin bool
}

// TOTPEnrolments returns every enrolment of the tenant, ordered by account
// id: also those of accounts that are no admins any more or were deleted,
// since enrolments outlive role changes (DESIGN §5).
func (t *Tenant) TOTPEnrolments(ctx context.Context) ([]TOTPEnrolment, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT t.account_id, t.secret, coalesce(a.role = ?, 0) FROM totp t
		LEFT JOIN accounts a ON a.id = t.account_id ORDER BY t.account_id`, model.RoleAdmin)
	if err != nil {
		return nil, fmt.Errorf("totp enrolments: %w", err)
	}
	defer rows.Close()
	var out []TOTPEnrolment
	for rows.Next() {
		var e TOTPEnrolment
		if err := rows.Scan(&e.AccountID, &e.Secret, &e.Admin); err != nil {
			return nil, fmt.Errorf("totp enrolments: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("totp enrolments: %w", err)
	}
	return out, nil
}
