package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkResume builds a checkpoint of BATCHGPT_BENCH_ROWS rows (default 1,000,000) with at
// least half of them resolved, by interrupting (SIGINT, the documented way to stop a run) a run
// against a zero-latency emulator once `batchgpt status --json` shows half resolved. It then
// times `batchgpt resume`: until the emulator sees its first request (the checkpoint and input
// are loaded and work has restarted), and until every row is resolved.
func BenchmarkResume(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	conc := strconv.Itoa(envInt(b, "BATCHGPT_BENCH_CONCURRENCY", 64))
	emu := startEmulator(b, "--latency", "0")
	var first time.Duration
	var res childResult
	var left status
	for range b.N {
		dir := b.TempDir()
		input := writeInput(b, dir, rows)
		ckpt := filepath.Join(dir, "input.checkpoint.json")
		results := filepath.Join(dir, "input.results.jsonl")
		sumPath := filepath.Join(dir, "summary.json")
		tuning := []string{"--quiet", "--submit-rps", "0", "--submit-per-hour", "0", "--poll-rps", "0", "--concurrency", conc}

		start := emu.mustStats(b)
		build := startChild(b, emu.URL, append(append([]string{"run", "--folder", benchFolder, "--force"}, tuning...), input)...)
		exited := make(chan childResult, 1)
		go func() { exited <- build.wait() }()
		// Half done, as the emulator counts the operations it answered done (not `status`, which
		// at ten million rows would load the whole checkpoint each time).
		var seen int64
	watch:
		for {
			select {
			case r := <-exited:
				b.Fatalf("the run finished before it could be interrupted at half (%d of %d operations done seen last): %v\n%s",
					seen, rows, r.Err, r.Stderr)
			case <-time.After(20 * time.Millisecond): // often enough for the tiny runs of bench-smoke
			}
			st := emu.mustStats(b)
			if seen = st.OpsDone - start.OpsDone; seen >= int64(rows)/2 {
				_ = build.cmd.Process.Signal(os.Interrupt)
				break watch
			}
		}
		r := <-exited
		var err error
		if left, err = readStatus(ckpt); err != nil {
			b.Fatal(err)
		}
		b.Logf("checkpoint built in %v (peak RSS %.1f MiB) and interrupted (%v): %d rows, %d resolved, %d submitted and pending, %d never submitted, %d in doubt; checkpoint %d B",
			r.Wall.Round(time.Millisecond), float64(r.MaxRSSKB)/1024, r.Err, left.Rows, left.Succeeded+left.Failed, left.Submitted-left.Succeeded-left.Failed,
			left.Rows-left.Submitted, left.InDoubt, fileSize(b, ckpt))

		before := emu.mustStats(b)
		b.StartTimer()
		c := startChild(b, emu.URL, append(append([]string{"resume"}, tuning...), "--summary-json", sumPath, ckpt)...)
		firstCh := make(chan time.Duration, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			defer close(firstCh)
			for ctx.Err() == nil {
				st, err := emu.stats(ctx)
				if err == nil && st.Submissions+st.Polls > before.Submissions+before.Polls {
					firstCh <- time.Since(c.start)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		res = c.wait()
		b.StopTimer()
		cancel()
		first = <-firstCh
		if res.Err != nil {
			b.Fatalf("resume: %v\n%s", res.Err, res.Stderr)
		}
		after := emu.mustStats(b)
		sum := readSummary(b, sumPath)
		checkResults(b, results, rows)
		b.Logf("resume: first request after %v, done after %v (user %v sys %v, peak RSS %.1f MiB); %d submissions, %d polls; emulator saw %d duplicate submissions",
			first.Round(time.Millisecond), res.Wall.Round(time.Millisecond), res.UserCPU.Round(time.Millisecond),
			res.SysCPU.Round(time.Millisecond), float64(res.MaxRSSKB)/1024, sum.Submissions, sum.Polls,
			after.DuplicateSubmissions-before.DuplicateSubmissions)
	}
	b.ReportMetric(float64(first)/float64(time.Millisecond), "ms-to-first-request")
	b.ReportMetric(res.Wall.Seconds(), "resume-total-s")
	b.ReportMetric(float64(left.Rows-left.Succeeded-left.Failed), "rows-left")
	b.ReportMetric(float64(res.MaxRSSKB)/1024, "MiB-peak-RSS")
}
