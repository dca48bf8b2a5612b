package syncd_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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
