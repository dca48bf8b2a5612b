package redistest_test

import (
	"testing"

	"github.com/therasync/therasync/internal/redistest"
)

func TestStart(t *testing.T) {
	s := redistest.Start(t)
	if got, err := s.Do("SET", "k", "v"); err != nil || got != "+OK" {
		t.Fatalf("SET k v = %q, %v; want +OK", got, err)
	}
	if got, err := s.Do("EXISTS", "k"); err != nil || got != ":1" {
		t.Fatalf("EXISTS k = %q, %v; want :1", got, err)
	}
}
