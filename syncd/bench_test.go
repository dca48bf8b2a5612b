package syncd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
	"github.com/therasync/therasync/syncd"
)

// BenchmarkPracticePush measures durable practice pushes over loopback HTTP
// with concurrent pushers (8 per core): each op is one batch, acknowledged
// only once committed with synchronous=FULL. Run:
//
//	go test -run '^$' -bench PracticePush -benchtime 5s ./syncd/
func BenchmarkPracticePush(b *testing.B) {
	for _, size := range []int{1, 10, 100} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			e := newEnv(b, syncd.Config{})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			var next atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var buf bytes.Buffer
				for pb.Next() {
					n := next.Add(1)
					buf.Reset()
					fmt.Fprintf(&buf, `{"batch_id":"bench-%d","changes":[`, n)
					for i := range size {
						if i > 0 {
							buf.WriteByte(',')
						}
						fmt.Fprintf(&buf, `{"entity":"sessions","op":"upsert","id":"s-%d-%d","fields":{"profile_id":"pat-%d","therapist_id":"acc-%d","practice_id":"pr-1","starts_at":"2026-11-23T09:00:00+01:00","duration_min":30,"price_cents":3800,"status":"planned","protocol":"Befund: Bewegungseinschränkung LWS, manuelle Therapie."}}`, n, i, i%200, i%4)
					}
					buf.WriteString(`]}`)
					req, _ := http.NewRequest("POST", e.URL+"/v1/practice/changes", bytes.NewReader(buf.Bytes()))
					req.Header.Set("Authorization", "Bearer "+e.Key)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("push = %s", resp.Status)
						return
					}
				}
			})
			b.StopTimer()
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N*size)/elapsed.Seconds(), "changes/s")
			if got, want := e.seq(b), int64(b.N*size); got != want {
				b.Fatalf("seq = %d; want %d", got, want)
			}
		})
	}
}

// BenchmarkMemberCatchUp measures a member's device catching up over a
// live WebSocket on 10,000 changes it sees, in a tenant whose change log
// already holds 200,000 others (sessions of other therapists, patients of
// other owners): each op connects at the old cursor and reads to
// caught_up. Run:
//
//	go test -run '^$' -bench MemberCatchUp -benchtime 5x ./syncd/
func BenchmarkMemberCatchUp(b *testing.B) {
	e := newTenantEnv(b, syncd.Config{})
	ctx := context.Background()
	push := func(n int, change func(i int) model.Change) {
		for i := 0; i < n; i += 1000 {
			var cs []model.Change
			for j := i; j < min(i+1000, n); j++ {
				cs = append(cs, change(j))
			}
			if _, err := e.T.Apply(ctx, store.Batch{Origin: store.OriginPractice, Changes: cs}); err != nil {
				b.Fatal(err)
			}
		}
	}
	push(200000, func(i int) model.Change {
		if i%4 == 0 {
			return model.Change{Entity: model.Profiles, Op: model.OpUpsert, ID: fmt.Sprint("p-", i), Fields: map[string]any{"owner_id": fmt.Sprint("other-", i%50)}}
		}
		return model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: fmt.Sprint("s-", i%20000), Fields: map[string]any{
			"therapist_id": fmt.Sprint("other-", i%20000%50), "profile_id": fmt.Sprint("p-", i%20000/4*4), "status": "planned"}}
	})
	from := e.seq(b)
	push(10000, func(i int) model.Change {
		return model.Change{Entity: model.Sessions, Op: model.OpUpsert, ID: fmt.Sprint("m1-s-", i), Fields: map[string]any{"therapist_id": "m1", "status": "planned"}}
	})
	to := e.seq(b)
	tok := e.token(b, "m1", "phone")
	b.ResetTimer()
	for range b.N {
		ws, code, errc := dial(b, e.URL, "/v1/device/sync?cursor="+strconv.FormatInt(from, 10), tok)
		if ws == nil {
			b.Fatalf("dial = %d %s", code, errc)
		}
		n := 0
		for {
			f := next(b, ws, 30*time.Second)
			n += len(f.Changes)
			if f.Type == "caught_up" && f.Seq >= to {
				break
			}
		}
		ws.Close()
		if n != 10000 {
			b.Fatalf("caught up on %d changes; want 10000", n)
		}
	}
}
