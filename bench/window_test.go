package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/auth"
	emu "github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/poller"
)

// BenchmarkInDoubtWindow measures the window in which a kill -9 leaves a row in doubt: from the
// moment the API's answer (the operation id) arrives to the moment its S record is fsynced. It
// runs batchgpt's job in this process (the only way to see that moment, through
// job.Config.JournalLag) against the emulator on loopback, with BATCHGPT_BENCH_WINDOW_ROWS rows
// (default 20,000) submitted as fast as the emulator answers by BATCHGPT_BENCH_CONCURRENCY
// workers (default 64), while results are written as operations finish (uniform 0–200 ms): the
// journal's group commit is as busy as it gets. It reports the percentiles of the window.
func BenchmarkInDoubtWindow(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_WINDOW_ROWS", 20_000)
	conc := envInt(b, "BATCHGPT_BENCH_CONCURRENCY", 64)
	lat, err := emu.ParseLatency("uniform:0s:200ms")
	if err != nil {
		b.Fatal(err)
	}
	srv := emu.New(emu.Config{Latency: lat, APIKeys: []string{benchKey}})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var all []time.Duration
	for range b.N {
		dir := b.TempDir()
		input := filepath.Join(dir, "input.jsonl")
		f, err := os.Create(input)
		if err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			fmt.Fprintf(f, "{\"id\":\"r%d\",\"prompt\":\"window row %d\"}\n", i, i)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		lags := make([]time.Duration, 0, rows)
		sched := poller.NewSchedule()
		sched.Initial, sched.MaxGap = 20*time.Millisecond, 200*time.Millisecond
		cfg := job.Config{
			Input: input, Checkpoint: filepath.Join(dir, "input.checkpoint.json"), Output: filepath.Join(dir, "input.results.jsonl"),
			Settings:    job.Settings{Input: batch.Options{Folder: benchFolder, Model: "yandexgpt-lite"}, Endpoint: url, OperationsEndpoint: url},
			Tuning:      job.Tuning{Concurrency: conc, MaxAttempts: 8, RequestTimeout: time.Minute, Schedule: sched},
			Credentials: auth.APIKey(benchKey),
			JournalLag: func(d time.Duration) {
				mu.Lock()
				lags = append(lags, d)
				mu.Unlock()
			},
		}
		b.StartTimer()
		sum, err := job.New(cfg).Run(context.Background())
		b.StopTimer()
		if err != nil || sum.Succeeded != rows {
			b.Fatalf("run: %v (%+v)", err, sum)
		}
		mu.Lock()
		if len(lags) != rows {
			b.Fatalf("%d windows measured for %d rows", len(lags), rows)
		}
		all = append(all, lags...)
		b.Logf("%d rows in %v (%.0f rows/s), %d submissions", rows, sum.Elapsed.Round(time.Millisecond),
			float64(rows)/sum.Elapsed.Seconds(), sum.Submissions)
		mu.Unlock()
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p99.9", 0.999}, {"max", 1}} {
		b.ReportMetric(float64(pct(q.p).Microseconds()), "µs-"+q.name)
	}
	b.Logf("answer → S record fsynced, %d operation ids: p50 %v p90 %v p99 %v p99.9 %v max %v (GOMAXPROCS %d)",
		len(all), pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1), runtime.GOMAXPROCS(0))
}
