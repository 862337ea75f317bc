package api

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/internal/codes"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// Credentials supplies the Authorization header. It is defined here, where it is used; the auth
// package implements it.
type Credentials interface {
	Authorization(ctx context.Context) (string, error)
	// Invalidate tells the source that the API answered 401 to a request sent with header.
	Invalidate(header string)
}

// FolderScoped is implemented by credentials whose completionAsync requests must name their
// folder: the API refuses an IAM token of a person's account without x-folder-id, while service
// accounts are told not to send it (docs/api.md §6).
type FolderScoped interface {
	NeedsFolderID() bool
}

// Config configures a Client.
type Config struct {
	Endpoint           string // e.g. https://llm.api.cloud.yandex.net
	OperationsEndpoint string // e.g. https://operation.api.cloud.yandex.net
	Credentials        Credentials
	Folder             string // x-folder-id of every submission; unset: the model's folder, for FolderScoped credentials only
	NoDataLogging      bool   // send x-data-logging-enabled: false
	HTTPClient         *http.Client
	SubmitPacer        *Pacer
	PollPacer          *Pacer // operation reads and cancels
	TokenizePacer      *Pacer // the tokenizer's own quota (docs/api.md §5)
	// Retry bounds the tries of one call on transient errors (5xx, resets, garbage) and spaces
	// them; 429 answers do not count, they are waited out through the pacer. Unset fields take
	// the retry package's defaults (Policy.API).
	Retry          retry.Policy
	RequestTimeout time.Duration // per HTTP request; every call has a deadline
	Logger         *slog.Logger
	UserAgent      string
	// InFlight, when set, governs requests already sent: cancelling the call's context stops
	// waits and retries but lets a request on the wire finish (so a Ctrl-C does not turn an
	// accepted submission into an unknown one); cancelling InFlight aborts those too.
	InFlight context.Context
}

// Client talks to the API. It is safe for concurrent use.
type Client struct {
	cfg       Config
	submitURL string
	opsURL    string
	baseURL   string // the endpoint without a trailing slash: the tokenizer's host

	needsFolder bool     // the credentials are FolderScoped
	userAgent   []string // the User-Agent header's value, shared by every request
	// refused is the API's latest 401, until a request succeeds: the reason for credentials
	// that then fail in any worker.
	refused atomic.Pointer[Error]
}

// CheckEndpoint refuses anything but https, except plain http on a loopback address (the emulator).
func CheckEndpoint(name, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%s %q is not a URL", name, raw)
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		host := u.Hostname()
		if strings.EqualFold(host, "localhost") {
			return u, nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return u, nil
		}
		return nil, fmt.Errorf("%s %q: plain http is only allowed on loopback; use https", name, raw)
	}
	return nil, fmt.Errorf("%s %q: scheme must be https", name, raw)
}

// New validates cfg and returns a client.
func New(cfg Config) (*Client, error) {
	ep, err := CheckEndpoint("endpoint", cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	ops, err := CheckEndpoint("operations endpoint", cfg.OperationsEndpoint)
	if err != nil {
		return nil, err
	}
	if cfg.Credentials == nil {
		return nil, errors.New("api client: no credentials")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: NewTransport()}
	}
	if cfg.SubmitPacer == nil {
		cfg.SubmitPacer = NewPacer(0, 0)
	}
	if cfg.PollPacer == nil {
		cfg.PollPacer = NewPacer(0, 0)
	}
	if cfg.TokenizePacer == nil {
		cfg.TokenizePacer = NewPacer(0, 0)
	}
	cfg.Retry = cfg.Retry.API()
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "batchgpt"
	}
	fs, ok := cfg.Credentials.(FolderScoped)
	c := &Client{
		cfg:       cfg,
		submitURL: strings.TrimRight(ep.String(), "/") + "/foundationModels/v1/completionAsync",
		opsURL:    strings.TrimRight(ops.String(), "/") + "/operations/",
		baseURL:   strings.TrimRight(ep.String(), "/"),
	}
	c.needsFolder = ok && fs.NeedsFolderID()
	c.userAgent = []string{cfg.UserAgent}
	return c, nil
}

// NewTransport is the HTTP transport for API calls: TLS verification always on, and enough idle
// connections kept per host for every worker (the default keeps two, and a busy run would spend
// its time opening and closing connections).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 512
	return t
}

// Submission is what Submit learned.
type Submission struct {
	OpID  string
	Tries int // HTTP requests sent, 429s included
	// Doubts counts the tries that failed in a way that may have created (and billed) an
	// operation we never heard of: the API has no idempotency (docs/api.md §6).
	Doubts int
	// InDoubt is true when the last try was such a one: beforeSend, told of every other,
	// never heard of it.
	InDoubt bool
}

// Submit posts one completionAsync request body and returns the operation id. Transient errors
// are retried; a permanent error, an auth error or the attempt limit end the call.
//
// beforeSend, if not nil, runs right before the first try leaves (after the pacer let it go)
// with afterDoubt false, and again before every try that follows one that may have created an
// operation, with afterDoubt true. The caller journals its intent there, and counts the doubtful
// try durably before another goes out: so a crash can only leave in doubt what was really sent,
// and each try that may have been billed is counted once. An error from it ends the call before
// the try is sent.
func (c *Client) Submit(ctx context.Context, body []byte, beforeSend func(afterDoubt bool) error) (Submission, error) {
	var sub Submission
	var op Operation
	folder := c.cfg.Folder
	if folder == "" && c.needsFolder {
		folder = modelFolder(body)
	}
	err := c.do(ctx, "submit", c.cfg.SubmitPacer, func() (*http.Request, error) {
		if beforeSend != nil && (sub.Tries == 0 || sub.InDoubt) {
			if err := beforeSend(sub.Tries > 0); err != nil {
				return nil, err
			}
		}
		sub.InDoubt = false // told, or there was no hook to tell
		return c.post(c.submitURL, body, folder)
	}, &op, func(tryErr error) {
		sub.Tries++
		if tryErr != nil && reachedServer(tryErr) {
			sub.Doubts++
			sub.InDoubt = true
		}
	})
	if err != nil {
		return sub, err
	}
	if op.ID == "" {
		// An accepted answer without an id: we cannot track what may have been created.
		sub.Doubts++
		sub.InDoubt = true
		return sub, &BodyError{Op: "submit", Err: errors.New("operation without id")}
	}
	sub.OpID = op.ID
	return sub, nil
}

// post builds a POST of a JSON body to url, with the folder header when folder is set and the
// data-logging opt-out when the run asked for it.
func (c *Client) post(url string, body []byte, folder string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	// Keys in canonical form, set straight into the map: Header.Set would canonicalize (and for
	// the lower-case spellings the API's documents use, allocate) on every request.
	req.Header["Content-Type"] = jsonContentType
	if folder != "" {
		req.Header["X-Folder-Id"] = []string{folder}
	}
	if c.cfg.NoDataLogging {
		req.Header["X-Data-Logging-Enabled"] = dataLoggingOff
	}
	return req, nil
}

// modelFolder returns the folder of the request's modelUri (gpt://<folder>/<model>... or
// ds://<folder>/<id>, docs/api.md §2), or "" when it names none.
func modelFolder(body []byte) string {
	var r struct {
		ModelURI string `json:"modelUri"`
	}
	if json.Unmarshal(body, &r) != nil {
		return ""
	}
	_, rest, ok := strings.Cut(r.ModelURI, "://")
	if !ok {
		return ""
	}
	folder, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return folder
}

// Operation reads one operation. A 404 is returned as an *Error classified NotFound for the caller
// to judge (fresh or purged).
func (c *Client) Operation(ctx context.Context, id string) (*Operation, error) {
	return c.getOperation(ctx, "get operation "+id, url.PathEscape(id))
}

// getOperation GETs {operations endpoint}/operations/{path}, an operation call under the poll
// pacer, whose answer is an operation.
func (c *Client) getOperation(ctx context.Context, op, path string) (*Operation, error) {
	var o Operation
	err := c.do(ctx, op, c.cfg.PollPacer, func() (*http.Request, error) {
		return http.NewRequest(http.MethodGet, c.opsURL+path, nil)
	}, &o, nil)
	if err != nil {
		return nil, err
	}
	if o.ID == "" {
		return nil, &BodyError{Op: op, Err: errors.New("operation without id")}
	}
	return &o, nil
}

// buildError is a failure before anything was sent (for example the journal could not record
// the intent); it is returned as is and never retried.
type buildError struct{ err error }

func (e *buildError) Error() string { return e.err.Error() }
func (e *buildError) Unwrap() error { return e.err }

// ctxError is a call ended by the caller's context.
type ctxError struct{ err error }

func (e *ctxError) Error() string { return e.err.Error() }
func (e *ctxError) Unwrap() error { return e.err }

// do sends a request built by build until it succeeds, fails permanently, or runs out of
// attempts. tried is told of each try and its error (nil on success).
func (c *Client) do(ctx context.Context, op string, pacer *Pacer, build func() (*http.Request, error), out any, tried func(error)) error {
	failures, throttled := 0, 0
	authRetried := false
	for {
		if err := pacer.Wait(ctx); err != nil {
			return &ctxError{err}
		}
		if err := c.ended(ctx); err != nil {
			return &ctxError{fmt.Errorf("%s: %w", op, err)}
		}
		req, err := build()
		if err != nil {
			return &buildError{fmt.Errorf("%s: %w", op, err)}
		}
		err = c.once(ctx, op, req, out)
		if tried != nil {
			tried(err)
		}
		if err == nil {
			pacer.Succeeded()
			if c.refused.Load() != nil {
				c.refused.Store(nil) // the credentials work again
			}
			return nil
		}
		if err := c.ended(ctx); err != nil {
			return &ctxError{fmt.Errorf("%s: %w", op, err)}
		}
		var delay time.Duration
		switch retry.Classify(err) {
		case retry.Quota:
			// 429s do not use up attempts. The shared pacer slows everybody down; only when it has
			// no rate to slow does this request back off on its own.
			throttled++
			pacer.Throttled(c.retryAfter(err, 0))
			c.cfg.Logger.Debug("quota exceeded, slowing down", "op", op, "rate", pacer.Rate(), "err", err)
			if pacer.Limited() {
				continue
			}
			delay = c.cfg.Retry.Backoff.Delay(throttled)
		case retry.Auth:
			var ae *Error
			if errors.As(err, &ae) && ae.HTTPStatus == http.StatusUnauthorized {
				if ae.credentials {
					// No header to send. If the API refused one (a static token cannot be
					// replaced, a refresh failed), its own message says why, whatever the
					// credentials add: it may be another worker's answer.
					if r := c.refused.Load(); r != nil {
						return fmt.Errorf("%w; %s", r, ae.Message)
					}
					return err
				}
				c.refused.Store(ae)
				if !authRetried {
					// One refresh, shared by all workers through the credentials source.
					authRetried = true
					c.cfg.Credentials.Invalidate(req.Header.Get("Authorization"))
					continue
				}
			}
			return err
		case retry.Transient:
			failures++
			if failures >= c.cfg.Retry.Attempts {
				return fmt.Errorf("%w (%d tries): %w", ErrTooManyAttempts, failures, err)
			}
			delay = c.retryAfter(err, c.cfg.Retry.Backoff.Delay(failures))
			c.cfg.Logger.Debug("transient error, retrying", "op", op, "try", failures, "delay", delay, "err", err)
		default:
			return err
		}
		if err := retry.Sleep(ctx, delay); err != nil {
			return &ctxError{err}
		}
	}
}

// ended reports why no more requests may be sent: the call's context ended, or InFlight did
// (which aborted the request just tried; retrying would only send more to abort).
func (c *Client) ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.cfg.InFlight != nil {
		return c.cfg.InFlight.Err()
	}
	return nil
}

// once sends one HTTP request with its own deadline and decodes a 2xx body into out.
func (c *Client) once(ctx context.Context, op string, req *http.Request, out any) error {
	auth, err := c.cfg.Credentials.Authorization(ctx)
	if err != nil {
		return &Error{Op: op, HTTPStatus: http.StatusUnauthorized, Code: int(codes.Unauthenticated), Message: "credentials: " + err.Error(), credentials: true}
	}
	base := ctx
	if c.cfg.InFlight != nil {
		// The request lives under InFlight, not ctx: ctx's end does not abort it. No request
		// reads a value from its context, so none is lost; one context a request instead of the
		// three that detaching from ctx takes (context.WithoutCancel, then a cancel wired to
		// InFlight by context.AfterFunc).
		base = c.cfg.InFlight
	}
	rctx, cancel := context.WithTimeout(base, c.cfg.RequestTimeout)
	defer cancel()
	req = req.WithContext(rctx)
	req.Header["Authorization"] = []string{auth}
	req.Header["User-Agent"] = c.userAgent
	req.Header["X-Client-Request-Id"] = []string{newRequestID()}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		// Never echo the URL's secrets: there are none in it, and the header is not part of err.
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	body, err := readBody(resp)
	if err != nil {
		return &BodyError{Op: op, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return parseError(op, resp, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &BodyError{Op: op, Err: err}
	}
	return nil
}

// maxBody bounds an answer read into memory.
const maxBody = 64 << 20

// readBody reads resp's body, at most maxBody bytes of it. When the server gave its length, the
// body is read into one buffer of that size: io.ReadAll starts at 512 bytes and copies at each
// growth, which was a tenth of all that a run allocated (an operation's answer is some hundreds
// of bytes, two a row). A body shorter than its length is an error, as net/http reports it.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxBody {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxBody))
}

// Header values that never change, shared by every request: net/http does not modify a request's
// header (http.RoundTripper), and a one-element slice cannot be appended to in place.
var (
	jsonContentType = []string{"application/json"}
	dataLoggingOff  = []string{"false"}
)

// retryAfter is the wait a Retry-After header of err asks for, capped (retry.Backoff.RetryAfter);
// def without one.
func (c *Client) retryAfter(err error, def time.Duration) time.Duration {
	var ae *Error
	if !errors.As(err, &ae) {
		return def
	}
	return c.cfg.Retry.Backoff.RetryAfter(ae.RetryAfter, def)
}

// newRequestID makes the x-client-request-id of a request: a random UUID version 4 (RFC 9562),
// the form the API documents for support tracing (docs/api.md §2), from crypto/rand.
func newRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand.Read documentation)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10xx
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
