package bench

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkNightly measures the second night of the nightly pattern: the same `batchgpt run`
// over a file re-exported with one row in 20 changed. The first night (not measured) submits
// every one of BATCHGPT_BENCH_ROWS rows (default 1,000,000) and fills the result cache. The
// second retires it (its answers checked against the cache, its checkpoint and results archived)
// and then answers every unchanged row from the cache and submits the changed ones. Its peak RSS
// is the memory target's at that size, its rows per second the throughput of the pattern the
// cache was built for.
func BenchmarkNightly(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	concurrency := envInt(b, "BATCHGPT_BENCH_CONCURRENCY", 64)
	emu := startEmulator(b, "--latency", "0")
	changed := (rows + 12) / 20 // rows 7, 27, 47...
	var night1, night2 childResult
	for range b.N {
		dir := b.TempDir()
		input := writeInput(b, dir, rows)
		cacheFile := filepath.Join(dir, "cache.db")
		sumPath := filepath.Join(dir, "summary.json")
		args := []string{"run", "--folder", benchFolder, "--quiet", "--cache", cacheFile,
			"--submit-rps", "0", "--submit-per-hour", "0", "--poll-rps", "0",
			"--concurrency", strconv.Itoa(concurrency), "--summary-json", sumPath, input}
		night1 = runChild(b, emu.URL, args...)
		if sum := readSummary(b, sumPath); sum.Submissions != int64(rows) {
			b.Fatalf("night 1: %d submissions, want %d", sum.Submissions, rows)
		}
		reexport(b, input, rows)
		before := emu.mustStats(b)
		b.StartTimer()
		night2 = runChild(b, emu.URL, args...)
		b.StopTimer()
		after := emu.mustStats(b)
		sum := readSummary(b, sumPath)
		if sum.Succeeded != rows || sum.Submissions != int64(changed) || sum.CacheHits != int64(rows-changed) ||
			after.Submissions-before.Submissions != int64(changed) {
			b.Fatalf("night 2: summary %+v, emulator saw %d submissions; want the %d changed rows submitted, the rest from the cache",
				sum, after.Submissions-before.Submissions, changed)
		}
		checkResults(b, filepath.Join(dir, "input.results.jsonl"), rows)
		archived, _ := filepath.Glob(filepath.Join(dir, "input.*.checkpoint.json"))
		if len(archived) != 1 {
			b.Fatalf("archived checkpoints %v: want the first night's", archived)
		}
		b.Logf("rows %d, %d changed: night 1 wall %v peak RSS %.1f MiB; night 2 wall %v, user %v sys %v, peak RSS %.1f MiB",
			rows, changed, night1.Wall.Round(time.Millisecond), float64(night1.MaxRSSKB)/1024,
			night2.Wall.Round(time.Millisecond), night2.UserCPU.Round(time.Millisecond), night2.SysCPU.Round(time.Millisecond),
			float64(night2.MaxRSSKB)/1024)
	}
	b.ReportMetric(float64(rows)/night2.Wall.Seconds(), "rows/s")
	b.ReportMetric(float64(night2.MaxRSSKB)/1024, "MiB-peak-RSS")
	b.ReportMetric(float64(night1.MaxRSSKB)/1024, "MiB-peak-RSS-night1")
}

// reexport rewrites input as the next night's export: every 20th row, from row 7, asks something
// else.
func reexport(b *testing.B, input string, rows int) {
	b.Helper()
	writeRows(b, input, rows, func(i int) string {
		if i%20 == 7 {
			return fmt.Sprintf("Benchmark prompt %d, changed tonight: answer in one short sentence.", i)
		}
		return prompt(i)
	})
}
