package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
)

// This file is the practice key's rotation; the key is checked by
// Store.Authenticate.

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
