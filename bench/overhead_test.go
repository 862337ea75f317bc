package bench

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkOverhead measures batchgpt's own cost: BATCHGPT_BENCH_ROWS rows (default 1,000,000)
// against an emulator with zero latency and no quota, so the time is spent submitting, polling,
// journaling durably and writing results, not waiting. It runs twice in one command: with the
// result cache (every row a miss, every answer stored) and with --no-cache, so that the cache's
// cost is a ratio of two runs on the same machine at the same time. First it runs the floor
// (floorRun): the least any client must do per row, against the same emulator, so that batchgpt's
// rows a second are a ratio to what this machine allows.
func BenchmarkOverhead(b *testing.B) {
	b.Run("floor", benchFloor)
	for _, mode := range []struct{ name, flag string }{{"no-cache", "--no-cache"}, {"cache-miss", ""}} {
		b.Run(mode.name, func(b *testing.B) { benchOverhead(b, mode.flag) })
	}
}

func benchOverhead(b *testing.B, cacheFlag string) {
	b.StopTimer() // setup (build, emulator) is not measured
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	concurrency := envInt(b, "BATCHGPT_BENCH_CONCURRENCY", 64)
	emu := startEmulator(b, "--latency", "0")
	var last childResult
	var ckptBytes int64
	var emuCPU time.Duration
	for range b.N {
		dir := b.TempDir()
		input := writeInput(b, dir, rows)
		ckpt := filepath.Join(dir, "input.checkpoint.json")
		results := filepath.Join(dir, "input.results.jsonl")
		sumPath := filepath.Join(dir, "summary.json")
		before, cpu0 := emu.mustStats(b), emu.cpu(b)
		b.StartTimer()

		args := []string{"run", "--folder", benchFolder, "--force", "--quiet",
			"--submit-rps", "0", "--submit-per-hour", "0", "--poll-rps", "0",
			"--concurrency", strconv.Itoa(concurrency), "--summary-json", sumPath}
		if cacheFlag != "" {
			args = append(args, cacheFlag)
		}
		last = runChild(b, emu.URL, append(args, input)...)

		b.StopTimer()
		after := emu.mustStats(b)
		emuCPU = emu.cpu(b) - cpu0
		sum := readSummary(b, sumPath)
		if sum.Succeeded != rows || sum.Submissions != int64(rows) {
			b.Fatalf("summary: %d of %d rows succeeded, %d submissions", sum.Succeeded, rows, sum.Submissions)
		}
		if (cacheFlag == "") != (sum.Cache != "") {
			b.Fatalf("cache %q with flag %q", sum.Cache, cacheFlag)
		}
		checkResults(b, results, rows)
		ckptBytes = fileSize(b, ckpt)
		b.Logf("rows %d: wall %v (summary elapsed %v), user %v sys %v, peak RSS %.1f MiB, checkpoint %d B, results %d B",
			rows, last.Wall.Round(time.Millisecond), time.Duration(sum.Elapsed).Round(time.Millisecond),
			last.UserCPU.Round(time.Millisecond), last.SysCPU.Round(time.Millisecond), float64(last.MaxRSSKB)/1024,
			ckptBytes, fileSize(b, results))
		b.Logf("emulator: CPU %v (%.1f µs/row), %d submissions, %d polls (%.2f/row), %d duplicate; batchgpt: %d polls, %d throttled",
			emuCPU.Round(10*time.Millisecond), float64(emuCPU)/float64(time.Microsecond)/float64(rows),
			after.Submissions-before.Submissions, after.Polls-before.Polls,
			float64(after.Polls-before.Polls)/float64(rows), after.DuplicateSubmissions-before.DuplicateSubmissions,
			sum.Polls, sum.Throttled)
	}
	b.ReportMetric(float64(rows)/last.Wall.Seconds(), "rows/s")
	b.ReportMetric(float64(last.MaxRSSKB)/1024, "MiB-peak-RSS")
	b.ReportMetric(float64(ckptBytes)/float64(rows), "ckpt-B/row")
	b.ReportMetric(float64(last.UserCPU+last.SysCPU)/float64(time.Microsecond)/float64(rows), "cpu-µs/row")
	b.ReportMetric(float64(emuCPU)/float64(time.Microsecond)/float64(rows), "emulator-cpu-µs/row")
}
