package job_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// testClock is the emulator's clock: real time at a speed the test sets, from a point it may
// move. Operations that take an hour then finish when the test says so.
type testClock struct {
	mu             sync.Mutex
	realAt, fakeAt time.Time
	speed          float64
}

func newTestClock() *testClock {
	now := time.Now()
	return &testClock{realAt: now, fakeAt: now, speed: 1}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fakeAt.Add(time.Duration(float64(time.Since(c.realAt)) * c.speed))
}

// set moves the clock by jump and runs it at speed from now on.
func (c *testClock) set(jump time.Duration, speed float64) {
	now := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.realAt, c.fakeAt, c.speed = time.Now(), now.Add(jump), speed
}

// interruptedRun runs cfg until submitted rows have an operation id, then stops it as a signal
// does.
func interruptedRun(t *testing.T, cfg job.Config, submitted int) {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	j := job.New(cfg)
	done := make(chan error, 1)
	go func() {
		_, err := j.Run(ctx)
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for j.Progress().Submitted < int64(submitted) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d rows submitted", j.Progress().Submitted)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done; !errors.Is(err, job.ErrInterrupted) {
		t.Fatalf("run: %v, want interrupted", err)
	}
}

func TestCancelThenRetryFailed(t *testing.T) {
	clock := newTestClock()
	srv, url := startEmulator(t, emulator.Config{Latency: emulator.Latency{Median: time.Hour}, Now: clock.Now})
	dir := t.TempDir()
	const n = 30
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.SubmitRPS = 40 // the run is stopped before every row is submitted
	interruptedRun(t, cfg, 10)
	before, err := job.ReadStatus(cfg.Checkpoint, 0, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ops := before.Submitted
	if ops == n || before.InDoubt != 0 {
		t.Fatalf("before the cancel: %+v", before)
	}

	sum, err := job.New(cfg).Cancel(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Cancelled != ops || sum.Finished != 0 || sum.Pending != 0 || sum.NotSubmitted != n-ops || sum.InFlight != 0 {
		t.Fatalf("cancel: %+v, want %d cancelled", sum, ops)
	}
	if st := srv.Stats(); st.Cancels != int64(ops) || st.Cancelled != int64(ops) || st.Submissions != int64(ops) {
		t.Fatalf("emulator: %+v", st)
	}
	res := readResults(t, cfg.Output)
	if len(res) != ops {
		t.Fatalf("%d result lines, want %d", len(res), ops)
	}
	for id, r := range res {
		if r.Status != job.StatusFailed || r.Error == nil || r.Error.Kind != job.KindCancelled || r.Error.Code != 1 || r.OperationID == "" {
			t.Fatalf("row %s: %+v %+v", id, r, r.Error)
		}
	}
	after, err := job.ReadStatus(cfg.Checkpoint, 0, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is pending at the API; the rows never submitted stay so.
	if after.Failed != ops || after.Pending != n-ops || after.NotSubmitted != n-ops || after.Submitted != ops {
		t.Fatalf("status after the cancel: %+v", after)
	}
	// A second cancel finds nothing to do and sends nothing.
	if sum, err := job.New(cfg).Cancel(t.Context()); err != nil || sum.Cancelled+sum.Finished+sum.Pending != 0 {
		t.Fatalf("second cancel: %+v %v", sum, err)
	}

	// The operations now take an hour in a second: resume --retry-failed finishes the run.
	clock.set(0, 3600)
	rcfg := cfg
	rcfg.RetryFailed = true
	rsum, err := job.New(rcfg).Resume(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rsum.Succeeded != n || rsum.Failed != 0 {
		t.Fatalf("resume: %+v", rsum)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	if st := srv.Stats(); st.Submissions != int64(n+ops) || st.Cancels != int64(ops) {
		t.Fatalf("emulator after the resume: %+v", st)
	}
}

// An operation done before its cancel arrived keeps its real result.
func TestCancelKeepsFinished(t *testing.T) {
	clock := newTestClock()
	lat, err := emulator.ParseLatency("uniform:1s:1h")
	if err != nil {
		t.Fatal(err)
	}
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Now: clock.Now, Seed: 3})
	dir := t.TempDir()
	const n = 40
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	interruptedRun(t, cfg, n)
	clock.set(30*time.Minute, 1) // about half the operations are done, never polled
	sum, err := job.New(cfg).Cancel(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Cancelled == 0 || sum.Finished == 0 || sum.Cancelled+sum.Finished != n || sum.Pending != 0 {
		t.Fatalf("cancel: %+v", sum)
	}
	if st := srv.Stats(); st.Cancelled != int64(sum.Cancelled) || st.OpsDone != int64(sum.Finished) {
		t.Fatalf("emulator: %+v, cancel %+v", st, sum)
	}
	kept := 0
	for id, r := range readResults(t, cfg.Output) {
		switch {
		case r.Status == job.StatusSucceeded && r.Text != "" && r.Usage != nil:
			kept++
		case r.Status == job.StatusFailed && r.Error.Kind == job.KindCancelled:
		default:
			t.Fatalf("row %s: %+v", id, r)
		}
	}
	if kept != sum.Finished {
		t.Fatalf("%d answers kept, %d operations finished", kept, sum.Finished)
	}
}

func TestCancelLocked(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{Latency: emulator.Latency{Median: time.Hour}})
	dir := t.TempDir()
	in := writeJSONL(t, dir, 5)
	cfg := config(dir, in, url)
	interruptedRun(t, cfg, 5)
	w, _, err := store.Open(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := job.New(cfg).Cancel(t.Context()); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("cancel of a locked checkpoint: %v", err)
	}
}

// A cancel that keeps failing is retried under the policy, then leaves its row pending; a row in
// flight at a crash (no operation id) cannot be cancelled and is left as it is.
func TestCancelFailuresStayPending(t *testing.T) {
	emu := emulator.New(emulator.Config{APIKeys: []string{"test-key"}, Latency: emulator.Latency{Median: time.Hour}})
	var mu sync.Mutex
	broken := map[string]int{} // operation id → cancels answered 503
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/operations/"), ":cancel"); ok {
			mu.Lock()
			_, bad := broken[id]
			if bad || len(broken) < 3 {
				broken[id]++
				mu.Unlock()
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"code":14,"message":"Service is temporarily unavailable","details":[]}`))
				return
			}
			mu.Unlock()
		}
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	const n = 20
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, srv.URL)
	cfg.Tuning.SubmitRPS = 40
	interruptedRun(t, cfg, 8)
	// A crash while row k was being sent: an intent without an operation id.
	before, err := job.ReadStatus(cfg.Checkpoint, 0, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w, st, err := store.Open(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	k := -1
	for i := range st.Len() {
		if st.Phase(i) == store.PhaseNew {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatal("every row was submitted")
	}
	if err := w.Intent(k, 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Tuning.MaxAttempts = 3
	sum, err := job.New(cfg).Cancel(t.Context())
	ops := before.Submitted
	if !errors.Is(err, job.ErrCancelIncomplete) || sum.Pending != 3 || sum.Cancelled != ops-3 || sum.InFlight != 1 || sum.NotSubmitted != n-ops-1 {
		t.Fatalf("cancel: %+v, %v; want 3 pending of %d", sum, err, ops)
	}
	mu.Lock()
	for id, tries := range broken {
		if tries != 3 {
			t.Errorf("operation %s: %d cancels, want the policy's 3 tries", id, tries)
		}
	}
	mu.Unlock()
	after, err := job.ReadStatus(cfg.Checkpoint, 0, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if after.Failed != ops-3 || after.Pending != n-ops+3 || after.InDoubt != 1 {
		t.Fatalf("status after the cancel: %+v", after)
	}
}
