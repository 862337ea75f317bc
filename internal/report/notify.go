package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
)

// Webhook posts a run's summary JSON to a URL at the end of the run. The URL may carry a secret
// (a token in its query, its path or its userinfo): it is only ever shown through Redact.
type Webhook struct {
	url    string
	Client *http.Client  // default: a client with a 10s timeout per request
	Tries  int           // default 3
	Delay  time.Duration // before the second try, doubled after; default 1s
}

// NewWebhook checks raw as the API endpoints are checked: https, or plain http to loopback
// only. The error names the URL redacted.
func NewWebhook(raw string) (*Webhook, error) {
	if _, err := api.CheckEndpoint("--notify", raw); err != nil {
		// CheckEndpoint's message quotes the URL whole.
		u, perr := url.Parse(raw)
		if perr != nil || u.Host == "" {
			return nil, errors.New("--notify: not a URL (want https://host/path)")
		}
		return nil, fmt.Errorf("--notify %s: plain http is only allowed on loopback; use https", Redact(raw))
	}
	return &Webhook{url: raw}, nil
}

// String is the URL, redacted.
func (w *Webhook) String() string { return Redact(w.url) }

// Redact returns a webhook URL fit for a log line: its scheme and host, and "/…" for a path.
// The userinfo, the query and the fragment are dropped, and so is the path: webhook services
// put their secret there too (…/services/T0/B0/secret).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(a URL that does not parse)"
	}
	s := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		s += "/…"
	}
	return s
}

// Send posts body (application/json) and returns nil once the webhook answered 2xx. A
// connection error, a 429 or a 5xx is tried again, up to Tries in all; any other answer is
// final. Errors name the URL redacted.
func (w *Webhook) Send(ctx context.Context, body []byte) error {
	client, tries, delay := w.Client, w.Tries, w.Delay
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if tries <= 0 {
		tries = 3
	}
	if delay <= 0 {
		delay = time.Second
	}
	var err error
	for try := 1; ; try++ {
		var retry bool
		retry, err = w.post(ctx, client, body)
		if err == nil || !retry || try >= tries {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("notify %s: %w (after %d tries; %v)", w, ctx.Err(), try, err)
		case <-t.C:
		}
		delay *= 2
	}
	return err
}

// post makes one try; retry says whether another may succeed.
func (w *Webhook) post(ctx context.Context, client *http.Client, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", w, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// Its message quotes the URL whole.
			err = ue.Err
		}
		return ctx.Err() == nil, fmt.Errorf("notify %s: %w", w, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("notify %s: %s", w, resp.Status)
	}
	return false, fmt.Errorf("notify %s: %s", w, resp.Status)
}
