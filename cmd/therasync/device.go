package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/therasync/therasync/device"
	"github.com/therasync/therasync/model"
)

// runDevice acts as a phone from a terminal, with the device library.
func (m *Main) runDevice(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("device: want login, sync, status, query, write or logout")
	}
	cmd, args := args[0], args[1:]
	fs := m.flags("device " + cmd)
	dir := fs.String("dir", "", "the device's directory")
	server := fs.String("server", "", "syncd's URL, e.g. http://127.0.0.1:8080 (kept in the directory after login)")
	email := fs.String("email", "", "login: the account's email")
	code := fs.String("code", "", "login: the access code from the mail")
	token := fs.String("token", "", "login: a token minted by 'therasync token issue' instead of email and code")
	name := fs.String("name", "Terminal", "login: the device's name")
	follow := fs.Bool("follow", false, "sync: keep following live changes until interrupted")
	entity := fs.String("entity", "", "write: the entity")
	op := fs.String("op", "upsert", "write: upsert or delete")
	id := fs.String("id", "", "write: the row id (empty: a new row under a fresh UUID, printed on stderr)")
	fields := fs.String("fields", "{}", "write: the fields as a JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("device: --dir is required")
	}
	// Only a login chooses the server; every other command uses the one
	// the device logged in to and refuses another rather than rewrite it.
	open := *server
	if cmd != "login" {
		open = ""
	}
	c, err := device.Open(*dir, open)
	if err != nil {
		return err
	}
	m.closers = append(m.closers, c.Close)
	if stored := c.State().Server; cmd != "login" && *server != "" && strings.TrimRight(*server, "/") != stored {
		return fmt.Errorf("device %s: --server %s is not the server this device logged in to (%q); only device login changes it", cmd, *server, stored)
	}
	switch cmd {
	case "login":
		return m.deviceLogin(ctx, c, *token, *email, *code, *name)
	case "sync":
		opts := device.SyncOptions{UntilIdle: !*follow}
		if *follow {
			// What happens, as it happens, on stderr; the status at the
			// end on stdout.
			opts.Report = func(e device.Event) {
				fmt.Fprintf(m.Stderr, "%s %s\n", time.Now().Format(time.TimeOnly), e)
			}
		}
		if err := c.Sync(ctx, opts); err != nil {
			return err
		}
		// Ctrl-C or SIGTERM ends --follow: that is its normal end, and the
		// status is still printed.
		return m.deviceStatus(context.WithoutCancel(ctx), c)
	case "status":
		return m.deviceStatus(ctx, c)
	case "query":
		return m.deviceQuery(ctx, c, fs.Args())
	case "write":
		return m.deviceWrite(ctx, c, *entity, *op, *id, *fields)
	case "logout":
		return m.deviceLogout(ctx, c)
	}
	return usageError("device: unknown command " + cmd)
}

// deviceLogin logs c in with an operator's token, or an email and access
// code, and prints its status.
func (m *Main) deviceLogin(ctx context.Context, c *device.Client, token, email, code, name string) error {
	var err error
	switch {
	case c.State().Server == "":
		return usageError("device login: --server is required")
	case token != "":
		err = c.UseToken(ctx, token)
	case email == "" || code == "":
		return usageError("device login: --email and --code (or --token) are required")
	default:
		err = c.Login(ctx, email, code, name, "terminal")
	}
	if err != nil {
		return err
	}
	return m.deviceStatus(ctx, c)
}

// deviceLogout logs c out; a server that could not be told is told by the
// next device command that reaches it, and is no failure.
func (m *Main) deviceLogout(ctx context.Context, c *device.Client) error {
	err := c.Logout(ctx)
	if errors.Is(err, device.ErrLogoutPending) {
		fmt.Fprintln(m.Stderr, err) // says what happened and what follows
		return nil
	}
	return err
}

// deviceQuery prints the rows of the one SQL query in args, run on c's
// local database.
func (m *Main) deviceQuery(ctx context.Context, c *device.Client, args []string) error {
	if len(args) != 1 {
		return usageError("device query: give one SQL query")
	}
	rows, err := c.Query(ctx, args[0])
	if err != nil {
		return err
	}
	out := json.NewEncoder(m.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(rows)
}

// deviceWrite writes a change locally on c, fields a JSON object, and
// prints its mutation id; an upsert without id gets a fresh UUID, printed
// on stderr.
func (m *Main) deviceWrite(ctx context.Context, c *device.Client, entity, op, id, fields string) error {
	var f map[string]any
	if err := json.NewDecoder(strings.NewReader(fields)).Decode(&f); err != nil {
		return usageError("device write: --fields must be a JSON object: " + err.Error())
	}
	if id == "" && op == string(model.OpUpsert) {
		b := make([]byte, 16)
		rand.Read(b)
		b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80 // version 4, RFC 4122 variant
		id = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
		fmt.Fprintln(m.Stderr, "row id", id)
	}
	mid, err := c.Write(ctx, model.Change{Entity: entity, Op: model.Op(op), ID: id, Fields: f})
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, mid)
	return nil
}

// deviceStatus prints c's state, cursor and its history, count of pending
// writes and rejected writes, and whether a logout is pending, as JSON.
func (m *Main) deviceStatus(ctx context.Context, c *device.Client) error {
	st := c.State()
	status := map[string]any{"state": st.State, "server": st.Server, "device_id": st.DeviceID, "tenant_id": st.TenantID, "account_id": st.AccountID, "role": st.Role}
	if len(st.LogoutPending) > 0 {
		status["logout_pending"] = true // the server is yet to hear of a logout
	}
	if cursor, err := c.Cursor(); err == nil {
		status["cursor"] = cursor
	}
	if h, err := c.History(); err == nil && h != "" {
		status["history"] = h
	}
	ps, err := c.Outbox(ctx)
	if err != nil {
		return err
	}
	pending, rejected := 0, []device.Pending{}
	for _, p := range ps {
		if p.Rejected {
			rejected = append(rejected, p)
		} else {
			pending++
		}
	}
	status["pending"], status["rejected"] = pending, rejected
	out := json.NewEncoder(m.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(status)
}

// runToken mints device tokens straight into the store, for load tests:
// an operator tool that bypasses access codes, to be run only by whoever
// runs the server.
func (m *Main) runToken(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "issue" {
		return usageError("token: want issue")
	}
	fs := m.flags("token issue")
	data := fs.String("data", "", "data directory")
	tenant := fs.String("tenant", "", "tenant id")
	account := fs.String("account", "", "account id")
	count := fs.Int("count", 1, "how many devices (and tokens)")
	prefix := fs.String("device-prefix", "loadgen-", "device ids are this prefix and a number")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *tenant == "" || *account == "" || *count < 1 || *count > 100000 {
		return usageError("token issue: --tenant and --account are required, --count 1 to 100000")
	}
	s, err := m.openStore(*data)
	if err != nil {
		return err
	}
	t, err := s.Tenant(ctx, *tenant)
	if err != nil {
		return fmt.Errorf("tenant %s: %w", *tenant, err)
	}
	if _, err := t.Account(ctx, *account); err != nil {
		return fmt.Errorf("account %s: %w", *account, err)
	}
	for i := range *count {
		tok, _, err := t.LoginDevice(ctx, *account, fmt.Sprintf("%s%d", *prefix, i), "token issue", "operator")
		if err != nil {
			return err
		}
		fmt.Fprintln(m.Stdout, tok)
	}
	return nil
}
