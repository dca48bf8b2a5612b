package seal_test

import (
	"bytes"
	"testing"

	"github.com/therasync/therasync/internal/seal"
)

func TestSealOpen(t *testing.T) {
	secret := bytes.Repeat([]byte("k"), 32)
	a, _ := seal.New(secret, "mail")
	b, _ := seal.New(secret, "totp")
	sealed := a.Seal([]byte("123456"))
	if bytes.Contains(sealed, []byte("123456")) {
		t.Errorf("sealed text holds the plain text")
	}
	if got, err := a.Open(sealed); err != nil || string(got) != "123456" {
		t.Errorf("Open = %q, %v; want 123456", got, err)
	}
	if _, err := b.Open(sealed); err == nil {
		t.Errorf("Open with another purpose's key = nil error; want refused")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := a.Open(sealed); err == nil {
		t.Errorf("Open(tampered) = nil error; want refused")
	}
	if _, err := seal.New([]byte("short"), "x"); err == nil {
		t.Errorf("New(short secret) = nil error")
	}
}
