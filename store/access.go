package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/therasync/therasync/model"
)

// This file reads what decides whether a device may go on syncing (DESIGN
// §5) and asks model.DeviceMaySync, the one function that decides it: at
// connect, on every push (inside the writing transaction) and when syncd
// re-reads the access of its live connections.

// ErrRevoked refuses a device whose access ended: the device was revoked,
// its account's app access is disabled, the account is gone or has no
// role, or the tenant lost a license the app needs.
var ErrRevoked = errors.New("device revoked")

// ErrRoleChanged refuses a device's push made under a role its account no
// longer has: the device must replace its data (resync) first.
var ErrRoleChanged = errors.New("the account's role changed")

// AppLicenses are the licenses a tenant needs for its devices to sync
// (model.AppLicenses).
var AppLicenses = model.AppLicenses

// Account is an account's row as the device-access code needs it.
type Account struct {
	ID         string
	Name       string
	Email      string
	Role       string
	AppEnabled bool
}

const accountCols = `id, name, email, role, app_enabled`

func scanAccount(sc interface{ Scan(...any) error }) (Account, error) {
	var (
		a                 Account
		name, email, role sql.NullString
		enabled           sql.NullInt64
	)
	if err := sc.Scan(&a.ID, &name, &email, &role, &enabled); err != nil {
		return Account{}, err
	}
	a.Name, a.Email, a.Role, a.AppEnabled = name.String, email.String, role.String, enabled.Int64 != 0
	return a, nil
}

// Account returns the account id, or ErrNotFound.
func (t *Tenant) Account(ctx context.Context, id string) (Account, error) {
	a, err := scanAccount(t.rdb.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, ErrNotFound
	}
	if err != nil {
		return Account{}, fmt.Errorf("account %s: %w", id, err)
	}
	return a, nil
}

// checkDevice decides, by model.DeviceMaySync, whether device d,
// presenting a token whose hash is token (nil: not checked), may sync
// given its account (nil when there is none) and the tenant's settings.
// It returns the account, or ErrUnauthorized (the token is no longer the
// device's: logged out or replaced by a newer login) or ErrRevoked.
func checkDevice(st Settings, d Device, token []byte, acc *Account) (Account, error) {
	f := model.DeviceFacts{LoggedOut: d.State == "logged_out", Revoked: d.RevokedAt != nil,
		TokenHash: d.TokenHash, Presented: token, Licenses: st.Licenses}
	if acc != nil {
		f.Account = model.AppAccess{Exists: true, Enabled: acc.AppEnabled, Role: acc.Role}
	}
	switch denial, license := model.DeviceMaySync(f); denial {
	case model.SyncAllowed:
		return *acc, nil
	case model.SyncTokenEnded:
		return Account{}, fmt.Errorf("the device's token is no longer valid: %w", ErrUnauthorized)
	case model.SyncNoLicense:
		return Account{}, fmt.Errorf("the practice group holds no %q license: %w", license, ErrRevoked)
	case model.SyncAccessOff:
		return *acc, ErrRevoked
	default: // SyncRevoked, SyncNoAccount
		return Account{}, ErrRevoked
	}
}

// HasAppAccess reports whether the account's app access is on: enabled,
// with a role (model.AppAccessOn).
func HasAppAccess(a Account) bool { return model.AppAccessOn(a.AppEnabled, a.Role) }

// DeviceAccess returns the device's account if the device may sync now
// (see checkDevice; the token is not checked: d came from it).
func (t *Tenant) DeviceAccess(ctx context.Context, d Device) (Account, error) {
	st, err := t.Settings(ctx)
	if err != nil {
		return Account{}, err
	}
	acc, err := t.Account(ctx, d.AccountID)
	switch {
	case errors.Is(err, ErrNotFound):
		return checkDevice(st, d, nil, nil)
	case err != nil:
		return Account{}, err
	}
	return checkDevice(st, d, nil, &acc)
}

// Access is a tenant's access state in one snapshot: what decides whether
// each of its live connections may go on.
type Access struct {
	// Static: set by Tenant.Access, then only read (by any goroutine).
	Settings Settings
	devices  map[string]Device
	accounts map[string]Account
}

// Device decides whether the device may go on syncing with the token whose
// hash is token, as Tenant.DeviceAccess would (plus the token); it returns
// the device as stored (for its wipe flag) and the account.
func (a *Access) Device(id string, token []byte) (Device, Account, error) {
	d, ok := a.devices[id]
	if !ok {
		return Device{}, Account{}, fmt.Errorf("unknown device: %w", ErrUnauthorized)
	}
	var acc *Account
	if x, ok := a.accounts[d.AccountID]; ok {
		acc = &x
	}
	got, err := checkDevice(a.Settings, d, token, acc)
	return d, got, err
}

// Access reads the tenant's access state: settings, practice key, every
// device and account.
func (t *Tenant) Access(ctx context.Context) (*Access, error) {
	tx, err := t.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read access: %w", err)
	}
	defer tx.Rollback()
	st, _, err := readSettings(ctx, tx, t.id)
	if err != nil {
		return nil, err
	}
	a := &Access{Settings: st, devices: map[string]Device{}, accounts: map[string]Account{}}
	rows, err := tx.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices`)
	if err != nil {
		return nil, fmt.Errorf("read access: %w", err)
	}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read access: %w", err)
		}
		a.devices[d.ID] = d
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read access: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT `+accountCols+` FROM accounts`)
	if err != nil {
		return nil, fmt.Errorf("read access: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		acc, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("read access: %w", err)
		}
		a.accounts[acc.ID] = acc
	}
	return a, rows.Err()
}

// checkPush decides, inside the writing transaction, whether a device's
// push may be applied: the device's token is still current and it may
// sync, and its account still has the role the push was made under.
func (w *writer) checkPush(ctx context.Context, tx *sql.Tx, b Batch) error {
	st, _, err := readSettings(ctx, tx, w.t.id)
	if err != nil {
		return err
	}
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, b.DeviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("unknown device: %w", ErrUnauthorized)
	}
	if err != nil {
		return fmt.Errorf("check push: %w", err)
	}
	var acc *Account
	x, err := scanAccount(tx.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE id = ?`, d.AccountID))
	switch {
	case err == nil:
		acc = &x
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("check push: %w", err)
	}
	token := b.TokenHash
	if token == nil {
		token = []byte{} // a push always presents its token
	}
	got, err := checkDevice(st, d, token, acc)
	if err != nil {
		return err
	}
	if got.ID != b.Writer.ID || got.Role != b.Writer.Role {
		return ErrRoleChanged
	}
	return nil
}

// CheckDevice decides, from the store now, whether the device may go on
// syncing with the token whose hash is token (see checkDevice); it returns
// the device as stored (for its wipe flag) and its account.
func (t *Tenant) CheckDevice(ctx context.Context, id string, token []byte) (Device, Account, error) {
	st, err := t.Settings(ctx)
	if err != nil {
		return Device{}, Account{}, err
	}
	d, err := t.Device(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Device{}, Account{}, fmt.Errorf("unknown device: %w", ErrUnauthorized)
	}
	if err != nil {
		return Device{}, Account{}, err
	}
	if token == nil {
		token = []byte{}
	}
	var acc *Account
	switch x, err := t.Account(ctx, d.AccountID); {
	case err == nil:
		acc = &x
	case !errors.Is(err, ErrNotFound):
		return d, Account{}, err
	}
	got, err := checkDevice(st, d, token, acc)
	return d, got, err
}
