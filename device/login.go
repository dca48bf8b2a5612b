package device

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// This file logs a device in (with an access code or an operator's token)
// and downloads its shard as the local database, resuming a broken
// download.

// shardRef is the shard a login answer names.
type shardRef struct {
	Seq    int64  `json:"seq"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Login trades an email and access code for a device token and downloads
// the account's shard as the local database.
func (c *Client) Login(ctx context.Context, email, code, name, platform string) error {
	var res struct {
		Token     string   `json:"token"`
		TenantID  string   `json:"tenant_id"`
		AccountID string   `json:"account_id"`
		Role      string   `json:"role"`
		Shard     shardRef `json:"shard"`
	}
	c.FinishLogout(ctx) // one the server still cannot hear of stays pending
	st := c.State()
	st.Token = ""
	err := c.do(ctx, st, "POST", "/v1/device/login", map[string]string{"email": email, "code": code, "device_id": st.DeviceID, "device_name": name, "platform": platform}, &res)
	if err == nil {
		c.mu.Lock()
		c.st.Token, c.st.TenantID, c.st.AccountID, c.st.Role, c.st.State = res.Token, res.TenantID, res.AccountID, res.Role, StateActive
		err = c.saveLocked()
		c.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	return c.downloadShard(ctx, res.Shard.SHA256)
}

// UseToken sets a token minted by an operator (therasync token issue)
// instead of logging in.
func (c *Client) UseToken(ctx context.Context, token string) error {
	c.FinishLogout(ctx) // one the server still cannot hear of stays pending
	c.mu.Lock()
	c.st.Token, c.st.State = token, StateActive
	tenant, _, _ := strings.Cut(token, ".")
	c.st.TenantID = tenant
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.downloadShard(ctx, "")
}

// downloadShard fetches the newest shard into data.db.part, resuming a
// broken download with a Range request, checks its sha256 and puts it in
// place of the local database. Pending writes are applied on top again;
// on a new history, writes of rows the shard does not hold are dropped
// when rejected (dropGoneLocked). Once the device is no longer logged in
// with the token it started with (a logout, a wipe, a newer login), it
// leaves no file behind and returns ErrNotLoggedIn.
func (c *Client) downloadShard(ctx context.Context, wantSHA string) error {
	part := c.path("data.db.part")
	st := c.State()
	for attempt := 0; ; attempt++ {
		if err := c.stillLoggedIn(st.Token, part); err != nil {
			return fmt.Errorf("download shard: %w", err)
		}
		sha, err := c.fetchShard(ctx, st, part)
		if err != nil {
			if attempt < 3 && !isAPIError(err) {
				continue // resumes from what arrived
			}
			return fmt.Errorf("download shard: %w", errors.Join(err, c.stillLoggedIn(st.Token, part)))
		}
		got, err := fileSHA256(part)
		if err != nil {
			return err
		}
		if got != sha || (wantSHA != "" && got != wantSHA && attempt == 0 && sha == wantSHA) {
			if err := removeFile(part); err != nil {
				return fmt.Errorf("download shard: %w", err)
			}
			if attempt < 3 {
				continue
			}
			return fmt.Errorf("download shard: sha256 %s, want %s", got, sha)
		}
		break
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stillLoggedInLocked(st.Token, part); err != nil {
		return fmt.Errorf("download shard: %w", err)
	}
	var was string
	if c.data != nil {
		was, _ = c.historyLocked() // unreadable: taken as no history
	}
	c.closeDataLocked() // the file goes: an error closing it changes nothing
	if err := removeDB(c.path("data.db")); err != nil {
		return fmt.Errorf("download shard: %w", err)
	}
	if err := os.Rename(part, c.path("data.db")); err != nil {
		return err
	}
	var err error
	if c.data, err = openDB(c.path("data.db")); err != nil {
		return err
	}
	if err := c.openOutboxLocked(); err != nil { // gone after a logout or a wipe
		return err
	}
	// The shard says whose and which role's data it is (a role may change).
	for _, meta := range []struct {
		key string
		to  *string
	}{{"role", &c.st.Role}, {"account_id", &c.st.AccountID}} {
		err := c.data.QueryRow(`SELECT value FROM sync_meta WHERE key = ?`, meta.key).Scan(meta.to)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("download shard: read its %s: %w", meta.key, err)
		}
	}
	if err := c.saveLocked(); err != nil {
		return err
	}
	history, err := c.historyLocked()
	if err != nil {
		return fmt.Errorf("download shard: %w", err)
	}
	if was != "" && history != was {
		if err := c.dropGoneLocked(ctx, false); err != nil {
			return err
		}
	}
	if err := c.rebaseLocked(); err != nil {
		return err
	}
	// The old data.db is gone; what the outbox dropped leaves its WAL.
	return truncateWAL(ctx, c.data, c.outbox)
}

// stillLoggedIn is stillLoggedInLocked under the client's lock.
func (c *Client) stillLoggedIn(token, part string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stillLoggedInLocked(token, part)
}

// stillLoggedInLocked returns ErrNotLoggedIn, having removed the partial
// download part, unless the device is logged in (active) with token.
func (c *Client) stillLoggedInLocked(token, part string) error {
	if c.st.State == StateActive && c.st.Token != "" && c.st.Token == token {
		return nil
	}
	return errors.Join(ErrNotLoggedIn, removeFile(part))
}

// fetchShard appends the rest of the shard to part and returns the sha256
// the server gives for it.
func (c *Client) fetchShard(ctx context.Context, st State, part string) (string, error) {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", st.Server+"/v1/device/shard", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+st.Token)
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if have > 0 { // the server sent the whole file
			if err := f.Truncate(0); err != nil {
				return "", err
			}
		}
	case http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		return "", errors.Join(errors.New("the shard changed during the download"), f.Truncate(0))
	default:
		return "", apiError(resp)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return resp.Header.Get("X-Therasync-SHA256"), nil
}

// fileSHA256 returns the sha256 of the file at path, in hex.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
