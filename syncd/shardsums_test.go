package syncd

import (
	"fmt"
	"testing"
)

// TestShardSumsBounded: the cache of shard sums forgets its oldest entries
// past maxShardSums, and reports a key as new only once.
func TestShardSumsBounded(t *testing.T) {
	var c shardSums
	key := func(i int) shardFile { return shardFile{path: fmt.Sprintf("shards/t/a-m/%d.db", i), size: 1, mtime: 1} }
	for i := range maxShardSums + 10 {
		if !c.put(key(i), fmt.Sprint(i)) {
			t.Fatalf("put(%d) = false; want a new key", i)
		}
	}
	if c.put(key(maxShardSums+9), "again") {
		t.Errorf("put of a known key = true; want false")
	}
	if len(c.sums) != maxShardSums || len(c.order) != maxShardSums {
		t.Errorf("cache holds %d sums, %d in order; want %d", len(c.sums), len(c.order), maxShardSums)
	}
	for _, tt := range []struct {
		i    int
		want bool
	}{{0, false}, {9, false}, {10, true}, {maxShardSums + 9, true}} {
		t.Run(fmt.Sprint(tt.i), func(t *testing.T) {
			sum, ok := c.get(key(tt.i))
			if ok != tt.want || (ok && sum != fmt.Sprint(tt.i)) {
				t.Errorf("get(%d) = %q, %v; want known %v", tt.i, sum, ok, tt.want)
			}
		})
	}
}
