package bench

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkBatchMode runs BATCHGPT_BENCH_ROWS rows (default 1,000,000) through --backend batch
// against `batchgpt emulator --grpc-addr` (batches of 10,000 rows, no waiting): the wall time of
// the whole run (validation, the dataset's upload, validation, the task, the download and the
// join of its results, every row's line) and the child's peak RSS. Every row is checked to have
// exactly one succeeded line.
func BenchmarkBatchMode(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	target := startBatchEmulator(b, "--batch-size", "10000", "--batch-rows-per-second", "0")
	var res childResult
	for range b.N {
		dir := b.TempDir()
		input := writeInput(b, dir, rows)
		results := filepath.Join(dir, "input.results.jsonl")
		b.StartTimer()
		res = runChild(b, "http://127.0.0.1:9", "run", "--backend", "batch", "--folder", benchFolder, "--batch-endpoint", target,
			"--batch-poll", "100ms", "--no-cache", "--quiet", input)
		b.StopTimer()
		checkResults(b, results, rows)
	}
	b.ReportMetric(float64(res.MaxRSSKB)/1024, "peak-RSS-MiB")
	b.ReportMetric(res.Wall.Seconds(), "wall-s")
	b.ReportMetric(float64(rows)/res.Wall.Seconds(), "rows/s")
	b.Logf("%d rows through batch mode in %v, peak RSS %.1f MiB, CPU %v user %v sys",
		rows, res.Wall.Round(time.Millisecond), float64(res.MaxRSSKB)/1024, res.UserCPU.Round(time.Millisecond), res.SysCPU.Round(time.Millisecond))
}

// startBatchEmulator starts `batchgpt emulator` with its batch mode on free loopback ports and
// returns the gRPC target; it is stopped at cleanup.
func startBatchEmulator(b *testing.B, args ...string) string {
	b.Helper()
	_, rest := launchEmulator(b, append([]string{"--addr", "127.0.0.1:0", "--api-key", benchKey,
		"--grpc-addr", "127.0.0.1:0", "--storage-addr", "127.0.0.1:0"}, args...), "batch-mode emulator: gRPC on ")
	target, _, _ := strings.Cut(rest, ",")
	return target
}
