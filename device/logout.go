package device

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
)

// This file logs a device out and wipes it: it deletes the local database
// files, and tells the server of a logout when it can.

// Logout logs the device out: first it deletes the local data and the
// outbox, whatever happens next (DESIGN §5), then it tells the server to
// end the token. When the server cannot be reached (no answer, a 5xx), the
// token stays in device.json as a pending logout, with no data and no
// outbox, and Logout returns an error that is ErrLogoutPending: the next
// call that reaches the server (FinishLogout, which Login, UseToken, Sync
// and Logout call first) tells it then.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	if c.st.Token != "" {
		c.st.LogoutPending = append(c.st.LogoutPending, PendingLogout{Server: c.st.Server, Token: c.st.Token})
	}
	werr := c.wipeLocked() // logged out also when a file stays behind
	c.st.State = StateLoggedOut
	err := errors.Join(werr, c.saveLocked())
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("logout: %w", errors.Join(err, c.FinishLogout(ctx)))
	}
	return c.FinishLogout(ctx)
}

// FinishLogout tells the server of the logouts it has yet to hear of, each
// with its old token, and forgets the tokens it answered for (also a 401:
// the token had ended). While a server stays unreachable it returns an
// error that is ErrLogoutPending, and the token stays pending.
func (c *Client) FinishLogout(ctx context.Context) error {
	var unsent, errs []error
	for _, p := range c.State().LogoutPending {
		err := c.do(ctx, State{Server: p.Server, Token: p.Token}, "POST", "/v1/device/logout", nil, nil)
		if unreached(err) {
			unsent = append(unsent, err)
			continue
		}
		errs = append(errs, c.forgetLogout(p.Token))
	}
	if len(unsent) > 0 {
		errs = append(errs, fmt.Errorf("%w (%w)", ErrLogoutPending, errors.Join(unsent...)))
	}
	return errors.Join(errs...)
}

// unreached reports whether err says that the server did not hear a
// request or could not act on it: no answer, a 5xx, too many requests.
// Any other answer is final.
func unreached(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return err != nil
	}
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// forgetLogout drops the pending logout of token.
func (c *Client) forgetLogout(token string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.LogoutPending = slices.DeleteFunc(c.st.LogoutPending, func(p PendingLogout) bool { return p.Token == token })
	if err := c.saveLocked(); err != nil {
		return fmt.Errorf("forget the pending logout: %w", err)
	}
	return nil
}

// wipeLocked deletes every local database file; it reports the files it
// could not delete, after trying all of them.
func (c *Client) wipeLocked() error {
	errs := []error{c.closeDataLocked()}
	if c.outbox != nil {
		errs = append(errs, c.outbox.Close())
		c.outbox = nil
	}
	errs = append(errs, removeDB(c.path("data.db")), removeDB(c.path("outbox.db")), removeFile(c.path("data.db.part")))
	c.st.Token, c.st.State = "", StateWiped
	// The server keeps the old id revoked for good (DESIGN §5): a later
	// login is a new device.
	c.st.DeviceID = newID()
	errs = append(errs, c.saveLocked())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	return nil
}

// removeDB deletes a SQLite database file and the files that go with it.
func removeDB(path string) error {
	var errs []error
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		errs = append(errs, removeFile(p))
	}
	return errors.Join(errs...)
}

// removeFile deletes a file; one that is not there is no error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
