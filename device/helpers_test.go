package device

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/wire"
)

// rows are a shard's rows: entity → rows, each with its "id".
type rows map[string][]map[string]any

// writeShard writes a shard file at path as the shard builder does: a
// table per entity (its model fields as columns) and sync_meta at seq,
// with the further sync_meta entries meta (key, value).
func writeShard(tb testing.TB, path string, seq int64, rs rows, meta ...[2]string) {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	stmts := []string{`CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`}
	for _, e := range model.Entities() {
		cols := []string{`id TEXT PRIMARY KEY`}
		for _, f := range e.Fields {
			typ := "TEXT"
			if f.Kind == model.Int || f.Kind == model.Bool {
				typ = "INTEGER"
			}
			cols = append(cols, `"`+f.Name+`" `+typ)
		}
		stmts = append(stmts, `CREATE TABLE "`+e.Name+`" (`+strings.Join(cols, ", ")+`)`)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
	for _, kv := range append([][2]string{{"tenant_id", "t1"}, {"account_id", "m1"}, {"role", model.RoleMember}, {"seq", strconv.FormatInt(seq, 10)}, {"schema_version", "1"}}, meta...) {
		if _, err := db.Exec(`INSERT INTO sync_meta (key, value) VALUES (?, ?)`, kv[0], kv[1]); err != nil {
			tb.Fatal(err)
		}
	}
	for entity, list := range rs {
		e, ok := model.Lookup(entity)
		if !ok {
			tb.Fatalf("unknown entity %q", entity)
		}
		for _, r := range list {
			cols, args := []string{`"id"`}, []any{r["id"]}
			for name, v := range r {
				if name == "id" {
					continue
				}
				f, ok := e.Field(name)
				if !ok {
					tb.Fatalf("%s has no field %q", entity, name)
				}
				lv, err := toLocal(f, v)
				if err != nil {
					tb.Fatal(err)
				}
				cols, args = append(cols, `"`+name+`"`), append(args, lv)
			}
			q := `INSERT INTO "` + entity + `" (` + strings.Join(cols, ",") + `) VALUES (?` + strings.Repeat(",?", len(cols)-1) + `)`
			if _, err := db.Exec(q, args...); err != nil {
				tb.Fatalf("%s: %v", q, err)
			}
		}
	}
}

// openClient opens a device directory that holds a shard of rs at seq
// (with the further sync_meta entries meta) and is logged in to server
// (token "t1.secret").
func openClient(tb testing.TB, server string, seq int64, rs rows, meta ...[2]string) *Client {
	tb.Helper()
	dir := tb.TempDir()
	writeShard(tb, filepath.Join(dir, "data.db"), seq, rs, meta...)
	st := State{Server: server, DeviceID: "d1", Token: "t1.secret", TenantID: "t1", AccountID: "m1", Role: model.RoleMember, State: StateActive}
	b, err := json.Marshal(st)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device.json"), b, 0o600); err != nil {
		tb.Fatal(err)
	}
	c, err := Open(dir, "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// row returns a local row, nil when there is none.
func row(tb testing.TB, c *Client, entity, id string) map[string]any {
	tb.Helper()
	rs, err := c.Query(context.Background(), `SELECT * FROM "`+entity+`" WHERE id = ?`, id)
	if err != nil {
		tb.Fatalf("read %s %s: %v", entity, id, err)
	}
	if len(rs) == 0 {
		return nil
	}
	return rs[0]
}

// history returns the history id the local database holds ("" when it
// holds none).
func history(tb testing.TB, c *Client) string {
	tb.Helper()
	rs, err := c.Query(context.Background(), `SELECT value FROM sync_meta WHERE key = 'history'`)
	if err != nil {
		tb.Fatal(err)
	}
	if len(rs) == 0 {
		return ""
	}
	v, _ := rs[0]["value"].(string)
	return v
}

// syncCalls returns the queries of the live connections the server saw.
func (fs *fakeServer) syncCalls() []string {
	var out []string
	for _, c := range fs.callLog() {
		if q, ok := strings.CutPrefix(c, "sync "); ok {
			out = append(out, q)
		}
	}
	return out
}

// cursor returns the device's cursor.
func cursor(tb testing.TB, c *Client) int64 {
	tb.Helper()
	n, err := c.Cursor()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// outbox returns the device's outbox.
func outbox(tb testing.TB, c *Client) []Pending {
	tb.Helper()
	ps, err := c.Outbox(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

// bases returns the entity/row keys that have a server state kept in
// outbox.db.
func bases(tb testing.TB, c *Client) []string {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, err := c.outbox.Query(`SELECT entity || '/' || row_id FROM base ORDER BY 1`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var k string
		if err := rs.Scan(&k); err != nil {
			tb.Fatal(err)
		}
		out = append(out, k)
	}
	if err := rs.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// write makes a local write and returns its mutation id.
func write(tb testing.TB, c *Client, entity string, op model.Op, id string, fields map[string]any) string {
	tb.Helper()
	mid, err := c.Write(context.Background(), model.Change{Entity: entity, Op: op, ID: id, Fields: fields})
	if err != nil {
		tb.Fatalf("Write(%s %s %s) = %v", op, entity, id, err)
	}
	return mid
}

// script is what the fake server does on one live connection: the
// device's cursor is the one it connected with.
type script func(ws *websocket.Conn, cursor int64)

// fakeServer is syncd as the device sees it: the shard download and the
// live sync, each connection played by the next script.
type fakeServer struct {
	tb  testing.TB
	URL string

	mu      sync.Mutex
	shard   []byte
	scripts []script
	refuse  []refusal // answers to the next upgrades instead of a script
	// logoutDown makes POST /v1/device/logout hang up without an answer,
	// as a server that cannot be reached; else logoutStatus answers it
	// (zero: 200).
	logoutDown   bool
	logoutStatus int
	calls        []string // "login", "shard", "sync <query>", "logout <token>", in order
	wg           sync.WaitGroup
}

// refusal is an error answer to an upgrade.
type refusal struct {
	status int
	code   string
}

func newFakeServer(tb testing.TB) *fakeServer {
	tb.Helper()
	fs := &fakeServer{tb: tb}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/device/shard", fs.serveShard)
	mux.HandleFunc("GET /v1/device/sync", fs.serveSync)
	mux.HandleFunc("POST /v1/device/login", fs.serveLogin)
	mux.HandleFunc("POST /v1/device/logout", fs.serveLogout)
	srv := httptest.NewServer(mux)
	fs.URL = srv.URL
	tb.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		fs.wg.Wait()
	})
	return fs
}

// setShard makes the shard of rs at seq (with the further sync_meta
// entries meta) the one the server hands out.
func (fs *fakeServer) setShard(seq int64, rs rows, meta ...[2]string) {
	fs.tb.Helper()
	path := filepath.Join(fs.tb.TempDir(), "shard.db")
	writeShard(fs.tb, path, seq, rs, meta...)
	b, err := os.ReadFile(path)
	if err != nil {
		fs.tb.Fatal(err)
	}
	fs.mu.Lock()
	fs.shard = b
	fs.mu.Unlock()
}

// play queues scripts for the next connections, in order.
func (fs *fakeServer) play(s ...script) {
	fs.mu.Lock()
	fs.scripts = append(fs.scripts, s...)
	fs.mu.Unlock()
}

// called records a request and returns what the server does with the next
// logout.
func (fs *fakeServer) called(what string) (down bool, status int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls = append(fs.calls, what)
	return fs.logoutDown, fs.logoutStatus
}

// callLog returns the requests the server saw, in order.
func (fs *fakeServer) callLog() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.calls...)
}

func (fs *fakeServer) serveLogin(w http.ResponseWriter, r *http.Request) {
	fs.called("login")
	fs.mu.Lock()
	sum := sha256.Sum256(fs.shard)
	fs.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": "t1.secret", "tenant_id": "t1", "account_id": "m1", "role": model.RoleMember,
		"shard": map[string]any{"sha256": hex.EncodeToString(sum[:])}})
}

func (fs *fakeServer) serveLogout(w http.ResponseWriter, r *http.Request) {
	down, status := fs.called("logout " + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if down {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			fs.tb.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status == http.StatusOK {
		w.Write([]byte(`{"ok":true}`))
		return
	}
	code := map[int]string{http.StatusUnauthorized: wire.CodeUnauthorized, http.StatusServiceUnavailable: wire.CodeUnavailable}[status]
	if code == "" {
		code = wire.CodeInternal
	}
	json.NewEncoder(w).Encode(map[string]string{"error": code, "message": "refused"})
}

func (fs *fakeServer) serveShard(w http.ResponseWriter, r *http.Request) {
	fs.called("shard")
	fs.mu.Lock()
	b := fs.shard
	fs.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer t1.secret" || b == nil {
		http.Error(w, `{"error":"unauthorized","message":"no"}`, http.StatusUnauthorized)
		return
	}
	sum := sha256.Sum256(b)
	w.Header().Set("X-Therasync-SHA256", hex.EncodeToString(sum[:]))
	w.Write(b)
}

func (fs *fakeServer) serveSync(w http.ResponseWriter, r *http.Request) {
	fs.wg.Add(1)
	defer fs.wg.Done()
	fs.called("sync " + r.URL.RawQuery)
	fs.mu.Lock()
	var (
		next script
		ref  *refusal
	)
	switch {
	case len(fs.refuse) > 0:
		ref, fs.refuse = &fs.refuse[0], fs.refuse[1:]
	case len(fs.scripts) > 0:
		next, fs.scripts = fs.scripts[0], fs.scripts[1:]
	}
	fs.mu.Unlock()
	if ref != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ref.status)
		json.NewEncoder(w).Encode(map[string]string{"error": ref.code, "message": "refused"})
		return
	}
	if next == nil {
		fs.tb.Errorf("connection %s with no script left", r.URL)
		http.Error(w, `{"error":"internal","message":"no script"}`, http.StatusInternalServerError)
		return
	}
	cur, err := strconv.ParseInt(r.URL.Query().Get("cursor"), 10, 64)
	if err != nil {
		fs.tb.Errorf("cursor %q: %v", r.URL.Query().Get("cursor"), err)
	}
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		fs.tb.Errorf("upgrade: %v", err)
		return
	}
	defer ws.Close()
	next(ws, cur)
}

// send writes frames to the device.
func send(tb testing.TB, ws *websocket.Conn, frames ...any) {
	tb.Helper()
	for _, f := range frames {
		b, err := json.Marshal(f)
		if err != nil {
			tb.Error(err)
			return
		}
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			tb.Errorf("send %s: %v", b, err)
			return
		}
	}
}

// closeWith sends a close frame with code and waits for the device to hang
// up (it may have hung up already, after a wipe or a resync).
func closeWith(ws *websocket.Conn, code int) {
	if ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, "test")) != nil {
		return
	}
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

// readPush reads the device's next frame as a push, decoded as strictly
// as syncd does, and returns it with its mutations as they were sent.
func readPush(tb testing.TB, ws *websocket.Conn) (wire.Push, []string) {
	tb.Helper()
	_, b, err := ws.ReadMessage()
	if err != nil {
		tb.Errorf("read push: %v", err)
		return wire.Push{}, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var p wire.Push
	if err := dec.Decode(&p); err != nil {
		tb.Errorf("push %s: %v", b, err)
	}
	if p.Type != wire.TypePush {
		tb.Errorf("push %s: type %q; want %q", b, p.Type, wire.TypePush)
	}
	var raw struct {
		Mutations []json.RawMessage `json:"mutations"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		tb.Error(err)
	}
	out := make([]string, len(raw.Mutations))
	for i, m := range raw.Mutations {
		out[i] = string(m)
	}
	return p, out
}

// equalJSON reports whether a and b encode to the same JSON.
func equalJSON(tb testing.TB, a, b any) bool {
	tb.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		tb.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	return string(ja) == string(jb)
}
