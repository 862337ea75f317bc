package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// emuClock is the emulator's clock: real time at a speed the test sets, from a point it may move.
// Operations that take an hour then finish when the test says so.
type emuClock struct {
	mu             sync.Mutex
	realAt, fakeAt time.Time
	speed          float64
}

func newEmuClock() *emuClock {
	now := time.Now()
	return &emuClock{realAt: now, fakeAt: now, speed: 1}
}

func (c *emuClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fakeAt.Add(time.Duration(float64(time.Since(c.realAt)) * c.speed))
}

// set moves the clock by jump and runs it at speed from now on.
func (c *emuClock) set(jump time.Duration, speed float64) {
	now := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.realAt, c.fakeAt, c.speed = time.Now(), now.Add(jump), speed
}

// stoppedRun runs the binary over n rows until every row has an operation at the emulator, checks
// that a cancel meanwhile is refused (the run holds the lock: exit 5), and stops the run with
// SIGTERM. It returns the checkpoint.
func stoppedRun(t *testing.T, srv *emulator.Server, url, dir string, n int) string {
	t.Helper()
	in := writeInput(t, dir, n)
	cp := filepath.Join(dir, "in.checkpoint.json")
	cmd := withKey(command(url, "run", "--submit-rps", "200", in), testKey)
	stderr := start(t, cmd)
	deadline := time.Now().Add(30 * time.Second)
	for srv.Stats().OpsCreated < int64(n) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("only %d operations created\n%s", srv.Stats().OpsCreated, stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	locked := runCmd(t, withKey(command(url, "cancel", cp), testKey))
	if locked.code != 5 || !strings.Contains(locked.stderr, "another batchgpt process is using") ||
		!strings.Contains(locked.stderr, "stop it first") || srv.Stats().Cancels != 0 {
		t.Errorf("cancel while the run holds the lock: exit %d, %d cancels\n%s", locked.code, srv.Stats().Cancels, locked.stderr)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("run after SIGTERM: %v\n%s", err, stderr)
	}
	return cp
}

func status(t *testing.T, url, cp string) job.Status {
	t.Helper()
	res := runCmd(t, command(url, "status", "--json", cp))
	var s job.Status
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil || res.code != 0 {
		t.Fatalf("status: exit %d, %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	return s
}

func readResultLines(t *testing.T, path string) []job.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []job.Result
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r job.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("results line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestCancelPending: a run stopped with operations pending; cancel cancels every one at the API,
// the rows fail with kind cancelled, nothing is pending; resume --retry-failed submits them again
// and finishes.
func TestCancelPending(t *testing.T) {
	clock := newEmuClock()
	srv, url := startEmulator(t, emulator.Config{Latency: emulator.Latency{Median: time.Hour}, Now: clock.Now})
	dir := t.TempDir()
	const n = 40
	cp := stoppedRun(t, srv, url, dir, n)
	if s := status(t, url, cp); s.Submitted != n || s.Pending != n || s.InDoubt != 0 {
		t.Fatalf("status before the cancel: %+v", s)
	}

	res := runCmd(t, withKey(command(url, "cancel", cp), testKey))
	if res.code != 0 || !strings.Contains(res.stdout, "cancelled 40, finished before the cancel 0, left pending 0\n") ||
		!strings.Contains(res.stdout, "batchgpt resume --retry-failed "+cp) {
		t.Fatalf("cancel: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if st := srv.Stats(); st.Cancels != n || st.Cancelled != n || st.Submissions != n {
		t.Fatalf("emulator after the cancel: %+v", st)
	}
	lines := readResultLines(t, filepath.Join(dir, "in.results.jsonl"))
	for _, r := range lines {
		if r.Status != job.StatusFailed || r.Error == nil || r.Error.Kind != "cancelled" || r.Error.Code != 1 || r.OperationID == "" {
			t.Fatalf("row %s: %+v %+v", r.ID, r, r.Error)
		}
	}
	if s := status(t, url, cp); len(lines) != n || s.Pending != 0 || s.Failed != n || s.Succeeded != 0 {
		t.Fatalf("%d result lines; status after the cancel: %+v", len(lines), s)
	}

	// The operations now take an hour in a second.
	clock.set(0, 3600)
	if r := runCmd(t, withKey(command(url, "resume", "--retry-failed", cp), testKey)); r.code != 0 {
		t.Fatalf("resume --retry-failed: exit %d\n%s", r.code, r.stderr)
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)
	if st := srv.Stats(); st.Submissions != 2*n || st.Cancels != n {
		t.Fatalf("emulator after the resume: %+v", st)
	}
	if s := status(t, url, cp); s.Pending != 0 || s.Succeeded != n {
		t.Fatalf("status after the resume: %+v", s)
	}
}

// TestCancelKeepsFinished: operations done before their cancel arrived keep their real result.
func TestCancelKeepsFinished(t *testing.T) {
	clock := newEmuClock()
	lat, _ := emulator.ParseLatency("uniform:1s:1h")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Now: clock.Now, Seed: 5})
	dir := t.TempDir()
	const n = 40
	cp := stoppedRun(t, srv, url, dir, n)
	clock.set(30*time.Minute, 1) // about half are done, never polled
	res := runCmd(t, withKey(command(url, "cancel", cp), testKey))
	st := srv.Stats()
	if res.code != 0 || st.Cancelled == 0 || st.Cancelled == n || st.Cancels != n {
		t.Fatalf("cancel: exit %d, emulator %+v\n%s%s", res.code, st, res.stdout, res.stderr)
	}
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	kept := 0
	for _, r := range readResultLines(t, filepath.Join(dir, "in.results.jsonl")) {
		var i int
		if _, err := fmt.Sscanf(r.ID, "r%05d", &i); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Status == job.StatusSucceeded && r.Text == emulator.Answer(uri, []emulator.Message{{Role: "user", Text: prompt(i)}}):
			kept++
		case r.Status == job.StatusFailed && r.Error.Kind == "cancelled":
		default:
			t.Fatalf("row %s: %+v", r.ID, r)
		}
	}
	if int64(kept) != n-st.Cancelled || !strings.Contains(res.stdout, "finished before the cancel "+strconv.Itoa(kept)+", left pending 0") {
		t.Fatalf("%d answers kept, %d operations cancelled\n%s", kept, st.Cancelled, res.stdout)
	}
}
