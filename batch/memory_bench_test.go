package batch_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
)

// memChildEnv names the pass a child process of BenchmarkValidateMemory runs, and its input:
// "<pass>:<path>".
const memChildEnv = "BATCHGPT_VALIDATE_MEM_CHILD"

// memPasses are the passes over an input whose memory BenchmarkValidateMemory measures: what a
// run with --no-dedup calls, what a run calls, and what a resume calls.
var memPasses = []string{"validate", "validate-dedup", "scan-dedup"}

// BenchmarkValidateMemory writes an input of BATCHGPT_BENCH_ROWS rows (default 10,000,000; ids
// are 36-character UUIDs, one row in ten repeats the prompt of an earlier row) and runs each
// pass over it in a child process of its own, under the collector setting a run uses, so that
// the peak RSS reported (VmHWM, or ru_maxrss where there is no /proc) is the pass's alone. B/row is the peak RSS above that of a
// child that reads no input, divided by the rows; heap-peak-MiB is the largest live heap the
// child saw (runtime/metrics, sampled every 5 ms).
func BenchmarkValidateMemory(b *testing.B) {
	rows := 10_000_000
	if s := os.Getenv("BATCHGPT_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("BATCHGPT_BENCH_ROWS=%q", s)
		}
		rows = n
	}
	path := filepath.Join(b.TempDir(), "in.jsonl")
	size := memInput(b, path, rows)
	base := memChild(b, "none", path)
	b.Logf("%d rows, %d bytes (%.0f B/row); a child that reads nothing: %.1f MiB peak RSS", rows, size, float64(size)/float64(rows), mib(base.rss))
	for _, pass := range memPasses {
		b.Run(pass, func(b *testing.B) {
			var r memResult
			for b.Loop() {
				r = memChild(b, pass, path)
			}
			b.ReportMetric(mib(r.rss), "MiB-peak-RSS")
			b.ReportMetric(float64(r.rss-base.rss)/float64(rows), "B/row")
			b.ReportMetric(mib(r.heap), "heap-peak-MiB")
			b.ReportMetric(r.wall.Seconds(), "s")
			b.Logf("%s: %d rows in %v, peak RSS %.1f MiB, peak live heap %.1f MiB", pass, rows, r.wall.Round(time.Millisecond), mib(r.rss), mib(r.heap))
		})
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// memInput writes rows JSONL rows to path and returns its size.
func memInput(b *testing.B, path string, rows int) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range rows {
		p := i
		if i%10 == 9 {
			p = i / 2 // the same request as an earlier row
		}
		// A UUID-shaped id, unique per row.
		x := uint64(i)*0x9E3779B97F4A7C15 + 1
		fmt.Fprintf(w, "{\"id\":\"%08x-%04x-4%03x-a%03x-%012x\",\"prompt\":\"Translate to English: the quick brown fox jumps over the lazy dog #%d\"}\n",
			uint32(x>>32), uint16(x>>16), uint16(x)&0xfff, i&0xfff, uint64(i)&0xffffffffffff, p)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

type memResult struct {
	rss, heap int64 // bytes
	wall      time.Duration
}

// memChild runs pass over path in a child process (this test binary, TestValidateMemoryChild).
func memChild(b *testing.B, pass, path string) memResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestValidateMemoryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), memChildEnv+"="+pass+":"+path)
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("child %s: %v\n%s", pass, err, out)
	}
	r := memResult{wall: wall}
	var hwm int64
	if _, err := fmt.Sscanf(lineOf(string(out), "heap "), "heap %d hwm %d", &r.heap, &hwm); err != nil {
		b.Fatalf("child %s: %v\n%s", pass, err, out)
	}
	r.rss = hwm << 10
	if hwm == 0 {
		// ru_maxrss also counts the parent's resident set at the time of the fork: only a
		// figure above that is the child's.
		ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if !ok {
			b.Skip("no peak RSS on this system")
		}
		r.rss = ru.Maxrss << 10 // KiB on Linux
	}
	return r
}

// lineOf returns the first line of s that starts with prefix.
func lineOf(s, prefix string) string {
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSuffix(line, "\n")
		}
	}
	return ""
}

// peakRSS returns the peak resident set of this process in KiB (VmHWM, Linux), 0 if unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kb int64
	fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(lineOf(string(b), "VmHWM:"), "VmHWM:")), "%d", &kb)
	return kb
}

// TestValidateMemoryChild is the child process of BenchmarkValidateMemory; it does nothing
// otherwise.
func TestValidateMemoryChild(t *testing.T) {
	arg := os.Getenv(memChildEnv)
	if arg == "" {
		t.Skip("run by BenchmarkValidateMemory")
	}
	var pass, path string
	for i := range arg {
		if arg[i] == ':' {
			pass, path = arg[:i], arg[i+1:]
			break
		}
	}
	// What a run does while it validates (internal/job: validating).
	debug.SetGCPercent(25)
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			if v := int64(s[0].Value.Uint64()); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var err error
	var dups *batch.Duplicates
	switch pass {
	case "none":
	case "validate":
		_, err = batch.Validate(path, defaults, 50)
	case "validate-dedup":
		_, dups, err = batch.ValidateDedup(path, defaults, 50, "scope")
	case "scan-dedup":
		_, dups, err = batch.ScanDedup(path, defaults, "scope")
	default:
		t.Fatalf("unknown pass %q", pass)
	}
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("followers %d\nheap %d hwm %d\n", dups.Count(), peak.Load(), peakRSS())
}
