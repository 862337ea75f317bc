package batchapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// Presigned Object Storage URLs (docs/api.md §9) carry their signature in the query: it is a
// credential for a day. Errors name the host and path only, and the requests carry none of our
// own Authorization.

// presignedTries bounds the tries of one upload or download of a presigned URL.
const presignedTries = 4

// redactURL is what an error may say of a presigned URL: its host and path.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Host + u.Path
}

// checkPresigned refuses a URL that would send its signature in the clear: only https, or plain
// http on a loopback address (the emulator).
func checkPresigned(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("presigned URL is not a URL")
	}
	if u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("presigned URL %s: scheme %q refused: want https", u.Host+u.Path, u.Scheme)
}

// httpStatusError is a non-2xx answer of a presigned URL.
type httpStatusError struct {
	where  string // host and path
	status int
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s", e.where, e.status, http.StatusText(e.status))
}

// retryable: 5xx, 408 and 429 may pass next time; any other status (403: a signature that does
// not match, or an expired URL) will not.
func (e *httpStatusError) retryable() bool {
	return e.status >= 500 || e.status == http.StatusTooManyRequests || e.status == http.StatusRequestTimeout
}

// presigned sends the request build makes until do accepts its answer, up to presignedTries
// tries with back-off; a transport error or a retryable status is tried again. The URL stays out
// of the errors: a transport error's *url.Error is unwrapped and named by host and path.
func (c *Client) presigned(ctx context.Context, op, rawURL string, build func(context.Context) (*http.Request, error), do func(*http.Response) error) error {
	if err := checkPresigned(rawURL); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	where := redactURL(rawURL)
	var err error
	for attempt := 1; ; attempt++ {
		err = c.presignedOnce(ctx, where, build, do)
		var se *httpStatusError
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case errors.As(err, &se) && !se.retryable():
			return fmt.Errorf("%s: %w", op, err)
		case attempt >= presignedTries:
			return fmt.Errorf("%s: giving up after %d tries: %w", op, attempt, err)
		}
		d := c.cfg.Retry.Backoff.Delay(attempt)
		c.log.Debug("batchapi: presigned request failed, retrying", "op", op, "where", where, "try", attempt, "delay", d, "err", err)
		if serr := retry.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("%s: %w (last error: %w)", op, serr, err)
		}
	}
}

func (c *Client) presignedOnce(ctx context.Context, where string, build func(context.Context) (*http.Request, error), do func(*http.Response) error) error {
	req, err := build(ctx)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the whole URL, signature included
		}
		return fmt.Errorf("%s %s: %w", req.Method, where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
		return &httpStatusError{where: req.Method + " " + where, status: resp.StatusCode}
	}
	if err := do(resp); err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, where, err)
	}
	return nil
}
