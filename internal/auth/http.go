package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// maxResponseBody bounds token responses; real ones are ~1 KB.
const maxResponseBody = 1 << 20

// TokenError is a non-200 answer from the IAM or metadata token endpoint.
type TokenError struct {
	StatusCode int    // HTTP status
	Code       int    // gRPC code from the body, 0 if absent
	Message    string // server message, redacted and truncated
}

func (e *TokenError) Error() string {
	s := fmt.Sprintf("http %d", e.StatusCode)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Temporary reports whether retrying may help (retry.TokenTransient: 429 and 5xx).
func (e *TokenError) Temporary() bool { return retry.TokenTransient(e.StatusCode) }

func defaultClient(hc *http.Client) *http.Client {
	if hc != nil {
		return hc
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// normalizeBase checks an endpoint URL and drops a trailing slash.
func normalizeBase(raw, def string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid endpoint URL %q", truncate(raw, 100))
	}
	return strings.TrimRight(raw, "/"), nil
}

// doJSON sends req and decodes a 200 JSON answer into out. Transport errors
// and 429/5xx are returned as they are (retryable); other statuses as
// retry.Unrecoverable wrapping *TokenError.
func doJSON(ctx context.Context, hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		// *url.Error quotes the URL only, which holds no secret here.
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		te := parseTokenError(resp.StatusCode, body)
		if te.Temporary() {
			return te
		}
		return retry.Unrecoverable(te)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return retry.Unrecoverable(fmt.Errorf("invalid JSON in response (status %d)", resp.StatusCode))
	}
	return nil
}

// parseTokenError reads both the generic Yandex Cloud error body and the
// API gateway one ({"error":{...}}).
func parseTokenError(status int, body []byte) *TokenError {
	var generic struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"` // an object, or a string in some answers
	}
	var gateway struct {
		GRPCCode int    `json:"grpcCode"`
		Message  string `json:"message"`
	}
	te := &TokenError{StatusCode: status}
	if json.Unmarshal(body, &generic) == nil {
		te.Code, te.Message = generic.Code, generic.Message
		if te.Message == "" && json.Unmarshal(generic.Error, &gateway) == nil {
			te.Code, te.Message = gateway.GRPCCode, gateway.Message
		}
	} else {
		te.Message = strings.TrimSpace(string(body))
	}
	if te.Message == "" {
		te.Message = http.StatusText(status)
	}
	te.Message = truncate(Redact(te.Message), 300)
	return te
}
