package syncd

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/store"
)

// TestBodyDeadlineSparesTheHandler: the short read deadline of a small
// body bounds its arrival only: a handler working past it, with or without
// a body, keeps its request's context, and so does the next request on the
// same connection.
func TestBodyDeadlineSparesTheHandler(t *testing.T) {
	const timeout = 100 * time.Millisecond
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Store: st, BodyReadTimeout: timeout})
	s.handle("POST /test/slow", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		time.Sleep(3 * timeout)
		if err := r.Context().Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	srv := httptest.NewServer(s)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	for i, body := range []string{`{"a":1}`, "", `{"b":2}`, ""} {
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { reused = c.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "POST", srv.URL+"/test/slow", strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (i > 0 && !reused) {
			t.Errorf("request %d (body %q, connection reused %v) = %d %s; want 200 on the same connection", i, body, reused, resp.StatusCode, b)
		}
	}
}
