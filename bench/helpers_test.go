package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	benchFolder = "b1gbench0000000000000"
	benchKey    = "bench-api-key"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds batchgpt once per test process and returns its path.
func binary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "batchgpt-bench-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "batchgpt")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/batchgpt/batchgpt").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// emulator is a `batchgpt emulator` child process.
type emulator struct {
	URL    string
	cmd    *exec.Cmd
	stderr *tailBuffer
	waited chan struct{}
}

// startEmulator starts the emulator on a free loopback port; it is stopped at cleanup.
func startEmulator(b *testing.B, args ...string) *emulator {
	b.Helper()
	e, url := launchEmulator(b, append([]string{"--addr", "127.0.0.1:0", "--api-key", benchKey}, args...), "emulator listening on ")
	e.URL = url
	return e
}

// launchEmulator starts `batchgpt emulator args...` and returns it with what follows prefix on
// the first line of its output that starts with it (an address); it is stopped at cleanup.
func launchEmulator(b *testing.B, args []string, prefix string) (*emulator, string) {
	b.Helper()
	cmd := exec.Command(binary(b), append([]string{"emulator"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	e := &emulator{cmd: cmd, stderr: newTailBuffer(16 << 10), waited: make(chan struct{})}
	cmd.Stderr = e.stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start emulator: %v", err)
	}
	found := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		for {
			line, err := br.ReadString('\n')
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				found <- strings.TrimSpace(rest)
				break
			}
			if err != nil {
				return
			}
		}
		_, _ = io.Copy(io.Discard, br)
	}()
	go func() { _ = cmd.Wait(); close(e.waited) }()
	b.Cleanup(e.stop)
	select {
	case rest := <-found:
		return e, rest
	case <-e.waited:
		b.Fatalf("emulator: exited before it said %q; stderr: %s", prefix, e.stderr)
	case <-time.After(30 * time.Second):
		b.Fatalf("emulator did not start in 30s; stderr: %s", e.stderr)
	}
	return nil, ""
}

func (e *emulator) stop() {
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.waited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.waited
	}
}

// emuStats is the part of GET /emulator/stats the benchmarks use.
type emuStats struct {
	Submissions          int64 `json:"submissions"`
	DuplicateSubmissions int64 `json:"duplicateSubmissions"`
	Polls                int64 `json:"polls"`
	NotFound             int64 `json:"notFound"`
	Rejected429          int64 `json:"rejected429"`
	OpsCreated           int64 `json:"opsCreated"`
	OpsDone              int64 `json:"opsDone"`
	OpsFailed            int64 `json:"opsFailed"`
}

var statsClient = &http.Client{Timeout: 10 * time.Second}

func (e *emulator) stats(ctx context.Context) (emuStats, error) {
	var st emuStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/emulator/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := statsClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("emulator stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("emulator stats: %w", err)
	}
	return st, nil
}

func (e *emulator) mustStats(b *testing.B) emuStats {
	b.Helper()
	st, err := e.stats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// opTimes reads an operation back from the emulator: when it was created and when it finished
// (modifiedAt of a done operation is its completion time, in nanoseconds).
func (e *emulator) opTimes(ctx context.Context, id string) (created, done time.Time, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/operations/"+id, nil)
	if err != nil {
		return created, done, err
	}
	req.Header.Set("Authorization", "Api-Key "+benchKey)
	resp, err := statsClient.Do(req)
	if err != nil {
		return created, done, err
	}
	defer resp.Body.Close()
	var op struct {
		Done       bool   `json:"done"`
		CreatedAt  string `json:"createdAt"`
		ModifiedAt string `json:"modifiedAt"`
	}
	if resp.StatusCode != http.StatusOK {
		return created, done, fmt.Errorf("operation %s: %s", id, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&op); err != nil {
		return created, done, fmt.Errorf("operation %s: %w", id, err)
	}
	if !op.Done {
		return created, done, fmt.Errorf("operation %s: not done", id)
	}
	if created, err = time.Parse(time.RFC3339Nano, op.CreatedAt); err != nil {
		return created, done, err
	}
	done, err = time.Parse(time.RFC3339Nano, op.ModifiedAt)
	return created, done, err
}

// writeInput writes n JSONL rows with unique prompts (the emulator counts repeated content as
// duplicate submissions) and returns the prompts' file path.
func writeInput(b *testing.B, dir string, n int) string {
	b.Helper()
	path := filepath.Join(dir, "input.jsonl")
	writeRows(b, path, n, prompt)
	return path
}

// writeRows writes n JSONL rows to path, row i with id r<i> (seven digits) and the prompt
// promptOf(i), which must need no escaping in JSON.
func writeRows(b *testing.B, path string, n int, promptOf func(int) string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		fmt.Fprintf(w, `{"id":"r%07d","prompt":"%s"}`+"\n", i, promptOf(i))
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// prompt is the prompt of row i as writeInput writes it.
func prompt(i int) string {
	return fmt.Sprintf("Benchmark prompt %d: answer in one short sentence.", i)
}

// childEnv is the environment of a batchgpt child: the emulator's URL and an API key, and none of
// the caller's own credentials or endpoints.
func childEnv(url string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "YC_") || strings.HasPrefix(kv, "BATCHGPT_")
	})
	return append(env, "BATCHGPT_ENDPOINT="+url, "BATCHGPT_OPERATIONS_ENDPOINT="+url, "YC_API_KEY="+benchKey)
}

// child is a started batchgpt process.
type child struct {
	cmd    *exec.Cmd
	start  time.Time
	stderr *tailBuffer
	hwm    chan int64 // the child's last VmHWM, once it has exited
}

// childResult is how a child process ended.
type childResult struct {
	Wall time.Duration
	// MaxRSSKB is the peak resident set of the child alone, KiB: its VmHWM, read from /proc every
	// 20 ms while it runs. Not ru_maxrss: Linux carries the parent's peak into a child started by
	// vfork and exec (os/exec does), so once this test process has held a 10M-row checkpoint or
	// results file, ru_maxrss reports that for every later child. (Where /proc is missing,
	// ru_maxrss.)
	MaxRSSKB int64
	UserCPU  time.Duration
	SysCPU   time.Duration
	Err      error
	Stderr   string
}

func startChild(b *testing.B, url string, args ...string) *child {
	b.Helper()
	cmd := exec.Command(binary(b), args...)
	// A result cache of its own, never the user's: a benchmark that shares one passes --cache.
	cmd.Env = append(childEnv(url), "XDG_CACHE_HOME="+b.TempDir())
	if dir := os.Getenv("BATCHGPT_BENCH_PROFILE_DIR"); dir != "" {
		// Where the time of a child goes, without a rebuild (see BATCHGPT_CPUPROFILE).
		cmd.Env = append(cmd.Env, "BATCHGPT_CPUPROFILE="+filepath.Join(dir, fmt.Sprintf("%s-%s.prof", args[0], time.Now().Format("150405.000"))))
	}
	if dir := os.Getenv("BATCHGPT_BENCH_HEAPPROFILE_DIR"); dir != "" {
		// What a child holds while it runs (see BATCHGPT_HEAPPROFILE).
		cmd.Env = append(cmd.Env, "BATCHGPT_HEAPPROFILE="+filepath.Join(dir, fmt.Sprintf("%s-%s.heap", args[0], time.Now().Format("150405.000"))))
	}
	c := &child{cmd: cmd, stderr: newTailBuffer(32 << 10), hwm: make(chan int64, 1)}
	cmd.Stdout = c.stderr
	cmd.Stderr = c.stderr
	c.start = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("start batchgpt: %v", err)
	}
	go c.sampleHWM()
	return c
}

// sampleHWM reads the child's VmHWM (monotonic) every 20 ms until it has exited, and sends the
// last value read (0 if none).
func (c *child) sampleHWM() {
	status := fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid)
	var last int64
	for {
		b, err := os.ReadFile(status)
		if err != nil {
			break
		}
		_, after, ok := strings.Cut(string(b), "VmHWM:")
		if !ok {
			break // a zombie: its memory is gone
		}
		if f := strings.Fields(after); len(f) > 0 {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				last = max(last, kb)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.hwm <- last
}

func (c *child) wait() childResult {
	err := c.cmd.Wait()
	r := childResult{Wall: time.Since(c.start), Err: err, Stderr: c.stderr.String()}
	r.MaxRSSKB = <-c.hwm
	if ps := c.cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			if r.MaxRSSKB == 0 {
				r.MaxRSSKB = ru.Maxrss
			}
			r.UserCPU = time.Duration(ru.Utime.Nano())
			r.SysCPU = time.Duration(ru.Stime.Nano())
		}
	}
	return r
}

// runChild runs batchgpt to completion and fails the benchmark if it did not succeed.
func runChild(b *testing.B, url string, args ...string) childResult {
	b.Helper()
	r := startChild(b, url, args...).wait()
	if r.Err != nil {
		b.Fatalf("batchgpt %s: %v\n%s", strings.Join(args, " "), r.Err, r.Stderr)
	}
	return r
}

// summary is the part of --summary-json the benchmarks use.
type summary struct {
	Rows        int    `json:"rows"`
	Succeeded   int    `json:"succeeded"`
	Failed      int    `json:"failed"`
	Pending     int    `json:"pending"`
	Submissions int64  `json:"submissions"`
	Polls       int64  `json:"polls"`
	Throttled   int64  `json:"throttled"`
	Elapsed     int64  `json:"elapsed_ns"`
	CacheHits   int64  `json:"cache_hits"`
	Cache       string `json:"cache"`
}

func readSummary(b *testing.B, path string) summary {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(data, &s); err != nil {
		b.Fatalf("summary %s: %v", path, err)
	}
	return s
}

// status is the part of `batchgpt status --json` the benchmarks use.
type status struct {
	Rows      int `json:"rows"`
	Submitted int `json:"submitted"`
	Pending   int `json:"pending"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	InDoubt   int `json:"in_doubt"`
}

func readStatus(checkpoint string) (status, error) {
	var st status
	out, err := exec.Command(binPath, "status", "--json", checkpoint).Output()
	if err != nil {
		return st, fmt.Errorf("batchgpt status: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("batchgpt status: %w", err)
	}
	return st, nil
}

// resultLine is the part of a results line the benchmarks check.
type resultLine struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	OperationID string `json:"operation_id"`
}

// checkResults verifies that the results file has exactly one succeeded line per row and returns
// the operation ids by row id.
func checkResults(b *testing.B, path string, rows int) map[string]string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ops := make(map[string]string, rows)
	br := bufio.NewReaderSize(f, 1<<20)
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			n++
			var r resultLine
			if jerr := json.Unmarshal(line, &r); jerr != nil {
				b.Fatalf("results line %d: %v", n, jerr)
			}
			if r.Status != "succeeded" {
				b.Fatalf("results line %d: row %s %s", n, r.ID, r.Status)
			}
			if _, dup := ops[r.ID]; dup {
				b.Fatalf("results line %d: row %s written twice", n, r.ID)
			}
			ops[r.ID] = r.OperationID
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if len(ops) != rows {
		b.Fatalf("results: %d rows, want %d", len(ops), rows)
	}
	return ops
}

// tailResults follows a growing results file and records when each operation id's line
// appeared, until ctx ends; the returned func stops it and returns the times.
func tailResults(ctx context.Context, path string, every time.Duration) func() map[string]time.Time {
	ctx, cancel := context.WithCancel(ctx)
	seen := make(map[string]time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var f *os.File
		var partial []byte
		buf := make([]byte, 1<<20)
		t := time.NewTicker(every)
		defer t.Stop()
		read := func() {
			if f == nil {
				var err error
				if f, err = os.Open(path); err != nil {
					f = nil
					return
				}
			}
			now := time.Now()
			for {
				n, err := f.Read(buf)
				partial = append(partial, buf[:n]...)
				if n == 0 || err != nil {
					break
				}
			}
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				var r resultLine
				if json.Unmarshal(partial[:i], &r) == nil && r.OperationID != "" {
					if _, ok := seen[r.OperationID]; !ok {
						seen[r.OperationID] = now
					}
				}
				partial = partial[i+1:]
			}
			partial = append([]byte(nil), partial...)
		}
		for {
			select {
			case <-ctx.Done():
				read()
				if f != nil {
					f.Close()
				}
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() map[string]time.Time {
		cancel()
		<-done
		return seen
	}
}

// percentile of sorted durations, q in [0,1].
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func fileSize(b *testing.B, path string) int64 {
	b.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}
