package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therasync/therasync/model"
)

// Device is a logged-in device of an account.
type Device struct {
	ID          string     `json:"device_id"`
	AccountID   string     `json:"account_id"`
	Name        string     `json:"name"`
	Platform    string     `json:"platform"`
	State       string     `json:"state"` // active, revoked, wiped (revoked as lost), logged_out
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt time.Time  `json:"last_login_at"`
	LastSeenAt  *time.Time `json:"last_seen_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	Wipe        bool       `json:"wipe"`
	// TokenHash is the SHA-256 of the device's current token's secret; nil
	// after logout.
	TokenHash []byte `json:"-"`
}

const deviceCols = `id, account_id, name, platform, created_at, last_login_at, last_seen_at, revoked_at, wipe, logged_out_at, token_hash`

func scanDevice(sc interface{ Scan(...any) error }) (Device, error) {
	var (
		d                        Device
		created, login           string
		seen, revoked, loggedOut sql.NullString
		wipe                     int64
	)
	if err := sc.Scan(&d.ID, &d.AccountID, &d.Name, &d.Platform, &created, &login, &seen, &revoked, &wipe, &loggedOut, &d.TokenHash); err != nil {
		return Device{}, err
	}
	d.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	d.LastLoginAt, _ = time.Parse(time.RFC3339Nano, login)
	d.LastSeenAt = parseNullTime(seen)
	d.RevokedAt = parseNullTime(revoked)
	d.Wipe = wipe != 0
	switch {
	case loggedOut.Valid:
		d.State = "logged_out"
	case d.RevokedAt != nil && d.Wipe:
		d.State = "wiped"
	case d.RevokedAt != nil:
		d.State = "revoked"
	default:
		d.State = "active"
	}
	return d, nil
}

func parseNullTime(s sql.NullString) *time.Time {
	if !s.Valid {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s.String)
	if err != nil {
		return nil
	}
	return &t
}

func (t *Tenant) nowString() string { return t.opts.Now().UTC().Format(time.RFC3339Nano) }

// LoginDevice records a login of the account on the device: it creates the
// device or gives it a new token, which replaces the old one. A device id
// belongs to the account that logged it in (DESIGN §5): another account's
// login with it is refused with ErrConflict unless the device logged out;
// a revoked device (or one to be wiped) stays revoked, and its login is
// refused with ErrRevoked. It returns the new token, shown only here, and
// whether the device is new to the account.
func (t *Tenant) LoginDevice(ctx context.Context, accountID, deviceID, name, platform string) (token string, isNew bool, err error) {
	secret, err := randomToken(32)
	if err != nil {
		return "", false, fmt.Errorf("login device: %w", err)
	}
	hash := sha256.Sum256([]byte(secret))
	err = t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, deviceID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			isNew = true
		case err != nil:
			return err
		default:
			if err := loginAllowed(d, accountID); err != nil {
				return err
			}
			isNew = d.AccountID != accountID
			if d.TokenHash != nil {
				// The old token ends with this login.
				if err := bumpAccessEpoch(ctx, tx); err != nil {
					return err
				}
			}
		}
		now := t.nowString()
		_, err = tx.ExecContext(ctx, `INSERT INTO devices(id, account_id, name, platform, token_hash, created_at, last_login_at)
		VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET account_id = excluded.account_id, name = excluded.name,
		platform = excluded.platform, token_hash = excluded.token_hash, last_login_at = excluded.last_login_at,
		created_at = CASE WHEN devices.account_id = excluded.account_id THEN devices.created_at ELSE excluded.created_at END,
		logged_out_at = NULL`,
			deviceID, accountID, name, platform, hash[:], now, now)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("login device: %w", err)
	}
	return t.id + "." + secret, isNew, nil
}

// loginAllowed decides whether the account may log in on an existing
// device.
func loginAllowed(d Device, accountID string) error {
	if d.AccountID != accountID && d.State != "logged_out" {
		return fmt.Errorf("device id %s belongs to another account: %w", d.ID, ErrConflict)
	}
	if d.RevokedAt != nil {
		return ErrRevoked
	}
	return nil
}

// CheckDeviceLogin reports whether the account may log in on the device id
// (see LoginDevice), without logging in: nil, ErrConflict or ErrRevoked;
// replaces tells whether the login would end a token the device holds.
func (t *Tenant) CheckDeviceLogin(ctx context.Context, accountID, deviceID string) (replaces bool, err error) {
	d, err := t.Device(ctx, deviceID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return d.TokenHash != nil, loginAllowed(d, accountID)
}

// AuthenticateDevice returns the tenant and device of a device token, or
// ErrUnauthorized for an unknown or logged-out token. It does not judge
// revocation: see Tenant.DeviceAccess.
func (s *Store) AuthenticateDevice(ctx context.Context, token string) (*Tenant, Device, error) {
	t, secret, err := s.credentialTenant(ctx, token)
	if err != nil {
		return nil, Device{}, err
	}
	// Looked up by the hash of the secret: the secret itself is never
	// compared, so the lookup's timing tells nothing about it.
	hash := sha256.Sum256([]byte(secret))
	d, err := scanDevice(t.rdb.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE token_hash = ?`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, Device{}, ErrUnauthorized
	}
	if err != nil {
		return nil, Device{}, fmt.Errorf("authenticate device: %w", err)
	}
	if d.State == "logged_out" {
		return nil, Device{}, ErrUnauthorized
	}
	return t, d, nil
}

// Devices lists the account's devices, newest login first.
func (t *Tenant) Devices(ctx context.Context, accountID string) ([]Device, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE account_id = ? ORDER BY last_login_at DESC, id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", accountID, err)
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("devices of %s: %w", accountID, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Device returns the device id, or ErrNotFound.
func (t *Tenant) Device(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(t.rdb.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, ErrNotFound
	}
	if err != nil {
		return Device{}, fmt.Errorf("device %s: %w", id, err)
	}
	return d, nil
}

// RevokeDevice revokes the device; with wipe, the device is told to delete
// its local data when it next reaches the server. The audit line, with by
// as its actor (and addr), is written in the same transaction.
func (t *Tenant) RevokeDevice(ctx context.Context, id string, wipe bool, by, addr string) (Device, error) {
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET revoked_at = coalesce(revoked_at, ?), wipe = max(wipe, ?) WHERE id = ?`,
			t.nowString(), wipe, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		var account string
		if err := tx.QueryRowContext(ctx, `SELECT account_id FROM devices WHERE id = ?`, id).Scan(&account); err != nil {
			return err
		}
		if err := bumpAccessEpoch(ctx, tx); err != nil {
			return err
		}
		detail := ""
		if wipe {
			detail = "wipe"
		}
		return insertAudit(ctx, tx, t.opts.Now(), AuditEntry{Actor: by, AccountID: account, DeviceID: id, Action: "device_revoked", Detail: detail, Addr: addr})
	})
	if err != nil {
		return Device{}, fmt.Errorf("revoke device %s: %w", id, err)
	}
	return t.Device(ctx, id)
}

// LogoutDevice invalidates the device's token.
func (t *Tenant) LogoutDevice(ctx context.Context, id string) error {
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET token_hash = NULL, logged_out_at = ? WHERE id = ?`, t.nowString(), id); err != nil {
			return err
		}
		return bumpAccessEpoch(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("logout device %s: %w", id, err)
	}
	return nil
}

// TouchDevice records that the device was seen now.
func (t *Tenant) TouchDevice(ctx context.Context, id string) error {
	if _, err := t.execWrite(ctx, `UPDATE devices SET last_seen_at = ? WHERE id = ?`, t.nowString(), id); err != nil {
		return fmt.Errorf("touch device %s: %w", id, err)
	}
	return nil
}

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

// RotateKey replaces the practice key and returns the new one; the old one
// stops working at once.
func (t *Tenant) RotateKey(ctx context.Context) (string, error) {
	secret, err := randomToken(32)
	if err != nil {
		return "", fmt.Errorf("rotate key: %w", err)
	}
	hash := sha256.Sum256([]byte(secret))
	err = t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE tenant SET key_hash = ?`, hash[:]); err != nil {
			return err
		}
		return bumpAccessEpoch(ctx, tx)
	})
	if err != nil {
		return "", fmt.Errorf("rotate key: %w", err)
	}
	return t.id + "." + secret, nil
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"` // practice, device or system
	AccountID string    `json:"account_id,omitempty"`
	DeviceID  string    `json:"device_id,omitempty"`
	Action    string    `json:"action"`
	Detail    string    `json:"detail,omitempty"`
	Addr      string    `json:"addr,omitempty"`
}

// Audit appends an entry to the audit log.
func (t *Tenant) Audit(ctx context.Context, e AuditEntry) error {
	return t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return insertAudit(ctx, tx, t.opts.Now(), e)
	})
}

// insertAudit appends an entry to the audit log within tx.
func insertAudit(ctx context.Context, tx *sql.Tx, now time.Time, e AuditEntry) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit(at, actor, account_id, device_id, action, detail, addr) VALUES (?,?,?,?,?,?,?)`,
		now.UTC().Format(time.RFC3339Nano), e.Actor, nullString(e.AccountID), nullString(e.DeviceID), e.Action, nullString(e.Detail), nullString(e.Addr))
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditBatch appends entries to the audit log in one write (one
// transaction, one fsync), in their order. An entry's At is kept when set;
// zero means now.
func (t *Tenant) AuditBatch(ctx context.Context, es []AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	err := t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO audit(at, actor, account_id, device_id, action, detail, addr) VALUES (?,?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		now := t.nowString()
		for _, e := range es {
			at := now
			if !e.At.IsZero() {
				at = e.At.UTC().Format(time.RFC3339Nano)
			}
			if _, err := stmt.ExecContext(ctx, at, e.Actor, nullString(e.AccountID), nullString(e.DeviceID), e.Action, nullString(e.Detail), nullString(e.Addr)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit %d entries: %w", len(es), err)
	}
	return nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AuditLog returns at most limit entries after id since, oldest first.
func (t *Tenant) AuditLog(ctx context.Context, since int64, limit int) ([]AuditEntry, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT id, at, actor, coalesce(account_id, ''), coalesce(device_id, ''), action,
		coalesce(detail, ''), coalesce(addr, '') FROM audit WHERE id > ? ORDER BY id LIMIT ?`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var (
			e  AuditEntry
			at string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.AccountID, &e.DeviceID, &e.Action, &e.Detail, &e.Addr); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		e.At, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, e)
	}
	return out, rows.Err()
}
