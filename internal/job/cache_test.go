package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// openCache opens a fresh result cache file for one test.
func openCache(t *testing.T, dir string) *cache.Cache {
	t.Helper()
	c, err := cache.Open(filepath.Join(dir, "cache.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeRows writes a JSONL input of the given id -> prompt rows, in order.
func writeRows(t *testing.T, path string, ids []string, prompts map[string]string) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		line, _ := json.Marshal(map[string]string{"id": id, "prompt": prompts[id]})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkAnswers asserts that results hold exactly the ids of prompts, each succeeded with the
// emulator's answer to its prompt.
func checkAnswers(t *testing.T, results map[string]job.Result, prompts map[string]string) {
	t.Helper()
	if len(results) != len(prompts) {
		t.Fatalf("results: %d rows, want %d", len(results), len(prompts))
	}
	for id, p := range prompts {
		r, ok := results[id]
		if !ok {
			t.Fatalf("row %s missing from results", id)
		}
		want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: p}})
		if r.Status != job.StatusSucceeded || r.Text != want || r.Usage == nil || r.OperationID == "" {
			t.Fatalf("row %s: %+v; want succeeded %q", id, r, want)
		}
	}
}

// nightConfig is config for a run of one night's file, with its own checkpoint and results.
func nightConfig(dir, in, url string, c job.ResultCache) job.Config {
	cfg := config(dir, in, url)
	cfg.Output = strings.TrimSuffix(in, ".jsonl") + ".results.jsonl"
	cfg.Cache = c
	return cfg
}

func TestCacheDayOneDayTwo(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{Seed: 3})
	dir := t.TempDir()
	c := openCache(t, dir)

	const n = 300
	day1 := map[string]string{}
	var ids1 []string
	for i := range n {
		id := fmt.Sprintf("r%05d", i)
		ids1, day1[id] = append(ids1, id), prompt(i)
	}
	in1 := writeRows(t, filepath.Join(dir, "day1.jsonl"), ids1, day1)
	sum, err := job.New(nightConfig(dir, in1, url, c)).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submissions != n || sum.CacheHits != 0 || sum.Succeeded != n {
		t.Fatalf("day 1 summary %+v", sum)
	}
	day1Results := readResults(t, filepath.Join(dir, "day1.results.jsonl"))
	checkAnswers(t, day1Results, day1)

	// Day 2: 20 rows changed, 30 new, 10 removed, and the rest in another order under other ids:
	// the key is the request, never the id or the file.
	day2 := map[string]string{}
	var ids2 []string
	changed, added := 0, 0
	for i := n - 1; i >= 10; i-- {
		id := fmt.Sprintf("day2-%05d", i)
		day2[id] = prompt(i)
		if i%13 == 0 && changed < 20 {
			day2[id] = prompt(i) + " (edited)"
			changed++
		}
		ids2 = append(ids2, id)
	}
	for i := range 30 {
		id := fmt.Sprintf("new-%03d", i)
		day2[id] = prompt(n + i)
		ids2 = append(ids2, id)
		added++
	}
	before := srv.Stats().Submissions
	in2 := writeRows(t, filepath.Join(dir, "day2.jsonl"), ids2, day2)
	sum, err = job.New(nightConfig(dir, in2, url, c)).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := int64(changed + added)
	if got := srv.Stats().Submissions - before; got != want || sum.Submissions != want {
		t.Fatalf("day 2: emulator saw %d submissions, summary %d; want exactly the %d changed and new rows", got, sum.Submissions, want)
	}
	if sum.CacheHits != int64(len(ids2))-want || sum.Succeeded != len(ids2) || sum.SavedTokens == 0 {
		t.Fatalf("day 2 summary %+v", sum)
	}
	if sum.InputTokens == 0 || sum.InputTokens >= sum.SavedTokens {
		t.Fatalf("day 2 billed %d input tokens, saved %d: the cached rows must not count as billed", sum.InputTokens, sum.SavedTokens)
	}
	results := readResults(t, filepath.Join(dir, "day2.results.jsonl"))
	checkAnswers(t, results, day2)
	hits := 0
	for id, r := range results {
		if !r.Cached {
			continue
		}
		hits++
		var i int
		fmt.Sscanf(id, "day2-%05d", &i)
		orig := day1Results[fmt.Sprintf("r%05d", i)]
		if r.OperationID != orig.OperationID || r.ModelVersion != orig.ModelVersion || *r.Usage != *orig.Usage ||
			r.Attempts != 0 || r.CachedAt == "" {
			t.Fatalf("cached row %s: %+v, want the day-1 answer %+v", id, r, orig)
		}
		if _, err := time.Parse(time.RFC3339, r.CachedAt); err != nil {
			t.Fatalf("cached_at %q: %v", r.CachedAt, err)
		}
	}
	if int64(hits) != sum.CacheHits {
		t.Fatalf("%d results marked cached, summary says %d", hits, sum.CacheHits)
	}
	status, err := job.ReadStatus(nightConfig(dir, in2, url, c).Checkpoint, 10, 5000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if int64(status.Cached) != sum.CacheHits || status.SavedTokens != sum.SavedTokens || status.InputTokens != sum.InputTokens {
		t.Fatalf("status %+v, summary %+v", status, sum)
	}
}

// TestBackfillLostAnswers: when the answers of a night never reached the cache (a crash between
// a result line and its cache entry loses them; here night 2 opens an empty cache), the next
// night's run over the same file stores them from the earlier run's journal and results before
// it starts, and pays only for the rows that changed.
func TestBackfillLostAnswers(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{Seed: 5})
	dir := t.TempDir()
	const n, edited = 200, 20
	night := map[string]string{}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("r%05d", i)
		ids, night[id] = append(ids, id), prompt(i)
	}
	in := filepath.Join(dir, "nightly.jsonl")
	writeRows(t, in, ids, night)
	c1, err := cache.Open(filepath.Join(dir, "night1.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if sum, err := job.New(nightConfig(dir, in, url, c1)).Run(context.Background()); err != nil || sum.Submissions != n {
		t.Fatalf("night 1: %+v, %v", sum, err)
	}
	night1 := readResults(t, filepath.Join(dir, "nightly.results.jsonl"))

	for i := range edited {
		id := ids[i*(n/edited)]
		night[id] += " (edited)"
	}
	writeRows(t, in, ids, night)
	c2 := openCache(t, dir) // empty: every answer of night 1 is lost to it
	before := srv.Stats().Submissions
	sum, err := job.New(nightConfig(dir, in, url, c2)).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Stats().Submissions - before; got != edited || sum.CacheHits != n-edited {
		t.Fatalf("night 2: %d submissions, %d cache hits; want the %d edited rows submitted and the rest from the backfilled cache",
			got, sum.CacheHits, edited)
	}
	results := readResults(t, filepath.Join(dir, "nightly.results.jsonl"))
	checkAnswers(t, results, night)
	for id, r := range results {
		if r.Cached && r.OperationID != night1[id].OperationID {
			t.Fatalf("row %s answered by operation %s, want night 1's %s", id, r.OperationID, night1[id].OperationID)
		}
	}
}

// dupInput writes n rows over k distinct prompts: row i asks prompt(i % k).
func dupInput(t *testing.T, dir string, n, k int) (string, map[string]string) {
	t.Helper()
	prompts := map[string]string{}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("r%05d", i)
		ids, prompts[id] = append(ids, id), prompt(i%k)
	}
	return writeRows(t, filepath.Join(dir, "dups.jsonl"), ids, prompts), prompts
}

func TestDedupSubmitsEachRequestOnce(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:0s:50ms")
	for _, tc := range []struct {
		name      string
		cache     bool
		noDedup   bool
		wantSubmx int64
	}{
		{"dedup with cache", true, false, 100},
		{"dedup without cache", false, false, 100},
		{"no dedup", false, true, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 4})
			dir := t.TempDir()
			in, prompts := dupInput(t, dir, 1000, 100)
			cfg := nightConfig(dir, in, url, nil)
			if tc.cache {
				cfg.Cache = openCache(t, dir)
			}
			cfg.Settings.NoDedup = tc.noDedup
			sum, err := job.New(cfg).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := srv.Stats().Submissions; got != tc.wantSubmx || sum.Submissions != tc.wantSubmx {
				t.Fatalf("emulator saw %d submissions, summary %d; want %d", got, sum.Submissions, tc.wantSubmx)
			}
			results := readResults(t, cfg.Output)
			checkAnswers(t, results, prompts)
			deduped := 0
			for id, r := range results {
				var i int
				fmt.Sscanf(id, "r%05d", &i)
				leader := fmt.Sprintf("r%05d", i%100)
				switch {
				case tc.noDedup || i < 100:
					if r.DeduplicatedFrom != "" || r.Attempts != 1 {
						t.Fatalf("row %s: %+v, want its own submission", id, r)
					}
				default:
					if r.DeduplicatedFrom != leader || r.OperationID != results[leader].OperationID || r.Attempts != 0 {
						t.Fatalf("row %s: %+v, want the answer of %s (%+v)", id, r, leader, results[leader])
					}
					deduped++
				}
			}
			if int64(deduped) != sum.Deduplicated || sum.Succeeded != 1000 {
				t.Fatalf("%d rows deduplicated, summary %+v", deduped, sum)
			}
		})
	}
}

func TestCacheFlags(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{Seed: 5})
	dir := t.TempDir()
	c := openCache(t, dir)
	const n = 40
	in := writeJSONL(t, dir, n)
	run := func(name string, edit func(*job.Config)) job.Summary {
		t.Helper()
		cfg := config(dir, in, url)
		cfg.Output = filepath.Join(dir, name+".results.jsonl")
		cfg.Checkpoint = filepath.Join(dir, name+".checkpoint.json")
		cfg.Cache = c
		edit(&cfg)
		sum, err := job.New(cfg).Run(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkAll(t, readResults(t, cfg.Output), n)
		return sum
	}
	if sum := run("first", func(*job.Config) {}); sum.Submissions != n {
		t.Fatalf("first run %+v", sum)
	}
	if sum := run("again", func(*job.Config) {}); sum.Submissions != 0 || sum.CacheHits != n {
		t.Fatalf("second run %+v: want every row from the cache", sum)
	}
	if sum := run("no-cache", func(c *job.Config) { c.Settings.NoCache = true }); sum.Submissions != n || sum.CacheHits != 0 {
		t.Fatalf("--no-cache %+v", sum)
	}
	key := func(i int) cache.Key {
		t.Helper()
		e, ok := lookupRow(t, c, in, url, i)
		if !ok {
			t.Fatalf("row %d is not in the cache", i)
		}
		return e.Key
	}
	k0 := key(0)
	old, _, _ := c.Get(context.Background(), k0, time.Time{})
	time.Sleep(10 * time.Millisecond)
	if sum := run("refresh", func(c *job.Config) { c.Settings.Refresh = true }); sum.Submissions != n || sum.CacheHits != 0 {
		t.Fatalf("--refresh %+v", sum)
	}
	renewed, _, _ := c.Get(context.Background(), k0, time.Time{})
	if !renewed.CachedAt.After(old.CachedAt) || renewed.OperationID == old.OperationID {
		t.Fatalf("--refresh did not replace the entry: was %+v, now %+v", old, renewed)
	}
	// Age every entry by a day: a TTL of an hour ignores them all, one of two days none.
	var aged []cache.Entry
	for i := range n {
		e, _, _ := c.Get(context.Background(), key(i), time.Time{})
		e.CachedAt = e.CachedAt.Add(-24 * time.Hour)
		aged = append(aged, e)
	}
	if err := c.Put(context.Background(), aged); err != nil {
		t.Fatal(err)
	}
	if sum := run("ttl-2d", func(c *job.Config) { c.CacheTTL = 48 * time.Hour }); sum.Submissions != 0 || sum.CacheHits != n {
		t.Fatalf("--cache-ttl 2d %+v", sum)
	}
	if sum := run("ttl-1h", func(c *job.Config) { c.CacheTTL = time.Hour }); sum.Submissions != n || sum.CacheHits != 0 {
		t.Fatalf("--cache-ttl 1h %+v", sum)
	}
}

// lookupRow finds the cache entry of row i of a writeJSONL input: its key is that of the request
// body sent to the endpoint url.
func lookupRow(t *testing.T, c *cache.Cache, in, url string, i int) (cache.Entry, bool) {
	t.Helper()
	cfg := config(t.TempDir(), in, url)
	rd, err := batch.Open(in, cfg.Settings.Input)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for {
		row, err := rd.Next()
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if row.Index == i {
			e, ok, err := c.Get(context.Background(), cache.Key(batch.RequestKey(url, row.Body)), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return e, ok
		}
	}
}

// failingCache is a real cache whose writes fail, as on a full disk.
type failingCache struct{ *cache.Cache }

func (failingCache) Put(context.Context, []cache.Entry) error {
	return errors.New("database or disk is full")
}

func TestCacheFailureNeverFailsTheRun(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{Seed: 6})
	dir := t.TempDir()
	const n = 50
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Cache = failingCache{openCache(t, dir)}
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	if sum.Succeeded != n || !strings.Contains(sum.CacheProblem, "disk is full") || srv.Stats().Submissions != n {
		t.Fatalf("summary %+v", sum)
	}
}

// TestFollowersDurableBeforeLeader checks the invariant that makes deduplication crash-safe: in
// the journal, the R record of every row that took another row's answer comes before that row's
// own R record, so a resumed run never finds a resolved leader with a follower still waiting.
func TestFollowersDurableBeforeLeader(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:0s:30ms")
	_, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 8})
	dir := t.TempDir()
	in, prompts := dupInput(t, dir, 400, 40)
	cfg := nightConfig(dir, in, url, nil)
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, readResults(t, cfg.Output), prompts)
	data, err := os.ReadFile(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	resolvedAt := map[int]int{} // row -> position of its R record
	for n, line := range strings.Split(string(data), "\n") {
		var row int
		if _, err := fmt.Sscanf(line, "R %d", &row); err == nil {
			resolvedAt[row] = n
		}
	}
	if len(resolvedAt) != 400 {
		t.Fatalf("%d R records, want 400", len(resolvedAt))
	}
	for row := 40; row < 400; row++ {
		if leader := row % 40; resolvedAt[row] > resolvedAt[leader] {
			t.Fatalf("row %d was journaled resolved after its leader, row %d", row, leader)
		}
	}
}
