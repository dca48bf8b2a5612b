package device

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// This file sends requests to the server (do) and reads its error answers
// (APIError, IsCode).

// APIError is an error answer of the server.
type APIError struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
}

// Error says what the server answered.
func (e *APIError) Error() string {
	return fmt.Sprintf("server: %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends a request to st's server with st's token and decodes a JSON
// answer into out (unless nil); an error answer is an *APIError. Callers
// pass a copy of the state: no lock is held during the request.
func (c *Client) do(ctx context.Context, st State, method, path string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, st.Server+path, r)
	if err != nil {
		return err
	}
	if st.Token != "" {
		req.Header.Set("Authorization", "Bearer "+st.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// apiError reads an error answer into an *APIError; a body that is not
// JSON becomes its message.
func apiError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		e.Message = fmt.Sprintf("reading the answer: %v", err)
		return e
	}
	if json.Unmarshal(b, e) != nil {
		e.Message = strings.TrimSpace(string(b))
	}
	return e
}

// IsCode reports whether err is an APIError with the error code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

// isAPIError reports whether err is an answer of the server (not a
// network error).
func isAPIError(err error) bool { var e *APIError; return errors.As(err, &e) }
