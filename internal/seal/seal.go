// Package seal encrypts small secrets (an access code on its way through
// the mail queue, a TOTP secret at rest) with a key derived from the
// server's secret, so that Redis and the SQLite files never hold them in
// plain text.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Box seals and opens with one key.
type Box struct{ aead cipher.AEAD }

// New derives the key for purpose (e.g. "mail") from secret.
func New(secret []byte, purpose string) (*Box, error) {
	if len(secret) < 32 {
		return nil, errors.New("seal: the secret must have at least 32 bytes")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("therasync seal: " + purpose))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts and authenticates plain.
func (b *Box) Seal(plain []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize())
	rand.Read(nonce)
	return b.aead.Seal(nonce, nonce, plain, nil)
}

// Open decrypts what Seal made with the same key.
func (b *Box) Open(sealed []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("seal: too short")
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], nil)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return plain, nil
}
