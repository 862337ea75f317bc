package batchapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
	"github.com/batchgpt/batchgpt/internal/retry"
)

const (
	testFolder = "b1gemulatorfolder000"
	testKey    = "test-key-AQVNsecret"
	testModel  = "gpt://" + testFolder + "/qwen3-32b/latest"
)

// env is a batch-mode emulator on loopback and a client of it.
type env struct {
	srv   *batchmode.Server
	c     *Client
	http  *recorder
	tmp   string
	creds auth.Source
}

// start starts the emulator with cfg and dials it; adjust, if not nil, changes the client's
// Config before Dial.
func start(t *testing.T, cfg batchmode.Config, adjust func(*Config)) *env {
	t.Helper()
	if cfg.Authorize == nil {
		cfg.Authorize = emulator.New(emulator.Config{APIKeys: []string{testKey}}).Authorize
	}
	srv := batchmode.New(cfg)
	target, _, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	e := &env{srv: srv, http: &recorder{base: http.DefaultTransport}, tmp: t.TempDir(), creds: auth.APIKey(testKey)}
	c := Config{
		Endpoint: target, Insecure: true, Credentials: e.creds, FolderID: testFolder,
		HTTPClient: &http.Client{Transport: e.http}, TempDir: e.tmp,
		Retry: retry.Policy{Attempts: 8, Backoff: retry.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}},
	}
	if adjust != nil {
		adjust(&c)
	}
	e.c, err = Dial(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.c.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder is the transport of the presigned requests: it records them, checks that none
// carries an Authorization header, and answers 503 itself to those fail picks.
type recorder struct {
	base http.RoundTripper
	fail func(*http.Request) bool

	mu       sync.Mutex
	requests []string // "PUT /upload/<dataset>/<part>"
	withAuth int
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Method+" "+req.URL.Path)
	if req.Header.Get("Authorization") != "" {
		r.withAuth++
	}
	fail := r.fail != nil && r.fail(req)
	r.mu.Unlock()
	if fail {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Body: http.NoBody, Header: http.Header{}, Request: req}, nil
	}
	return r.base.RoundTrip(req)
}

// count is how many requests had method and a path starting with prefix.
func (r *recorder) count(method, prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.requests {
		if strings.HasPrefix(s, method+" "+prefix) {
			n++
		}
	}
	return n
}

// waitTask polls the task until cond holds.
func (e *env) waitTask(t *testing.T, id string, cond func(*Task) bool) *Task {
	t.Helper()
	var last *Task
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		tk, err := e.c.DescribeTask(testCtx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if last = tk; cond(tk) {
			return tk
		}
	}
	t.Fatalf("task %s: condition not reached; last %+v", id, last)
	return nil
}

func ended(tk *Task) bool { return tk.Ended() }

// run starts a task over a READY dataset and waits until it ends.
func (e *env) run(t *testing.T, dsID string) *Task {
	t.Helper()
	taskID, _, err := e.c.StartTask(testCtx(t), TaskSpec{ModelURI: testModel, SourceDatasetID: dsID})
	if err != nil {
		t.Fatal(err)
	}
	return e.waitTask(t, taskID, ended)
}

// source is a credentials source for tests: it answers stale until invalidated with it, then
// fresh; it counts the invalidations.
type source struct {
	mu          sync.Mutex
	stale       string
	fresh       string
	invalidated int
}

func (s *source) Authorization(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalidated > 0 && s.fresh != "" {
		return s.fresh, nil
	}
	return s.stale, nil
}

func (s *source) Invalidate(header string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if header == s.stale {
		s.invalidated++
	}
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.invalidated
}

// bearerOnly accepts the one IAM token given; its refusal quotes the header it refuses.
func bearerOnly(token string) func(string) error {
	return func(h string) error {
		if h == "Bearer "+token {
			return nil
		}
		return fmt.Errorf("%q is invalid or expired", h)
	}
}
