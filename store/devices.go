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

// This file is a tenant's devices: logins, tokens, revocation, logout.
// Whether a device may sync is access.go's.

// Device is a logged-in device of an account.
type Device struct {
	ID        string `json:"device_id"`
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	Platform  string `json:"platform"`
	State     string `json:"state"` // active, suspended (see Blocked), revoked, wiped (revoked as lost), logged_out
	// Blocked says why a device that is neither revoked nor logged out
	// cannot sync now (State suspended, set by Tenant.Devices): the wire
	// code app_disabled (the account's app access is off) or
	// license_missing, or account_deleted; empty when it can.
	Blocked     string     `json:"blocked,omitempty"`
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("devices of %s: %w", accountID, err)
	}
	rows.Close()
	return out, t.markSuspended(ctx, accountID, out)
}

// markSuspended sets State suspended, and Blocked, on the active devices
// of accountID that may not sync now by the account's access and the
// tenant's licenses (model.DeviceMaySync, as at their next sync).
func (t *Tenant) markSuspended(ctx context.Context, accountID string, ds []Device) error {
	if len(ds) == 0 {
		return nil
	}
	st, err := t.Settings(ctx)
	if err != nil {
		return err
	}
	f := model.DeviceFacts{Licenses: st.Licenses}
	switch acc, err := t.Account(ctx, accountID); {
	case err == nil:
		f.Account = model.AppAccess{Exists: true, Enabled: acc.AppEnabled, Role: acc.Role}
	case !errors.Is(err, ErrNotFound):
		return err
	}
	denial, _ := model.DeviceMaySync(f)
	blocked := map[model.SyncDenial]string{model.SyncNoLicense: "license_missing", model.SyncNoAccount: "account_deleted", model.SyncAccessOff: "app_disabled"}[denial]
	for i := range ds {
		if ds[i].State == "active" && blocked != "" {
			ds[i].State, ds[i].Blocked = "suspended", blocked
		}
	}
	return nil
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
