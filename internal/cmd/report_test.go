package cmd

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/report"
)

// In process, under the race detector: the metrics of a resume, written while it runs, name
// the input its checkpoint records (read from the job while it runs), and the file's exit code
// is the code main would exit with, for an interrupted run (130) and for a finished one (0).
func TestMetricsOfResume(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var rows strings.Builder
	for i := range 20 {
		rows.WriteString(`{"id":"r` + string(rune('a'+i)) + `","prompt":"hello"}` + "\n")
	}
	if err := os.WriteFile(in, []byte(rows.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := filepath.Join(dir, "m.prom")
	run := func(ctx context.Context, args ...string) int {
		app := App(io.Discard, NewConsole(io.Discard), context.Background())
		args = append([]string{"batchgpt", args[0], "--emulator", "--no-cache", "--quiet", "--progress-interval", "5ms",
			"--metrics-file", prom, "--submit-rps", "0"}, args[1:]...)
		return ExitCode(app.RunContext(ctx, args), NewConsole(io.Discard))
	}
	exitCodeIn := func() string {
		m, err := report.OpenMetricsFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := m.PreviousInput()
		b, _ := os.ReadFile(prom)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, `batchgpt_last_exit_code{input="`+got+`"} `); ok {
				return got + " " + v
			}
		}
		return got + " none"
	}

	// The run is stopped (the first signal) once its metrics show up: its operations take a minute.
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(prom); err == nil {
				stop()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer stop()
	if code := run(ctx, "run", "--emulator-latency", "fixed:1m", in); code != ExitInterrupted {
		t.Fatalf("run: exit %d, want %d", code, ExitInterrupted)
	}
	if got, want := exitCodeIn(), in+" 130"; got != want {
		t.Errorf("after the run: %q, want %q", got, want)
	}
	if code := run(context.Background(), "resume", "--emulator-latency", "fixed:20ms", filepath.Join(dir, "in.checkpoint.json")); code != ExitOK {
		t.Fatalf("resume: exit %d", code)
	}
	if got, want := exitCodeIn(), in+" 0"; got != want {
		t.Errorf("after the resume: %q, want %q", got, want)
	}
}
