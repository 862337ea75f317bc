package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
)

// BenchmarkCacheHits runs BATCHGPT_BENCH_ROWS rows (default 1,000,000) that the result cache
// answers every one of: the time goes to validation, lookups, the journal and the results file.
// The cache is filled beforehand, outside the measurement, with the keys batchgpt computes.
func BenchmarkCacheHits(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	emu := startEmulator(b, "--latency", "0")
	var last childResult
	var cacheBytes int64
	for range b.N {
		dir := b.TempDir()
		input := writeInput(b, dir, rows)
		cacheFile := filepath.Join(dir, "cache.db")
		fillCache(b, cacheFile, input, emu.URL, rows)
		if fi, err := os.Stat(cacheFile); err == nil {
			cacheBytes = fi.Size()
		}
		sumPath := filepath.Join(dir, "summary.json")
		before := emu.mustStats(b)
		b.StartTimer()
		last = runChild(b, emu.URL, "run", "--folder", benchFolder, "--force", "--quiet", "--cache", cacheFile,
			"--submit-rps", "0", "--submit-per-hour", "0", "--poll-rps", "0", "--summary-json", sumPath, input)
		b.StopTimer()
		after := emu.mustStats(b)
		sum := readSummary(b, sumPath)
		if sum.Succeeded != rows || sum.CacheHits != int64(rows) || after.Submissions != before.Submissions {
			b.Fatalf("summary %+v; emulator saw %d submissions: want every row from the cache", sum, after.Submissions-before.Submissions)
		}
		ops := checkResults(b, filepath.Join(dir, "input.results.jsonl"), rows)
		if got := ops["r0000007"]; got != "d7q1000000007" {
			b.Fatalf("row r0000007 has operation %q, want the cached d7q1000000007", got)
		}
		b.Logf("rows %d, all cache hits: wall %v, user %v sys %v, peak RSS %.1f MiB; cache %d B (%.0f B/entry)",
			rows, last.Wall.Round(time.Millisecond), last.UserCPU.Round(time.Millisecond), last.SysCPU.Round(time.Millisecond),
			float64(last.MaxRSSKB)/1024, cacheBytes, float64(cacheBytes)/float64(rows))
	}
	b.ReportMetric(float64(rows)/last.Wall.Seconds(), "rows/s")
	b.ReportMetric(float64(last.MaxRSSKB)/1024, "MiB-peak-RSS")
	b.ReportMetric(float64(cacheBytes)/float64(rows), "cache-B/entry")
}

// fillCache stores an answer for every row of input, under the key batchgpt computes for a run
// against url: the request body as sent, scoped by the endpoint.
func fillCache(b *testing.B, path, input, url string, rows int) {
	b.Helper()
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rd, err := batch.Open(input, batch.Options{Folder: benchFolder, Model: "yandexgpt-lite"})
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	scope := strings.TrimRight(url, "/")
	now := time.Now().UTC()
	var entries []cache.Entry
	flush := func() {
		if err := c.Put(context.Background(), entries); err != nil {
			b.Fatal(err)
		}
		entries = entries[:0]
	}
	for {
		row, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		entries = append(entries, cache.Entry{Key: cache.Key(batch.RequestKey(scope, row.Body)),
			ModelURI: batch.ModelOf(row.Body), Text: benchAnswer(row.Index), AlternativeStatus: "ALTERNATIVE_STATUS_FINAL",
			InputTokens: 12, CompletionTokens: 9, TotalTokens: 21, ModelVersion: "23.10.2024",
			OperationID: "d7q" + strconv.Itoa(1_000_000_000+row.Index), CachedAt: now})
		if len(entries) == 1000 {
			flush()
		}
	}
	flush()
}

// benchAnswer is the cached answer of row i.
func benchAnswer(i int) string {
	return "Cached answer to benchmark prompt " + strconv.Itoa(i) + ": one short sentence."
}
