package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// This file is a tenant's settings: its licenses and time zone.

// Settings are a tenant's settings.
type Settings struct {
	ID        string    `json:"tenant_id"`
	Name      string    `json:"name"`
	Licenses  []string  `json:"licenses"`
	TZ        string    `json:"tz"`
	CreatedAt time.Time `json:"created_at"`
	// KeyHash is the SHA-256 of the practice key's secret part.
	KeyHash []byte `json:"-"`
}

// HasLicense reports whether the tenant holds the license l.
func (s Settings) HasLicense(l string) bool { return slices.Contains(s.Licenses, l) }

// Location returns the tenant's time zone.
func (s Settings) Location() *time.Location {
	loc, err := time.LoadLocation(s.TZ)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Settings returns the tenant's settings.
func (t *Tenant) Settings(ctx context.Context) (Settings, error) {
	st, _, err := t.settings(ctx)
	return st, err
}

func (t *Tenant) settings(ctx context.Context) (Settings, []byte, error) {
	return readSettings(ctx, t.rdb, t.id)
}

// readSettings reads the tenant's settings and the hash of its practice
// key.
func readSettings(ctx context.Context, q rowQueryer, id string) (Settings, []byte, error) {
	var (
		st      Settings
		lic     string
		created string
		hash    []byte
	)
	err := q.QueryRowContext(ctx, `SELECT id, name, licenses, tz, key_hash, created_at FROM tenant LIMIT 1`).
		Scan(&st.ID, &st.Name, &lic, &st.TZ, &hash, &created)
	if err != nil {
		return Settings{}, nil, fmt.Errorf("tenant %s settings: %w", id, err)
	}
	if err := json.Unmarshal([]byte(lic), &st.Licenses); err != nil {
		return Settings{}, nil, fmt.Errorf("tenant %s licenses: %w", id, err)
	}
	st.CreatedAt, _ = time.Parse(time.RFC3339, created)
	st.KeyHash = hash
	return st, hash, nil
}

// SettingsChange is a change of a tenant's settings; a nil field stays as
// it is.
type SettingsChange struct {
	Licenses []string // each LicenseSync or LicenseApp
	TZ       *string  // an IANA time zone
}

// SetSettings changes the tenant's settings and writes the audit line,
// with by as its actor (and addr), in one transaction; it returns the
// settings before and after. Devices of a tenant that lost a license the
// app needs may no longer sync (DESIGN §5): the caller closes their
// sockets.
func (t *Tenant) SetSettings(ctx context.Context, c SettingsChange, by, addr string) (before, after Settings, err error) {
	var lic []byte
	if c.Licenses != nil {
		l, err := licenseList(c.Licenses)
		if err != nil {
			return Settings{}, Settings{}, fmt.Errorf("set settings: %w", err)
		}
		lic, _ = json.Marshal(l)
	}
	if c.TZ != nil {
		if _, err := time.LoadLocation(*c.TZ); err != nil || *c.TZ == "" {
			return Settings{}, Settings{}, fmt.Errorf("set settings: unknown time zone %q", *c.TZ)
		}
	}
	err = t.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if before, _, err = readSettings(ctx, tx, t.id); err != nil {
			return err
		}
		if lic != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE tenant SET licenses = ?`, string(lic)); err != nil {
				return err
			}
			if err := bumpAccessEpoch(ctx, tx); err != nil {
				return err
			}
		}
		if c.TZ != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE tenant SET tz = ?`, *c.TZ); err != nil {
				return err
			}
			t.w.loc = nil // this runs on the writer's goroutine: it reads the zone again
		}
		if after, _, err = readSettings(ctx, tx, t.id); err != nil {
			return err
		}
		detail := fmt.Sprintf("licenses %s, tz %s", strings.Join(after.Licenses, ","), after.TZ)
		return insertAudit(ctx, tx, t.opts.Now(), AuditEntry{Actor: by, Action: "settings_changed", Detail: detail, Addr: addr})
	})
	if err != nil {
		return Settings{}, Settings{}, fmt.Errorf("set settings: %w", err)
	}
	return before, after, nil
}

// licenseList checks and normalises a list of licenses: each LicenseSync
// or LicenseApp, blanks dropped, sorted, once each.
func licenseList(ls []string) ([]string, error) {
	lic := []string{}
	for _, l := range ls {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if l != LicenseSync && l != LicenseApp {
			return nil, fmt.Errorf("unknown license %q (want %s or %s)", l, LicenseSync, LicenseApp)
		}
		if !slices.Contains(lic, l) {
			lic = append(lic, l)
		}
	}
	sort.Strings(lic)
	return lic, nil
}
