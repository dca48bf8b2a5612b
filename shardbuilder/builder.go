package shardbuilder

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/therasync/therasync/internal/fsutil"
)

// Builder writes shard files under a data directory:
// DATA/shards/<tenant>/<account>/<seq>.db.
type Builder struct {
	dataDir string
	now     func() time.Time
}

// New returns a Builder for the data directory dataDir; now nil means
// time.Now.
func New(dataDir string, now func() time.Time) *Builder {
	if now == nil {
		now = time.Now
	}
	return &Builder{dataDir: dataDir, now: now}
}

// Built is a shard file placed in the data directory.
type Built struct {
	Meta
	// Path is the file's path relative to the data directory.
	Path string
}

// Build builds the account's shard into a temporary file, fsyncs it and
// renames it to its place, so that a half-written shard is never seen. It
// then removes the account's shard files but the newest keep (at least the
// new one).
func (b *Builder) Build(ctx context.Context, src Source, accountID string, keep int) (Built, error) {
	dir := filepath.Join(b.dataDir, ShardDir(src.TenantID, accountID))
	// A new account's (or tenant's) directory must outlive a power loss as
	// the shard file in it does.
	if err := fsutil.MkdirAll(dir, 0o700); err != nil {
		return Built{}, fmt.Errorf("build shard: %w", err)
	}
	tmp := filepath.Join(dir, "build-"+randomSuffix()+".tmp")
	m, err := WriteFile(ctx, src, accountID, tmp, b.now())
	if err != nil {
		return Built{}, err
	}
	name := strconv.FormatInt(m.Seq, 10) + ".db"
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return Built{}, fmt.Errorf("build shard: %w", err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return Built{}, fmt.Errorf("build shard: %w", err)
	}
	if err := prune(dir, max(keep, 1)); err != nil {
		return Built{}, fmt.Errorf("build shard: %w", err)
	}
	return Built{Meta: m, Path: filepath.Join(ShardDir(src.TenantID, accountID), name)}, nil
}

// safeName matches the account ids used in a directory name as they are:
// lower case (a case-insensitive disk would merge "Acc" and "acc"), no
// leading or trailing dot, at most 100 bytes.
var safeName = regexp.MustCompile(`^[a-z0-9_-]([a-z0-9._-]{0,98}[a-z0-9_-])?$`)

// ShardDir returns the directory, relative to the data directory, of an
// account's shards. Account ids are chosen by clients, so no two ids may
// share a name: a safe id is kept behind "a-", any other is replaced by
// "h-" and 128 bits of its sha256.
func ShardDir(tenantID, accountID string) string {
	name := "a-" + accountID
	if !safeName.MatchString(accountID) {
		sum := sha256.Sum256([]byte(accountID))
		name = "h-" + hex.EncodeToString(sum[:16])
	}
	return filepath.Join("shards", tenantID, name)
}

// prune removes all but the keep newest <seq>.db files of dir, and any
// leftover temporary file of an interrupted build.
func prune(dir string, keep int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var seqs []int64
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".tmp") {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				os.Remove(filepath.Join(dir, n))
			}
			continue
		}
		if seq, err := strconv.ParseInt(strings.TrimSuffix(n, ".db"), 10, 64); err == nil && strings.HasSuffix(n, ".db") {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	for i := keep; i < len(seqs); i++ {
		if err := os.Remove(filepath.Join(dir, strconv.FormatInt(seqs[i], 10)+".db")); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// ErrMismatch is returned by Verify for a shard file whose size or sha256
// differs from what was recorded when it was built.
var ErrMismatch = errors.New("shard file does not match its record")

// Sum returns the size and the hex sha256 of what r reads.
func Sum(r io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Verify checks that the file at path has the size and sha256 recorded
// for it; it returns an error matching ErrMismatch when it has not.
func Verify(path string, size int64, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify shard: %w", err)
	}
	defer f.Close()
	n, sum, err := Sum(f)
	if err != nil {
		return fmt.Errorf("verify shard: %w", err)
	}
	if n != size || sum != sha {
		return fmt.Errorf("verify shard %s: %d bytes, sha256 %s; recorded %d, %s: %w", path, n, sum, size, sha, ErrMismatch)
	}
	return nil
}

// randomSuffix returns 16 random hex digits, for a temporary file name.
func randomSuffix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
