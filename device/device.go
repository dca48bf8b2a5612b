// Package device is the device client library: what a therapist's phone or
// a check-in tablet does to log in, keep its shard as a local SQLite
// database, write locally and sync both ways with syncd. It is the
// reference the app teams port.
//
// A device directory holds three files: device.json (server, token, state),
// data.db (the shard, with every streamed change applied; its sync_meta
// holds the cursor) and outbox.db (local writes until the server
// acknowledges them, and the server state of the rows they touch).
package device

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// This file opens a device directory and keeps its state (device.json):
// the Client, its State, and closing its databases.

// The states of a device.
const (
	StateLoggedOut = "logged_out"
	StateActive    = "active"
	StateRevoked   = "revoked" // data kept, read-only; sync retried rarely
	StateWiped     = "wiped"
)

// Errors of the library.
var (
	ErrNotLoggedIn = errors.New("device: not logged in")
	ErrReadOnly    = errors.New("device: access withdrawn by the practice: the data is read-only")
	ErrWiped       = errors.New("device: the local data was deleted on the practice's request")
	// ErrLogoutPending says the device logged out (its data is deleted)
	// but the server could not be told yet; FinishLogout tells it later.
	ErrLogoutPending = errors.New("device: logged out and the local data deleted, but the server could not be told yet: it is told the next time it is reached")
)

// State is what device.json holds.
type State struct {
	Server    string `json:"server"`
	DeviceID  string `json:"device_id"`
	Token     string `json:"token,omitempty"`
	TenantID  string `json:"tenant_id,omitempty"`
	AccountID string `json:"account_id,omitempty"`
	Role      string `json:"role,omitempty"`
	State     string `json:"state"`
	// LogoutPending holds the tokens of logouts the server has yet to
	// hear of (it was unreachable at Logout), and nothing else of them.
	LogoutPending []PendingLogout `json:"logout_pending,omitempty"`
}

// PendingLogout is a logout the server has yet to hear of: the token to
// end and the server it belongs to.
type PendingLogout struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

// Client is one device's local state and its connection to the server.
type Client struct {
	dir  string
	http *http.Client

	// mu guards st and the database handles, which a resync or a wipe
	// replaces; it is held during local database work, never during a
	// network request.
	mu     sync.Mutex
	st     State
	data   *sql.DB // nil until a shard is downloaded
	ro     *sql.DB // data.db opened read-only, for Query; nil until first used
	outbox *sql.DB
}

// Open opens the device directory dir, creating it for server when new.
func Open(dir, server string) (*Client, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open device: %w", err)
	}
	c := &Client{dir: dir, http: &http.Client{Timeout: 5 * time.Minute}}
	b, err := os.ReadFile(c.path("device.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c.st); err != nil {
			return nil, fmt.Errorf("open device: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
		c.st = State{Server: strings.TrimRight(server, "/"), DeviceID: newID(), State: StateLoggedOut}
	default:
		return nil, fmt.Errorf("open device: %w", err)
	}
	if server != "" {
		c.st.Server = strings.TrimRight(server, "/")
	}
	// A device without a token keeps no outbox (a logout deleted it): the
	// shard download at login makes it.
	if _, err := os.Stat(c.path("outbox.db")); err == nil || c.st.Token != "" {
		if err := c.openOutboxLocked(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(c.path("data.db")); err == nil {
		if c.data, err = openDB(c.path("data.db")); err != nil {
			return nil, err
		}
	}
	return c, c.saveLocked()
}

// openOutboxLocked opens outbox.db, creating it and its tables when new,
// unless it is open. A device without a token (logged out, wiped) gets no
// new outbox: ErrNotLoggedIn.
func (c *Client) openOutboxLocked() error {
	if c.outbox != nil {
		return nil
	}
	if c.st.Token == "" {
		if _, err := os.Stat(c.path("outbox.db")); err != nil {
			return ErrNotLoggedIn
		}
	}
	db, err := openDB(c.path("outbox.db"))
	if err != nil {
		return err
	}
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS outbox (
		n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, entity TEXT NOT NULL, op TEXT NOT NULL,
		row_id TEXT NOT NULL, fields TEXT, rejected INTEGER NOT NULL DEFAULT 0, error TEXT, message TEXT);
		CREATE TABLE IF NOT EXISTS base (entity TEXT NOT NULL, row_id TEXT NOT NULL, fields TEXT, PRIMARY KEY (entity, row_id));`); err != nil {
		db.Close()
		return fmt.Errorf("open outbox: %w", err)
	}
	// orphaned: the write's row was gone from the server's rows of a new
	// history (an erasure, a restore) when the outbox met it; a reject of
	// it drops it (dropGoneLocked). Added to outboxes made before.
	var has int
	err = db.QueryRow(`SELECT count(*) FROM pragma_table_info('outbox') WHERE name = 'orphaned'`).Scan(&has)
	if err == nil && has == 0 {
		_, err = db.Exec(`ALTER TABLE outbox ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0`)
	}
	if err != nil {
		db.Close()
		return fmt.Errorf("open outbox: %w", err)
	}
	c.outbox = db
	return nil
}

// newID returns a fresh random id (of a device, of a mutation): 16 bytes
// in hex.
func newID() string {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		// crypto/rand documents that Read never fails (it crashes the
		// program itself when the system's source does).
		panic(fmt.Sprintf("device: crypto/rand: %v", err))
	}
	return hex.EncodeToString(id)
}

// openDB opens the SQLite database at path (WAL, full sync, one
// connection; secure_delete, so that a deleted row leaves no bytes in the
// file).
func openDB(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=secure_delete(ON)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// closeDataLocked closes the handles of data.db (the read-write one and
// Query's read-only one).
func (c *Client) closeDataLocked() error {
	var errs []error
	if c.ro != nil {
		errs = append(errs, c.ro.Close())
		c.ro = nil
	}
	if c.data != nil {
		errs = append(errs, c.data.Close())
		c.data = nil
	}
	return errors.Join(errs...)
}

// path returns the path of the file name in the device directory.
func (c *Client) path(name string) string { return filepath.Join(c.dir, name) }

// Dir returns the device directory.
func (c *Client) Dir() string { return c.dir }

// saveLocked writes device.json atomically.
func (c *Client) saveLocked() error {
	b, err := json.MarshalIndent(c.st, "", "  ")
	if err != nil {
		return fmt.Errorf("save device state: %w", err)
	}
	tmp := c.path("device.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.path("device.json"))
}

// Close closes the local databases.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := []error{c.closeDataLocked()}
	if c.outbox != nil {
		errs = append(errs, c.outbox.Close())
		c.outbox = nil
	}
	return errors.Join(errs...)
}

// State returns the device's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}
