package syncd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// maxShardSums bounds how many shard files' sums a Server remembers.
const maxShardSums = 4096

// shardSums remembers the sha256 of shard files by path, size and
// modification time. A shard file is immutable once renamed into place, so
// each file is hashed once per process, not on every download; a file
// changed on disk has another size or time and is hashed again.
type shardSums struct {
	mu    sync.Mutex
	sums  map[shardFile]string
	order []shardFile // oldest first
}

// shardFile names one version of a shard file; size -1 marks a file that
// was missing.
type shardFile struct {
	path  string
	size  int64
	mtime int64 // Unix nanoseconds
}

func (c *shardSums) get(k shardFile) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum, ok := c.sums[k]
	return sum, ok
}

// put remembers k's sum, forgetting the oldest entry when full; it reports
// whether k was new (so that only one of concurrent checks reports a bad
// file).
func (c *shardSums) put(k shardFile, sum string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sums == nil {
		c.sums = map[shardFile]string{}
	}
	if _, ok := c.sums[k]; ok {
		return false
	}
	if len(c.order) >= maxShardSums {
		delete(c.sums, c.order[0])
		c.order = c.order[1:]
	}
	c.sums[k] = sum
	c.order = append(c.order, k)
	return true
}

// errShardFileGone is a recorded shard whose file is not on disk.
var errShardFileGone = errors.New("shard file is missing")

// errShardBad is a shard file whose content is not what its record says.
var errShardBad = errors.New("shard file does not match its record")

// openShard opens the account's newest shard file to be served, positioned
// at its start, with its record. It answers errShardNotReady when the
// account has no shard of its role, and when the file is gone or its
// content is not what its record says: such a shard is never served, and
// the account's build is requested (see badShard).
func (s *Server) openShard(ctx context.Context, t *store.Tenant, acc store.Account, hash bool) (*os.File, store.Shard, error) {
	for attempt := 0; ; attempt++ {
		sh, err := t.LatestShard(ctx, acc.ID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && sh.Role != acc.Role) {
			return nil, sh, errShardNotReady
		}
		if err != nil {
			return nil, sh, err
		}
		f, err := s.openVerified(ctx, t, sh, hash)
		if errors.Is(err, errShardFileGone) && attempt < 2 {
			continue // a newer build may have pruned it in between
		}
		if errors.Is(err, errShardFileGone) || errors.Is(err, errShardBad) {
			return nil, sh, errShardNotReady // the device retries; the rebuild is requested
		}
		return f, sh, err
	}
}

// openVerified opens the shard file of record sh and checks its size and
// sha256 against the record, hashing it only when this process has not
// seen this version of the file (and hash is set: a login checks the size
// and a sha256 known already, the download that follows hashes it). A missing file is errShardFileGone, a
// mismatch errShardBad; each is reported once (badShard).
func (s *Server) openVerified(ctx context.Context, t *store.Tenant, sh store.Shard, hash bool) (*os.File, error) {
	f, err := os.Open(filepath.Join(s.cfg.Store.Dir(), sh.Path))
	if os.IsNotExist(err) {
		if s.shardSums.put(shardFile{path: sh.Path, size: -1}, "") {
			s.badShard(ctx, t, sh, fmt.Errorf("%s: %w", sh.Path, errShardFileGone))
		}
		return nil, errShardFileGone
	}
	if err != nil {
		return nil, fmt.Errorf("open shard: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open shard: %w", err)
	}
	k := shardFile{path: sh.Path, size: info.Size(), mtime: info.ModTime().UnixNano()}
	sum, known := s.shardSums.get(k)
	first := false // this call hashed this version of the file first
	if !known && !hash {
		if info.Size() != sh.Size {
			f.Close()
			return nil, errShardBad // the download reports it
		}
		return f, nil
	}
	if !known {
		var n int64
		if n, sum, err = shardbuilder.Sum(f); err == nil && n != info.Size() {
			err = fmt.Errorf("read %d of %d bytes", n, info.Size())
		}
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("hash shard: %w", err)
		}
		first = s.shardSums.put(k, sum)
	}
	if info.Size() != sh.Size || sum != sh.SHA256 {
		f.Close()
		if first {
			s.badShard(ctx, t, sh, fmt.Errorf("%s: %d bytes, sha256 %s; recorded %d, %s: %w", sh.Path, info.Size(), sum, sh.Size, sh.SHA256, errShardBad))
		}
		return nil, errShardBad
	}
	return f, nil
}

// badShard logs a shard that cannot be served and requests its account's
// build; it is called once per file version and process.
func (s *Server) badShard(ctx context.Context, t *store.Tenant, sh store.Shard, why error) {
	s.log.Error("shard refused: its file is not what its record says; rebuild requested", "tenant", t.ID(), "account", sh.AccountID, "seq", sh.Seq, "err", why)
	ids, err := t.RequestBuilds(ctx, sh.AccountID)
	if err != nil {
		s.log.Error("request a shard build", "tenant", t.ID(), "account", sh.AccountID, "err", err)
		return
	}
	s.enqueueBuilds(ctx, t.ID(), ids)
}
