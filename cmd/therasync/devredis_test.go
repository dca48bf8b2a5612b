package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestDevRedisExpiresKeys: the embedded Redis of `therasync dev` expires
// keys in real time, as Redis does (an access code, a resend limit and a
// lockout end by their TTLs).
func TestDevRedisExpiresKeys(t *testing.T) {
	mr, err := startDevRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		set  func(key string) error
	}{
		{"SET PX", func(key string) error { return rdb.Set(ctx, key, "v", 200*time.Millisecond).Err() }},
		{"SET EX", func(key string) error { return rdb.Set(ctx, key, "v", time.Second).Err() }},
		{"SET NX PX", func(key string) error { return rdb.SetNX(ctx, key, "v", 200*time.Millisecond).Err() }},
		{"INCR then PEXPIRE", func(key string) error {
			if err := rdb.Incr(ctx, key).Err(); err != nil {
				return err
			}
			return rdb.PExpire(ctx, key, 200*time.Millisecond).Err()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := "k:" + tt.name
			if err := tt.set(key); err != nil {
				t.Fatal(err)
			}
			if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
				t.Fatalf("EXISTS right after setting = %d, %v; want 1", n, err)
			}
			ttl, err := rdb.PTTL(ctx, key).Result()
			if err != nil || ttl <= 0 {
				t.Fatalf("PTTL = %v, %v; want a TTL", ttl, err)
			}
			expires := time.Now().Add(ttl)
			deadline := expires.Add(2 * time.Second)
			time.Sleep(ttl)
			for {
				n, err := rdb.Exists(ctx, key).Result()
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still exists %v after its TTL of %v ended", key, time.Since(expires).Round(time.Millisecond), ttl)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
