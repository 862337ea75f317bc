package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The quota workload: the real folder quota of 10 submissions/s, time-scaled 20x so that 20,000
// rows take minutes instead of hours, with operations whose latency is lognormal around 2 s.
const (
	quotaRPS        = 200
	quotaLatency    = "lognormal:2s:0.6:20s"
	quotaLatencyCap = 20 * time.Second
	quotaDefRows    = 20_000
)

// quotaOutcome is what one run of the quota workload measured.
type quotaOutcome struct {
	rows         int
	wall         time.Duration
	maxLatency   time.Duration    // largest creation-to-done time among the run's operations
	tightIdeal   time.Duration    // max over operations in creation order of i/quota + latency
	created      [4]time.Duration // when 25, 50, 75 and 100% of the operations had been created
	stats        emuStats
	summary      summary
	delays       []time.Duration // done (emulator) to line visible in the results file, sorted
	submitSpread time.Duration   // first to last operation creation
}

func (q quotaOutcome) ideal() time.Duration {
	return time.Duration(float64(q.rows)/quotaRPS*float64(time.Second)) + q.maxLatency
}

// quotaResult keeps BenchmarkQuota's wall time for BenchmarkBaseline's ratio.
var quotaResult struct {
	sync.Mutex
	rows int
	wall time.Duration
}

// BenchmarkQuota runs BATCHGPT_BENCH_QUOTA_ROWS rows (default 20,000) against an emulator that
// enforces 200 submissions/s and completes operations after lognormal(2s, 0.6) latency capped at
// 20 s; batchgpt is told the same quota. It compares the wall time with the ideal one, the time
// to push every row through the quota plus the slowest operation.
func BenchmarkQuota(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_QUOTA_ROWS", quotaDefRows)
	var q quotaOutcome
	for range b.N {
		q = runQuota(b, rows)
	}
	quotaResult.Lock()
	quotaResult.rows, quotaResult.wall = rows, q.wall
	quotaResult.Unlock()

	ideal := q.ideal()
	b.Logf("rows %d: wall %v, ideal %v (= %d rows / %d/s + slowest operation %v; with the distribution's cap %v it would be %v), "+
		"tight ideal %v (max over operations in creation order of i/%d/s + own latency), operations created over %v (25/50/75/100%%: %v)",
		rows, q.wall.Round(time.Millisecond), ideal.Round(time.Millisecond), rows, quotaRPS, q.maxLatency.Round(time.Millisecond),
		quotaLatencyCap, (ideal - q.maxLatency + quotaLatencyCap).Round(time.Millisecond), q.tightIdeal.Round(time.Millisecond),
		quotaRPS, q.submitSpread.Round(time.Millisecond), q.created)
	b.Logf("emulator: %d submissions (%d accepted, %d rejected 429), %d polls, %d duplicate; batchgpt: %d submissions, %d polls, %d throttled",
		q.stats.Submissions, q.stats.OpsCreated, q.stats.Rejected429, q.stats.Polls, q.stats.DuplicateSubmissions,
		q.summary.Submissions, q.summary.Polls, q.summary.Throttled)
	if len(q.delays) > 0 {
		b.Logf("done to written (%d rows): median %v, p90 %v, p99 %v, max %v", len(q.delays),
			percentile(q.delays, 0.5).Round(time.Millisecond), percentile(q.delays, 0.9).Round(time.Millisecond),
			percentile(q.delays, 0.99).Round(time.Millisecond), q.delays[len(q.delays)-1].Round(time.Millisecond))
	}
	b.ReportMetric(q.wall.Seconds(), "wall-s")
	b.ReportMetric(ideal.Seconds(), "ideal-s")
	b.ReportMetric(q.wall.Seconds()/ideal.Seconds(), "wall/ideal")
	b.ReportMetric(float64(q.stats.Rejected429), "429s")
	b.ReportMetric(100*float64(q.stats.Rejected429)/float64(max(q.stats.Submissions, 1)), "429-%-of-submits")
	b.ReportMetric(float64(q.stats.Polls)/float64(rows), "polls/op")
	b.ReportMetric(float64(percentile(q.delays, 0.5))/float64(time.Millisecond), "ms-done-to-written-p50")
}

// runQuota runs batchgpt on the quota workload against a fresh emulator; only the child's run is
// timed.
func runQuota(b *testing.B, rows int) quotaOutcome {
	b.Helper()
	emu := startEmulator(b, "--latency", quotaLatency, "--submit-rps", strconv.Itoa(quotaRPS))
	defer emu.stop()
	dir := b.TempDir()
	input := writeInput(b, dir, rows)
	results := filepath.Join(dir, "input.results.jsonl")
	sumPath := filepath.Join(dir, "summary.json")

	stopTail := tailResults(context.Background(), results, 5*time.Millisecond)
	b.StartTimer()
	r := runChild(b, emu.URL, "run", "--folder", benchFolder, "--force", "--quiet",
		"--submit-rps", strconv.Itoa(quotaRPS), "--submit-per-hour", "0", "--poll-rps", "1000",
		"--summary-json", sumPath, input)
	b.StopTimer()
	seen := stopTail()

	q := quotaOutcome{rows: rows, wall: r.Wall, stats: emu.mustStats(b), summary: readSummary(b, sumPath)}
	ops := checkResults(b, results, rows)
	ids := make([]string, 0, len(ops))
	for _, id := range ops {
		ids = append(ids, id)
	}
	times := fetchOpTimes(b, emu, ids)
	q.fillTimes(times, seen)
	return q
}

type opTime struct {
	id            string
	created, done time.Time
}

// fetchOpTimes reads every operation back from the emulator (after the measured run, and after
// its stats were taken) for its creation and completion times.
func fetchOpTimes(b *testing.B, emu *emulator, ids []string) []opTime {
	b.Helper()
	out := make([]opTime, len(ids))
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || firstErr.Load() != nil {
					return
				}
				c, d, err := emu.opTimes(context.Background(), ids[i])
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				out[i] = opTime{id: ids[i], created: c, done: d}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		b.Fatal(*p)
	}
	return out
}

// fillTimes derives latencies, the tight ideal and done-to-written delays.
func (q *quotaOutcome) fillTimes(times []opTime, written map[string]time.Time) {
	slices.SortFunc(times, func(a, b opTime) int { return a.created.Compare(b.created) })
	for i, t := range times {
		lat := t.done.Sub(t.created)
		q.maxLatency = max(q.maxLatency, lat)
		q.tightIdeal = max(q.tightIdeal, time.Duration(float64(i+1)/quotaRPS*float64(time.Second))+lat)
		if w, ok := written[t.id]; ok {
			q.delays = append(q.delays, max(w.Sub(t.done), 0))
		}
	}
	if len(times) > 0 {
		q.submitSpread = times[len(times)-1].created.Sub(times[0].created)
		for k := range q.created {
			q.created[k] = times[(k+1)*(len(times)-1)/4].created.Sub(times[0].created)
		}
	}
	slices.Sort(q.delays)
}

// BenchmarkBaseline does the quota workload the way the vendor's page shows it: one curl process
// per request, BATCHGPT_BENCH_BASELINE_PARALLEL (default 16) at a time, retrying a 429 after 1 s
// as a naive script would; once every row is submitted, it polls every pending operation with
// curl once a second until all are done, appending each finished operation to a results file.
// It reports its wall time against batchgpt's on the same workload (BenchmarkQuota's, or a run
// of its own when BenchmarkQuota did not run in this process).
func BenchmarkBaseline(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_QUOTA_ROWS", quotaDefRows)
	parallel := envInt(b, "BATCHGPT_BENCH_BASELINE_PARALLEL", 16)
	quotaResult.Lock()
	batchgptWall := quotaResult.wall
	if quotaResult.rows != rows {
		batchgptWall = 0
	}
	quotaResult.Unlock()
	if batchgptWall == 0 {
		b.Log("BenchmarkQuota did not run in this process: running batchgpt on the workload first")
		batchgptWall = runQuota(b, rows).wall
	}

	b.Run("curl", func(b *testing.B) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			b.Skip("curl is not installed")
		}
		benchBaseline(b, rows, parallel, batchgptWall, curlClient{curl})
	})
	b.Run("gohttp", func(b *testing.B) {
		benchBaseline(b, rows, parallel, batchgptWall, &goClient{c: &http.Client{Timeout: time.Minute}})
	})
}

func benchBaseline(b *testing.B, rows, parallel int, batchgptWall time.Duration, cl baselineClient) {
	b.StopTimer()
	var q quotaOutcome
	var bl baselineCounts
	for range b.N {
		emu := startEmulator(b, "--latency", quotaLatency, "--submit-rps", strconv.Itoa(quotaRPS))
		dir := b.TempDir()
		bl = baselineCounts{}
		b.StartTimer()
		start := time.Now()
		written, err := runBaseline(emu.URL, cl, filepath.Join(dir, "results.jsonl"), rows, parallel, &bl)
		wall := time.Since(start)
		b.StopTimer()
		if err != nil {
			emu.stop()
			b.Fatal(err)
		}
		q = quotaOutcome{rows: rows, wall: wall, stats: emu.mustStats(b)}
		ids := make([]string, 0, len(written))
		for id := range written {
			ids = append(ids, id)
		}
		q.fillTimes(fetchOpTimes(b, emu, ids), written)
		emu.stop()
	}
	ratio := q.wall.Seconds() / batchgptWall.Seconds()
	b.Logf("rows %d, %d requests at a time: wall %v vs batchgpt %v (x%.2f), ideal %v; %d requests (%d submits, %d polls), "+
		"emulator: %d submissions, %d rejected 429, %d polls",
		rows, parallel, q.wall.Round(time.Millisecond), batchgptWall.Round(time.Millisecond), ratio, q.ideal().Round(time.Millisecond),
		bl.submits.Load()+bl.polls.Load(), bl.submits.Load(), bl.polls.Load(), q.stats.Submissions, q.stats.Rejected429, q.stats.Polls)
	if len(q.delays) > 0 {
		b.Logf("done to written: median %v, p90 %v, max %v", percentile(q.delays, 0.5).Round(time.Millisecond),
			percentile(q.delays, 0.9).Round(time.Millisecond), q.delays[len(q.delays)-1].Round(time.Millisecond))
	}
	b.ReportMetric(q.wall.Seconds(), "wall-s")
	b.ReportMetric(ratio, "baseline/batchgpt")
	b.ReportMetric(q.wall.Seconds()/q.ideal().Seconds(), "wall/ideal")
	b.ReportMetric(float64(q.stats.Rejected429), "429s")
	b.ReportMetric(100*float64(q.stats.Rejected429)/float64(max(q.stats.Submissions, 1)), "429-%-of-submits")
	b.ReportMetric(float64(q.stats.Polls)/float64(rows), "polls/op")
	b.ReportMetric(float64(percentile(q.delays, 0.5))/float64(time.Millisecond), "ms-done-to-written-p50")
}

type baselineCounts struct {
	submits, polls, throttled atomic.Int64
}

// runBaseline is the naive script. It returns when each operation id's result was written.
func runBaseline(url string, cl baselineClient, results string, rows, parallel int, n *baselineCounts) (map[string]time.Time, error) {
	out, err := os.Create(results)
	if err != nil {
		return nil, err
	}
	defer out.Close()

	// Step 1: submit every row, a curl per request, retrying 429s (and anything else) after 1 s.
	ids := make([]string, rows)
	if err := forEach(rows, parallel, func(i int) error {
		body := fmt.Sprintf(`{"modelUri":"gpt://%s/yandexgpt-lite","completionOptions":{"stream":false},"messages":[{"role":"user","text":%q}]}`,
			benchFolder, prompt(i))
		for try := 1; ; try++ {
			n.submits.Add(1)
			code, resp, err := cl.submit(url, []byte(body))
			if err == nil && code == 200 {
				var op struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(resp, &op); err != nil || op.ID == "" {
					return fmt.Errorf("row %d: bad operation %q", i, resp)
				}
				ids[i] = op.ID
				return nil
			}
			if code == 429 {
				n.throttled.Add(1)
			} else if try >= 10 {
				return fmt.Errorf("row %d: submit: code %d, %v: %s", i, code, err, resp)
			}
			time.Sleep(time.Second)
		}
	}); err != nil {
		return nil, err
	}

	// Step 2: poll every pending operation once a second until all are done.
	written := make(map[string]time.Time, rows)
	var mu sync.Mutex
	pending := ids
	for len(pending) > 0 {
		sweep := time.Now()
		still := make([]bool, len(pending))
		err := forEach(len(pending), parallel, func(i int) error {
			n.polls.Add(1)
			code, resp, err := cl.get(url, pending[i])
			if err != nil || code != 200 {
				still[i] = true // try again on the next sweep
				return nil
			}
			var op struct {
				Done bool `json:"done"`
			}
			if json.Unmarshal(resp, &op) != nil || !op.Done {
				still[i] = true
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if _, err := out.Write(append(resp, '\n')); err != nil {
				return err
			}
			written[pending[i]] = time.Now()
			return nil
		})
		if err != nil {
			return nil, err
		}
		var next []string
		for i, s := range still {
			if s {
				next = append(next, pending[i])
			}
		}
		pending = next
		if len(pending) > 0 {
			time.Sleep(time.Until(sweep.Add(time.Second)))
		}
	}
	return written, out.Sync()
}

// forEach calls f(0..n-1) with at most parallel calls at once, stopping at the first error.
func forEach(n, parallel int, f func(int) error) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Go(func() {
			for firstErr.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// baselineClient sends the naive script's requests and returns the HTTP status and body.
type baselineClient interface {
	submit(url string, body []byte) (int, []byte, error)
	get(url, id string) (int, []byte, error)
}

// curlClient runs a curl process per request, with the headers of the vendor's page.
type curlClient struct{ path string }

func (c curlClient) submit(url string, body []byte) (int, []byte, error) {
	return curlDo(c.path, body, "--request", "POST",
		"-H", "Content-Type: application/json", "-H", "Authorization: Api-Key "+benchKey,
		"-H", "x-folder-id: "+benchFolder, "-d", "@-", url+"/foundationModels/v1/completionAsync")
}

func (c curlClient) get(url, id string) (int, []byte, error) {
	return curlDo(c.path, nil, "-H", "Authorization: Api-Key "+benchKey, url+"/operations/"+id)
}

// goClient does exactly what curlClient does with net/http and kept-alive connections, so the
// comparison is not only about the cost of starting processes.
type goClient struct{ c *http.Client }

func (g *goClient) do(method, url string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Api-Key "+benchKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-folder-id", benchFolder)
	}
	resp, err := g.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (g *goClient) submit(url string, body []byte) (int, []byte, error) {
	return g.do(http.MethodPost, url+"/foundationModels/v1/completionAsync", body)
}

func (g *goClient) get(url, id string) (int, []byte, error) {
	return g.do(http.MethodGet, url+"/operations/"+id, nil)
}

// curlDo runs one curl and returns the HTTP status and body.
func curlDo(curl string, stdin []byte, args ...string) (int, []byte, error) {
	cmd := exec.Command(curl, append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		return 0, out, fmt.Errorf("curl: %w", err)
	}
	i := bytes.LastIndexByte(out, '\n')
	if i < 0 {
		return 0, out, fmt.Errorf("curl: no status in %q", out)
	}
	code, err := strconv.Atoi(string(bytes.TrimSpace(out[i+1:])))
	if err != nil {
		return 0, out, fmt.Errorf("curl: status %q", out[i+1:])
	}
	return code, out[:i], nil
}
