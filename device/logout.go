package device

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/therasync/therasync/wire"
)

// This file logs a device out and wipes it: it deletes the local database
// files.

// Logout invalidates the token on the server and deletes the local data,
// also when the server cannot be reached (DESIGN §5): then it returns an
// error saying so, with the data deleted (the token stays valid on the
// server until the practice revokes the device).
func (c *Client) Logout(ctx context.Context) error {
	var unreached error
	if st := c.State(); st.Token != "" {
		if err := c.do(ctx, st, "POST", "/v1/device/logout", nil, nil); err != nil && !IsCode(err, wire.CodeUnauthorized) {
			unreached = fmt.Errorf("logout: the local data is deleted, but the server was not told (%w): its token stays valid until the practice revokes this device", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	werr := c.wipeLocked() // logged out also when a file stays behind
	c.st.State = StateLoggedOut
	return errors.Join(werr, c.saveLocked(), unreached)
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
