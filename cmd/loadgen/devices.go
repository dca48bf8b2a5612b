// Connecting the simulated devices and reading what syncd sends them.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/store"
)

// connect logs the devices in, connects them from cursor seq and waits
// until each has caught up; their readers record into st.
func (m *Main) connect(ctx context.Context, t *store.Tenant, seq int64, st *stats) error {
	ready := make(chan struct{}, m.Devices)
	for i := range m.Devices {
		tok, _, err := t.LoginDevice(ctx, account(i%m.Accounts), fmt.Sprintf("loadgen-%d", i), "loadgen", "loadgen")
		if err != nil {
			return err
		}
		c, err := dial(ctx, m.Server, tok, seq)
		if err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		m.conns = append(m.conns, c)
		go read(ctx, c, st, ready)
	}
	for range m.Devices {
		select {
		case <-ready:
		case <-time.After(time.Minute):
			first, _ := st.firstErr.Load().(string)
			return fmt.Errorf("devices did not catch up within a minute (%d errors, the first: %s)", st.errors.Load(), first)
		}
	}
	return nil
}

// read receives one device's frames until its connection ends: it signals
// ready on the first caught_up and records each change's latency in st.
func read(ctx context.Context, c *websocket.Conn, st *stats, ready chan<- struct{}) {
	first := true
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				st.fail(err)
			}
			return
		}
		now := time.Now()
		var f struct {
			Type    string `json:"type"`
			Changes []struct {
				Fields map[string]any `json:"fields"`
			} `json:"changes"`
		}
		json.Unmarshal(b, &f)
		if f.Type == "caught_up" && first {
			first = false
			ready <- struct{}{}
		}
		for _, ch := range f.Changes {
			sent, _ := ch.Fields["protocol"].(string)
			if ns, err := strconv.ParseInt(sent, 10, 64); err == nil {
				st.deliver(now.Sub(time.Unix(0, ns)))
			}
		}
	}
}

// dial connects a device with token to the sync socket from cursor.
func dial(ctx context.Context, server, token string, cursor int64) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	url := "ws" + strings.TrimPrefix(server, "http") + "/v1/device/sync?cursor=" + strconv.FormatInt(cursor, 10)
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, h)
	if err != nil && resp != nil {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%w: %s", err, b)
	}
	return c, err
}
