package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// testKey is the API key of the tests; no error may ever show it.
const testKey = "AQVNtestSECRETkey0123456789"

var submitBody = []byte(`{"modelUri":"gpt://b1gtestfolder/yandexgpt-lite/latest","messages":[{"role":"user","text":"Say hi."}]}`)

// creds hands out headers in turn, moving to the next one on Invalidate; the last one repeats.
type creds struct {
	mu          sync.Mutex
	headers     []string
	err         error
	i           int
	invalidated []string
}

func keyCreds(keys ...string) *creds {
	c := &creds{}
	for _, k := range keys {
		c.headers = append(c.headers, "Api-Key "+k)
	}
	return c
}

func (c *creds) Authorization(context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	return c.headers[min(c.i, len(c.headers)-1)], nil
}

func (c *creds) Invalidate(header string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated = append(c.invalidated, header)
	c.i++
}

func (c *creds) invalidations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.invalidated)
}

// A step answers one request of a script.
type step func(w http.ResponseWriter, r *http.Request)

type recorded struct {
	method, path string
	header       http.Header
	body         []byte
	at           time.Time
}

// script is a loopback server answering the i-th request with the i-th step (the last one
// repeats) and recording every request.
type script struct {
	*httptest.Server
	mu      sync.Mutex
	steps   []step
	got     []recorded
	arrived chan int // the index of each request, as it arrives
}

func newScript(t *testing.T, steps ...step) *script {
	t.Helper()
	s := &script{steps: steps, arrived: make(chan int, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		i := len(s.got)
		s.got = append(s.got, recorded{method: r.Method, path: r.URL.EscapedPath(), header: r.Header.Clone(), body: body, at: time.Now()})
		st := s.steps[min(i, len(s.steps)-1)]
		s.mu.Unlock()
		s.arrived <- i
		st(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *script) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.got...)
}

func respond(status int, body string, header ...string) step {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func okOp(id string) step {
	return respond(200, `{"id":"`+id+`","description":"Async GPT Completion","done":false}`)
}

var (
	gw500   = respond(500, `{"error":{"grpcCode":13,"httpCode":500,"message":"Internal error","httpStatus":"Internal Server Error","details":[]}}`)
	gw503   = respond(503, `{"error":{"grpcCode":14,"httpCode":503,"message":"Service is temporarily unavailable"}}`)
	gw429   = respond(429, `{"error":{"grpcCode":8,"httpCode":429,"message":"ai.textGenerationCompletionSessionsCount.count gauge quota limit exceed: allowed 10 requests"}}`)
	gw400   = respond(400, `{"error":{"grpcCode":3,"httpCode":400,"message":"Error in session: invalid message role 'robot'"}}`)
	gen401  = respond(401, `{"code":16,"message":"Unknown api key","details":[]}`)
	gen403  = respond(403, `{"code":7,"message":"Permission denied","details":[]}`)
	gen404  = respond(404, `{"code":5,"message":"Operation not found","details":[]}`)
	garbage = respond(200, `{"id":"d7qgarbage`)
	noID    = respond(200, `{"done":false}`)
)

// reset drops the connection without an answer, with a TCP RST.
func reset(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusTeapot)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// hold keeps a request open until release is closed (then answers okOp) or the client goes
// away; it reports which on aborted.
func hold(release <-chan struct{}, aborted chan<- bool) step {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			aborted <- false
			okOp("d7qheld00000000000000")(w, r)
		case <-r.Context().Done():
			aborted <- true
		case <-time.After(10 * time.Second):
			aborted <- false // the test failed; do not hang Close
		}
	}
}

// testClient talks to base with fast retries and no connection reuse, so that every try is
// exactly one request on its own connection.
func testClient(t *testing.T, base string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Endpoint: base, OperationsEndpoint: base,
		Credentials:    keyCreds(testKey),
		HTTPClient:     &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		Retry:          retry.Policy{Attempts: 3, Backoff: retry.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}},
		RequestTimeout: 10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), testKey) {
		t.Errorf("error shows the API key: %v", err)
	}
}

func TestCheckEndpoint(t *testing.T) {
	tests := []struct {
		raw string
		ok  bool
	}{
		{"https://llm.api.cloud.yandex.net", true},
		{"https://operation.api.cloud.yandex.net/", true},
		{"https://10.0.0.1:8443/prefix", true},
		{"HTTPS://llm.api.cloud.yandex.net", true},
		{"http://127.0.0.1:8080", true},
		{"http://127.0.0.2:8080", true},
		{"http://[::1]:8080", true},
		{"http://[::1]", true},
		{"http://localhost:8080", true},
		{"http://localhost", true},
		{"http://LOCALHOST:8080", true},
		{"http://llm.api.cloud.yandex.net", false},
		{"http://10.0.0.1:8080", false},
		{"http://0.0.0.0:8080", false},
		{"http://[::]:8080", false},
		{"http://localhost.example.com", false},
		{"http://127.0.0.1.nip.io", false},
		{"ftp://127.0.0.1", false},
		{"ws://localhost", false},
		{"llm.api.cloud.yandex.net", false},
		{"127.0.0.1:8080", false},
		{"https://", false},
		{"", false},
		{"https://exa mple.com", false},
		{"://x", false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, err := CheckEndpoint("endpoint", tt.raw)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckEndpoint(%q) = %v, %v; want ok %v", tt.raw, u, err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "endpoint ") {
				t.Errorf("error %q does not name the setting", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	good := Config{Endpoint: "https://llm.api.cloud.yandex.net", OperationsEndpoint: "https://operation.api.cloud.yandex.net", Credentials: keyCreds(testKey)}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no credentials", func(c *Config) { c.Credentials = nil }, "no credentials"},
		{"plain http endpoint", func(c *Config) { c.Endpoint = "http://llm.api.cloud.yandex.net" }, "endpoint"},
		{"bad operations endpoint", func(c *Config) { c.OperationsEndpoint = "operation.api.cloud.yandex.net" }, "operations endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			c, err := New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.cfg.Retry.Attempts <= 0 || c.cfg.RequestTimeout <= 0 || c.cfg.Retry.Backoff.Base <= 0 || c.cfg.HTTPClient == nil ||
					c.cfg.SubmitPacer == nil || c.cfg.PollPacer == nil || c.cfg.Logger == nil {
					t.Errorf("defaults not set: %+v", c.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

func TestURLs(t *testing.T) {
	s := newScript(t, okOp("d7qaaaaaaaaaaaaaaaaa"))
	c := testClient(t, s.URL+"/", func(cfg *Config) { cfg.OperationsEndpoint = s.URL + "/ops/" })
	if _, err := c.Submit(t.Context(), submitBody, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Operation(t.Context(), "d7q/a b?"); err != nil {
		t.Fatal(err)
	}
	got := s.requests()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	if got[0].method != http.MethodPost || got[0].path != "/foundationModels/v1/completionAsync" {
		t.Errorf("submit went to %s %s", got[0].method, got[0].path)
	}
	if got[1].method != http.MethodGet || got[1].path != "/ops/operations/d7q%2Fa%20b%3F" {
		t.Errorf("operation went to %s %s", got[1].method, got[1].path)
	}
}

func TestRetryAfter(t *testing.T) {
	c := testClient(t, "http://127.0.0.1:1", func(cfg *Config) { cfg.Retry.Backoff.Max = time.Minute })
	const def = 123 * time.Millisecond
	future := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name     string
		err      error
		min, max time.Duration
	}{
		{"not an API error", errors.New("reset"), def, def},
		{"no header", &Error{HTTPStatus: 503}, def, def},
		{"seconds", &Error{HTTPStatus: 503, RetryAfter: "2"}, 2 * time.Second, 2 * time.Second},
		{"fraction", &Error{HTTPStatus: 429, RetryAfter: "0.5"}, 500 * time.Millisecond, 500 * time.Millisecond},
		{"capped", &Error{HTTPStatus: 429, RetryAfter: "86400"}, time.Minute, time.Minute},
		{"zero", &Error{HTTPStatus: 429, RetryAfter: "0"}, def, def},
		{"negative", &Error{HTTPStatus: 429, RetryAfter: "-5"}, def, def},
		{"garbage", &Error{HTTPStatus: 429, RetryAfter: "soon"}, def, def},
		{"http date", &Error{HTTPStatus: 503, RetryAfter: future}, 28 * time.Second, 30 * time.Second},
		{"http date in the past", &Error{HTTPStatus: 503, RetryAfter: past}, def, def},
		{"wrapped", fmt.Errorf("x: %w", &Error{HTTPStatus: 503, RetryAfter: "3"}), 3 * time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.retryAfter(tt.err, def); got < tt.min || got > tt.max {
				t.Errorf("retryAfter = %v, want in [%v, %v]", got, tt.min, tt.max)
			}
		})
	}
}

func TestSubmitRetries(t *testing.T) {
	const id = "d7qsubmit00000000000"
	tests := []struct {
		name        string
		steps       []step
		wantClass   retry.Class // when wantErr
		wantErr     bool
		wantTooMany bool
		wantReqs    int
		wantDoubts  int  // tries that may have created an operation
		wantInDoubt bool // the last one did
	}{
		{name: "ok", steps: []step{okOp(id)}, wantReqs: 1},
		{name: "500 then ok", steps: []step{gw500, okOp(id)}, wantReqs: 2, wantDoubts: 1},
		{name: "503 twice then ok", steps: []step{gw503, gw503, okOp(id)}, wantReqs: 3, wantDoubts: 2},
		{name: "reset then ok", steps: []step{reset, okOp(id)}, wantReqs: 2, wantDoubts: 1},
		{name: "garbage then ok", steps: []step{garbage, okOp(id)}, wantReqs: 2, wantDoubts: 1},
		{name: "html 502 then ok", steps: []step{respond(502, "<html>Bad Gateway</html>"), okOp(id)}, wantReqs: 2, wantDoubts: 1},
		{name: "429 then ok", steps: []step{gw429, okOp(id)}, wantReqs: 2},
		{name: "500 until the limit", steps: []step{gw500}, wantErr: true, wantClass: retry.Transient, wantTooMany: true, wantReqs: 3, wantDoubts: 3, wantInDoubt: true},
		{name: "resets until the limit", steps: []step{reset}, wantErr: true, wantClass: retry.Transient, wantTooMany: true, wantReqs: 3, wantDoubts: 3, wantInDoubt: true},
		{name: "garbage until the limit", steps: []step{garbage}, wantErr: true, wantClass: retry.Transient, wantTooMany: true, wantReqs: 3, wantDoubts: 3, wantInDoubt: true},
		{name: "400 at once", steps: []step{gw400}, wantErr: true, wantClass: retry.Permanent, wantReqs: 1},
		{name: "500 then 400", steps: []step{gw500, gw400}, wantErr: true, wantClass: retry.Permanent, wantReqs: 2, wantDoubts: 1},
		{name: "403 at once", steps: []step{gen403}, wantErr: true, wantClass: retry.Auth, wantReqs: 1},
		{name: "404 at once", steps: []step{gen404}, wantErr: true, wantClass: retry.NotFound, wantReqs: 1},
		{name: "accepted without id", steps: []step{noID}, wantErr: true, wantClass: retry.Transient, wantReqs: 1, wantDoubts: 1, wantInDoubt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScript(t, tt.steps...)
			cr := keyCreds(testKey)
			c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = cr })
			sub, err := c.Submit(t.Context(), submitBody, nil)
			n := len(s.requests())
			if n != tt.wantReqs || sub.Tries != tt.wantReqs {
				t.Errorf("%d requests, %d tries; want %d", n, sub.Tries, tt.wantReqs)
			}
			if sub.Doubts != tt.wantDoubts || sub.InDoubt != tt.wantInDoubt {
				t.Errorf("Doubts = %d, InDoubt = %v; want %d, %v", sub.Doubts, sub.InDoubt, tt.wantDoubts, tt.wantInDoubt)
			}
			if len(cr.invalidations()) != 0 {
				t.Errorf("credentials invalidated: %v", cr.invalidations())
			}
			noSecret(t, err)
			if !tt.wantErr {
				if err != nil || sub.OpID != id {
					t.Fatalf("Submit = %+v, %v; want op %s", sub, err, id)
				}
				return
			}
			if err == nil {
				t.Fatalf("Submit = %+v, want an error", sub)
			}
			if sub.OpID != "" {
				t.Errorf("OpID %q with an error", sub.OpID)
			}
			if got := retry.Classify(err); got != tt.wantClass {
				t.Errorf("retry.Classify(%v) = %v, want %v", err, got, tt.wantClass)
			}
			if errors.Is(err, ErrTooManyAttempts) != tt.wantTooMany {
				t.Errorf("error %v: ErrTooManyAttempts %v, want %v", err, !tt.wantTooMany, tt.wantTooMany)
			}
		})
	}
}

func TestOperationRetries(t *testing.T) {
	const id = "d7qpoll0000000000000"
	done := respond(200, `{"id":"`+id+`","done":true,"response":{"alternatives":[{"message":{"role":"assistant","text":"hi"},"status":"ALTERNATIVE_STATUS_FINAL"}],"usage":{"inputTextTokens":"3","completionTokens":"1","totalTokens":"4"}}}`)
	tests := []struct {
		name      string
		steps     []step
		wantErr   bool
		wantClass retry.Class
		wantReqs  int
	}{
		{name: "done", steps: []step{done}, wantReqs: 1},
		{name: "503 then done", steps: []step{respond(503, `{"code":14,"message":"unavailable"}`), done}, wantReqs: 2},
		{name: "reset then done", steps: []step{reset, done}, wantReqs: 2},
		{name: "429 then done", steps: []step{gw429, done}, wantReqs: 2},
		{name: "404", steps: []step{gen404}, wantErr: true, wantClass: retry.NotFound, wantReqs: 1},
		{name: "no id", steps: []step{respond(200, `{"done":true}`)}, wantErr: true, wantClass: retry.Transient, wantReqs: 1},
		{name: "500 until the limit", steps: []step{respond(500, `{"code":13,"message":"Internal"}`)}, wantErr: true, wantClass: retry.Transient, wantReqs: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScript(t, tt.steps...)
			c := testClient(t, s.URL, nil)
			op, err := c.Operation(t.Context(), id)
			if n := len(s.requests()); n != tt.wantReqs {
				t.Errorf("%d requests, want %d", n, tt.wantReqs)
			}
			noSecret(t, err)
			if !tt.wantErr {
				if err != nil || !op.Done || op.Response.Usage.TotalTokens != 4 {
					t.Fatalf("Operation = %+v, %v", op, err)
				}
				return
			}
			if err == nil || op != nil {
				t.Fatalf("Operation = %+v, %v; want an error", op, err)
			}
			if got := retry.Classify(err); got != tt.wantClass {
				t.Errorf("retry.Classify(%v) = %v, want %v", err, got, tt.wantClass)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ln.Close()
	hook := 0
	c := testClient(t, base, nil)
	sub, err := c.Submit(t.Context(), submitBody, func(bool) error { hook++; return nil })
	if err == nil {
		t.Fatal("Submit to a closed port succeeded")
	}
	if !errors.Is(err, ErrTooManyAttempts) || retry.Classify(err) != retry.Transient {
		t.Errorf("err = %v (%v), want a transient ErrTooManyAttempts", err, retry.Classify(err))
	}
	if sub.Tries != 3 || sub.InDoubt || sub.Doubts != 0 {
		t.Errorf("Submission = %+v, want 3 tries and not in doubt: nothing was ever sent", sub)
	}
	if hook != 1 {
		t.Errorf("beforeSend ran %d times, want 1", hook)
	}
	noSecret(t, err)
}

func TestQuotaDoesNotUseAttempts(t *testing.T) {
	s := newScript(t, gw429, gw429, gw429, gw429, gw429, okOp("d7qquota000000000000"))
	submitPacer, pollPacer := NewPacer(100, 0), NewPacer(100, 0)
	c := testClient(t, s.URL, func(cfg *Config) {
		cfg.Retry.Attempts = 2
		cfg.SubmitPacer, cfg.PollPacer = submitPacer, pollPacer
	})
	sub, err := c.Submit(t.Context(), submitBody, nil)
	if err != nil {
		t.Fatalf("Submit = %v; five 429s must not exhaust 2 attempts", err)
	}
	if sub.Tries != 6 || sub.InDoubt {
		t.Errorf("Submission = %+v, want 6 tries, not in doubt", sub)
	}
	if n := submitPacer.Throttles(); n != 5 {
		t.Errorf("submit pacer saw %d throttles, want 5", n)
	}
	// Five 429s in quick succession are one overload: one cut.
	if r, want := submitPacer.Rate(), 100*cutFactor; !near(r, want) {
		t.Errorf("submit rate %v, want %v", r, want)
	}
	if n, r := pollPacer.Throttles(), pollPacer.Rate(); n != 0 || r != 100 {
		t.Errorf("the poll pacer was slowed by submit 429s: %d throttles, rate %v", n, r)
	}
}

func TestQuotaRetryAfterPausesPacer(t *testing.T) {
	tests := []struct {
		retryAfter string
		want       time.Duration
	}{
		{"7", 7 * time.Second},
		{"3600", 10 * time.Second}, // capped at Retry.Backoff.Max
	}
	for _, tt := range tests {
		t.Run(tt.retryAfter, func(t *testing.T) {
			s := newScript(t, respond(429, `{"code":8,"message":"quota"}`, "Retry-After", tt.retryAfter), okOp("d7qquota000000000000"))
			pacer, clock := fakePacer(0, 0)
			c := testClient(t, s.URL, func(cfg *Config) {
				cfg.PollPacer = pacer
				cfg.Retry.Backoff.Max = 10 * time.Second
			})
			if _, err := c.Operation(t.Context(), "d7qquota000000000000"); err != nil {
				t.Fatal(err)
			}
			if got := clock.slept(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("pacer slept %v, want [%v]", got, tt.want)
			}
		})
	}
}

func TestTransientRetryAfter(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		s := newScript(t, respond(503, `{"code":14,"message":"busy"}`, "Retry-After", "0.3"), okOp("d7qra00000000000000a"))
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Retry.Backoff.Max = 5 * time.Second })
		if _, err := c.Submit(t.Context(), submitBody, nil); err != nil {
			t.Fatal(err)
		}
		got := s.requests()
		if len(got) != 2 {
			t.Fatalf("%d requests, want 2", len(got))
		}
		if gap := got[1].at.Sub(got[0].at); gap < 300*time.Millisecond {
			t.Errorf("retried after %v, before the 0.3 s the server asked for", gap)
		}
	})
	t.Run("capped", func(t *testing.T) {
		s := newScript(t, respond(503, `{"code":14,"message":"busy"}`, "Retry-After", "3600"), okOp("d7qra00000000000000b"))
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Retry.Backoff.Max = 20 * time.Millisecond })
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := c.Submit(ctx, submitBody, nil); err != nil {
			t.Fatalf("Submit = %v; a Retry-After of an hour must be capped at Retry.Backoff.Max", err)
		}
	})
}

func TestAuthRefresh(t *testing.T) {
	t.Run("second key works", func(t *testing.T) {
		s := newScript(t, gen401, okOp("d7qauth0000000000000"))
		cr := keyCreds("stale"+testKey, testKey)
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = cr })
		sub, err := c.Submit(t.Context(), submitBody, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sub.Tries != 2 || sub.InDoubt {
			t.Errorf("Submission = %+v, want 2 tries, not in doubt (a 401 creates nothing)", sub)
		}
		if inv := cr.invalidations(); len(inv) != 1 || inv[0] != "Api-Key stale"+testKey {
			t.Errorf("Invalidate calls %q, want the stale header once", inv)
		}
		got := s.requests()
		if len(got) != 2 || got[0].header.Get("Authorization") != "Api-Key stale"+testKey || got[1].header.Get("Authorization") != "Api-Key "+testKey {
			t.Errorf("%d requests, or not with the stale then the fresh key", len(got))
		}
	})
	t.Run("second 401 is an auth error", func(t *testing.T) {
		s := newScript(t, gen401)
		cr := keyCreds(testKey)
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = cr })
		op, err := c.Operation(t.Context(), "d7qauth0000000000000")
		if err == nil {
			t.Fatalf("Operation = %+v, want an error", op)
		}
		var ae *Error
		if retry.Classify(err) != retry.Auth || !errors.As(err, &ae) || ae.HTTPStatus != 401 || ae.Code != 16 {
			t.Errorf("err = %v, want the 401 auth error", err)
		}
		if n := len(s.requests()); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
		if inv := cr.invalidations(); len(inv) != 1 {
			t.Errorf("Invalidate called %d times, want once", len(inv))
		}
		noSecret(t, err)
	})
	t.Run("403 is not refreshed", func(t *testing.T) {
		s := newScript(t, gen403, okOp("d7qauth0000000000000"))
		cr := keyCreds(testKey)
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = cr })
		if _, err := c.Submit(t.Context(), submitBody, nil); retry.Classify(err) != retry.Auth {
			t.Errorf("Submit = %v, want an auth error", err)
		}
		if n, inv := len(s.requests()), cr.invalidations(); n != 1 || len(inv) != 0 {
			t.Errorf("%d requests, %d invalidations; want 1, 0", n, len(inv))
		}
	})
	t.Run("credentials fail", func(t *testing.T) {
		s := newScript(t, okOp("d7qauth0000000000000"))
		cr := &creds{err: errors.New("token exchange refused")}
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = cr })
		sub, err := c.Submit(t.Context(), submitBody, nil)
		if retry.Classify(err) != retry.Auth || !strings.Contains(fmt.Sprint(err), "token exchange refused") {
			t.Errorf("Submit = %v, want an auth error saying why", err)
		}
		if n := len(s.requests()); n != 0 || sub.InDoubt {
			t.Errorf("%d requests sent, in doubt %v; want none", n, sub.InDoubt)
		}
	})
}

func TestBeforeSend(t *testing.T) {
	t.Run("before the first request, and before each one after a doubtful try", func(t *testing.T) {
		s := newScript(t, gw500, reset, gw429, okOp("d7qhook0000000000000"))
		var calls []string
		c := testClient(t, s.URL, nil)
		sub, err := c.Submit(t.Context(), submitBody, func(afterDoubt bool) error {
			calls = append(calls, fmt.Sprintf("%d:%v", len(s.requests()), afterDoubt))
			return nil
		})
		if err != nil || sub.OpID == "" {
			t.Fatalf("Submit = %+v, %v", sub, err)
		}
		// Before request 1; after the 500 and the reset (each may have created an operation),
		// not after the 429 (rejected before anything is created).
		if want := "0:false 1:true 2:true"; strings.Join(calls, " ") != want || sub.Tries != 4 || sub.Doubts != 2 || sub.InDoubt {
			t.Errorf("beforeSend calls %q over %+v; want %q, 4 tries, 2 doubts, the last told", calls, sub, want)
		}
	})
	t.Run("the last doubtful try is left to the caller", func(t *testing.T) {
		s := newScript(t, gw500, reset)
		calls := 0
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Retry.Attempts = 2 })
		sub, err := c.Submit(t.Context(), submitBody, func(bool) error { calls++; return nil })
		if err == nil || calls != 2 || sub.Doubts != 2 || !sub.InDoubt {
			t.Errorf("Submit = %+v, %v, hook ran %d times; want an error, 2 doubts, the last not told", sub, err, calls)
		}
	})
	t.Run("its error after a doubtful try stops the call, the doubt untold", func(t *testing.T) {
		s := newScript(t, gw500, okOp("d7qhook0000000000000"))
		journalFull := errors.New("journal: no space left on device")
		c := testClient(t, s.URL, nil)
		sub, err := c.Submit(t.Context(), submitBody, func(afterDoubt bool) error {
			if afterDoubt {
				return journalFull
			}
			return nil
		})
		if !errors.Is(err, journalFull) || len(s.requests()) != 1 || !sub.InDoubt || sub.Doubts != 1 {
			t.Errorf("Submit = %+v, %v after %d requests; want the hook's error, 1 request, in doubt", sub, err, len(s.requests()))
		}
	})
	t.Run("runs once over 401 and 429 retries", func(t *testing.T) {
		s := newScript(t, gw429, gen401, okOp("d7qhook0000000000000"))
		calls := 0
		c := testClient(t, s.URL, func(cfg *Config) { cfg.Credentials = keyCreds("old", testKey) })
		if _, err := c.Submit(t.Context(), submitBody, func(bool) error { calls++; return nil }); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Errorf("beforeSend ran %d times, want 1", calls)
		}
	})
	t.Run("its error stops the call", func(t *testing.T) {
		s := newScript(t, okOp("d7qhook0000000000000"))
		journalFull := errors.New("journal: no space left on device")
		c := testClient(t, s.URL, nil)
		sub, err := c.Submit(t.Context(), submitBody, func(bool) error { return journalFull })
		if !errors.Is(err, journalFull) || retry.Classify(err) != retry.Local {
			t.Errorf("Submit = %v (%v), want the hook's error classified local", err, retry.Classify(err))
		}
		if n := len(s.requests()); n != 0 || sub.Tries != 0 || sub.InDoubt {
			t.Errorf("%d requests, Submission %+v; want nothing sent", n, sub)
		}
	})
	t.Run("not run while the pacer holds the request", func(t *testing.T) {
		s := newScript(t, okOp("d7qhook0000000000000"))
		pacer := NewPacer(0, 1)
		c := testClient(t, s.URL, func(cfg *Config) { cfg.SubmitPacer = pacer })
		if _, err := c.Submit(t.Context(), submitBody, nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		calls := 0
		sub, err := c.Submit(ctx, submitBody, func(bool) error { calls++; return nil })
		if retry.Classify(err) != retry.Canceled || calls != 0 || sub.Tries != 0 {
			t.Errorf("Submit = %+v, %v (%v), hook ran %d times; want canceled before the hook", sub, err, retry.Classify(err), calls)
		}
		if n := len(s.requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

func TestInFlight(t *testing.T) {
	t.Run("cancelling the call lets a sent request finish", func(t *testing.T) {
		release, aborted := make(chan struct{}), make(chan bool, 1)
		s := newScript(t, hold(release, aborted))
		c := testClient(t, s.URL, func(cfg *Config) { cfg.InFlight = context.Background() })
		ctx, cancel := context.WithCancel(t.Context())
		type result struct {
			sub Submission
			err error
		}
		res := make(chan result, 1)
		go func() {
			sub, err := c.Submit(ctx, submitBody, nil)
			res <- result{sub, err}
		}()
		<-s.arrived
		cancel()
		close(release)
		r := <-res
		if r.err != nil || r.sub.OpID == "" {
			t.Errorf("Submit = %+v, %v; want the accepted operation", r.sub, r.err)
		}
		if <-aborted {
			t.Error("the request was aborted")
		}
	})
	t.Run("without InFlight cancelling the call aborts the request", func(t *testing.T) {
		release, aborted := make(chan struct{}), make(chan bool, 1)
		defer close(release)
		s := newScript(t, hold(release, aborted))
		c := testClient(t, s.URL, nil)
		ctx, cancel := context.WithCancel(t.Context())
		res := make(chan error, 1)
		var sub Submission
		go func() {
			var err error
			sub, err = c.Submit(ctx, submitBody, nil)
			res <- err
		}()
		<-s.arrived
		cancel()
		err := <-res
		if retry.Classify(err) != retry.Canceled || !errors.Is(err, context.Canceled) {
			t.Errorf("Submit = %v (%v), want canceled", err, retry.Classify(err))
		}
		if !sub.InDoubt {
			t.Error("a request aborted on the wire is not in doubt")
		}
		if !<-aborted {
			t.Error("the server did not see the request aborted")
		}
	})
	t.Run("cancelling InFlight aborts the request", func(t *testing.T) {
		release, aborted := make(chan struct{}), make(chan bool, 3)
		defer close(release)
		s := newScript(t, hold(release, aborted))
		inFlight, kill := context.WithCancel(context.Background())
		defer kill()
		c := testClient(t, s.URL, func(cfg *Config) { cfg.InFlight = inFlight })
		res := make(chan error, 1)
		var sub Submission
		go func() {
			var err error
			sub, err = c.Submit(t.Context(), submitBody, nil)
			res <- err
		}()
		<-s.arrived
		kill()
		err := <-res
		if retry.Classify(err) != retry.Canceled {
			t.Errorf("Submit = %v (%v), want canceled", err, retry.Classify(err))
		}
		if !sub.InDoubt || sub.Tries != 1 {
			t.Errorf("Submission = %+v, want 1 try, in doubt", sub)
		}
		if !<-aborted {
			t.Error("the server did not see the request aborted")
		}
		if n := len(s.requests()); n != 1 {
			t.Errorf("%d requests after the kill, want 1: nothing may be sent once InFlight ended", n)
		}
	})
	t.Run("cancelling the call stops a retry wait", func(t *testing.T) {
		s := newScript(t, respond(503, `{"code":14,"message":"busy"}`, "Retry-After", "3600"))
		c := testClient(t, s.URL, func(cfg *Config) {
			cfg.InFlight = context.Background()
			cfg.Retry.Backoff.Max = time.Hour
		})
		ctx, cancel := context.WithCancel(t.Context())
		res := make(chan error, 1)
		go func() {
			_, err := c.Submit(ctx, submitBody, nil)
			res <- err
		}()
		<-s.arrived
		cancel()
		if err := <-res; retry.Classify(err) != retry.Canceled {
			t.Errorf("Submit = %v (%v), want canceled", err, retry.Classify(err))
		}
		if n := len(s.requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestHeaders(t *testing.T) {
	s := newScript(t, okOp("d7qheaders0000000000"))
	c := testClient(t, s.URL, func(cfg *Config) {
		cfg.Folder = "b1gtestfolder"
		cfg.NoDataLogging = true
		cfg.UserAgent = "batchgpt-test/1"
	})
	if _, err := c.Submit(t.Context(), submitBody, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Operation(t.Context(), "d7qheaders0000000000"); err != nil {
		t.Fatal(err)
	}
	plain := testClient(t, s.URL, nil)
	if _, err := plain.Submit(t.Context(), submitBody, nil); err != nil {
		t.Fatal(err)
	}
	got := s.requests()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3", len(got))
	}
	sub, get, sub2 := got[0], got[1], got[2]
	want := map[string]string{
		"Authorization":          "Api-Key " + testKey,
		"X-Folder-Id":            "b1gtestfolder",
		"X-Data-Logging-Enabled": "false",
		"Content-Type":           "application/json",
		"User-Agent":             "batchgpt-test/1",
	}
	for k, v := range want {
		if g := sub.header.Get(k); g != v {
			t.Errorf("submit header %s = %q, want %q", k, g, v)
		}
	}
	if string(sub.body) != string(submitBody) {
		t.Errorf("submit body %s, want it unchanged", sub.body)
	}
	if g := get.header.Get("Authorization"); g != "Api-Key "+testKey {
		t.Errorf("operation Authorization = %q", g)
	}
	for _, r := range got {
		if id := r.header.Get("X-Client-Request-Id"); !uuidRE.MatchString(id) {
			t.Errorf("%s x-client-request-id %q is not a UUID", r.method, id)
		}
	}
	if sub.header.Get("X-Client-Request-Id") == sub2.header.Get("X-Client-Request-Id") {
		t.Error("two calls sent the same x-client-request-id")
	}
	for _, k := range []string{"X-Folder-Id", "X-Data-Logging-Enabled"} {
		if _, ok := sub2.header[k]; ok {
			t.Errorf("header %s sent though not configured", k)
		}
	}
	if ua := sub2.header.Get("User-Agent"); ua != "batchgpt" {
		t.Errorf("default User-Agent %q", ua)
	}
}
