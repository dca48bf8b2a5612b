// Pushing changes as the practice PC: the load itself and the catch-up
// of an offline device.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/therasync/therasync/store"
)

// push sends one batch of changes as the practice PC.
func (m *Main) push(ctx context.Context, id string, changes []map[string]any) (int64, error) {
	body, _ := json.Marshal(map[string]any{"batch_id": id, "changes": changes})
	req, _ := http.NewRequestWithContext(ctx, "POST", m.Server+"/v1/practice/changes", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("push: %s %s", resp.Status, b)
	}
	var r struct{ Seq int64 }
	json.Unmarshal(b, &r)
	return r.Seq, nil
}

// load pushes Rate changes/s for Duration and returns how many changes it
// pushed and how long that took. A practice PC pushes a batch every 10 ms;
// a batch does not wait for the one before (at most 16 in flight), as
// pushes from several PCs.
func (m *Main) load(ctx context.Context, st *stats) (int, time.Duration) {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(1, m.Rate/100)
	pushed, batch := 0, 0
	inflight := make(chan struct{}, 16)
	var pushers sync.WaitGroup
	for time.Since(start) < m.Duration && ctx.Err() == nil {
		<-tick.C
		cs := m.sessionBatch(pushed, perTick)
		pushed += perTick
		batch++
		inflight <- struct{}{}
		pushers.Add(1)
		go func(id string) {
			defer pushers.Done()
			defer func() { <-inflight }()
			if _, err := m.push(ctx, id, cs); err != nil {
				st.fail(err)
			}
		}(fmt.Sprintf("lg-%d-%d", start.UnixNano(), batch))
	}
	pushers.Wait()
	return pushed, time.Since(start)
}

// sessionBatch returns n session upserts, changes from to from+n-1 of the
// load, each stamped with its time of sending in its "protocol" field.
func (m *Main) sessionBatch(from, n int) []map[string]any {
	var cs []map[string]any
	for i := from; i < from+n; i++ {
		cs = append(cs, map[string]any{"entity": "sessions", "op": "upsert", "id": fmt.Sprintf("lg-s-%d", i%(5*m.Accounts)),
			"fields": map[string]any{"therapist_id": account(i % m.Accounts), "protocol": strconv.FormatInt(time.Now().UnixNano(), 10)}})
	}
	return cs
}

// catchUp pushes CatchUp changes the offline device sees, then times its
// catch-up from its old cursor.
func (m *Main) catchUp(ctx context.Context, t *store.Tenant) (time.Duration, error) {
	from, err := t.Seq(ctx)
	if err != nil {
		return 0, err
	}
	tok, _, err := t.LoginDevice(ctx, account(0), "loadgen-offline", "loadgen", "loadgen")
	if err != nil {
		return 0, err
	}
	for i := 0; i < m.CatchUp; i += 1000 {
		var cs []map[string]any
		for j := i; j < min(i+1000, m.CatchUp); j++ {
			cs = append(cs, map[string]any{"entity": "sessions", "op": "upsert", "id": fmt.Sprintf("lg-c-%d", j), "fields": map[string]any{"therapist_id": account(0), "status": "planned"}})
		}
		if _, err := m.push(ctx, fmt.Sprintf("lg-c-%d-%d", time.Now().UnixNano(), i), cs); err != nil {
			return 0, err
		}
	}
	to, _ := t.Seq(ctx)
	start := time.Now()
	c, err := dial(ctx, m.Server, tok, from)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return 0, err
		}
		var f struct {
			Type string `json:"type"`
			Seq  int64  `json:"seq"`
		}
		json.Unmarshal(b, &f)
		if f.Type == "caught_up" && f.Seq >= to {
			return time.Since(start), nil
		}
	}
}
