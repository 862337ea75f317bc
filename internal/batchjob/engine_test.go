package batchjob_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/internal/batchjob"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

const (
	testFolder = "b1gemulatorfolder000"
	testKey    = "test-key"
	testModel  = "gpt://" + testFolder + "/yandexgpt-lite/latest"
	system     = "answer briefly"
)

// env is a batch-mode emulator on loopback, a client of it to count what the run made, and a
// directory for the run's files.
type env struct {
	srv    *batchmode.Server
	target string
	dir    string
	c      *batchapi.Client
}

func start(t *testing.T, cfg batchmode.Config) *env {
	t.Helper()
	cfg.Authorize = emulator.New(emulator.Config{APIKeys: []string{testKey}}).Authorize
	srv := batchmode.New(cfg)
	target, _, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	c, err := batchapi.Dial(context.Background(), batchapi.Config{Endpoint: target, Insecure: true,
		Credentials: auth.APIKey(testKey), FolderID: testFolder})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &env{srv: srv, target: target, dir: t.TempDir(), c: c}
}

// prompt is row i's prompt; every dupEvery-th row (if > 0) asks what row 0 asks.
func prompt(i, dupEvery int) string {
	if dupEvery > 0 && i%dupEvery == 0 {
		return "the same question"
	}
	return fmt.Sprintf("question %d: what is %d + %d?", i, i, i+1)
}

// input writes n rows to in.jsonl.
func (e *env) input(t *testing.T, n, dupEvery int) string {
	t.Helper()
	path := filepath.Join(e.dir, "in.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	for i := range n {
		b, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("r%d", i), "prompt": prompt(i, dupEvery)})
		bw.Write(append(b, '\n'))
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *env) config(input string) batchjob.Config {
	return batchjob.Config{
		Input: input, Checkpoint: filepath.Join(e.dir, "in.checkpoint.json"), Output: filepath.Join(e.dir, "in.results.jsonl"),
		Settings: batchjob.Settings{Settings: job.Settings{
			Input:    batch.Options{Folder: testFolder, Model: "yandexgpt-lite", System: system},
			Endpoint: e.target, Emulator: true,
		}},
		Credentials: auth.APIKey(testKey), Insecure: true, PollEvery: 5 * time.Millisecond, ProgressEvery: time.Millisecond,
	}
}

// answer is what the emulator answers prompt p.
func answer(p string) string {
	text, _, _ := emulator.Completion(testModel, []emulator.Message{{Role: "system", Text: system}, {Role: "user", Text: p}}, 0)
	return text
}

// results reads the results file: one result per id, or the test fails (every row exactly once).
func results(t *testing.T, path string, n int) map[string]job.Result {
	t.Helper()
	out := map[string]job.Result{}
	lines := 0
	err := job.EachResult(path, job.FormatJSONL, -1, func(r *job.Result, _ int64) {
		lines++
		if _, dup := out[r.ID]; dup {
			t.Errorf("row %s has two result lines", r.ID)
		}
		out[r.ID] = *r
	})
	if err != nil {
		t.Fatal(err)
	}
	if lines != n || len(out) != n {
		t.Fatalf("%d result lines of %d rows, want %d", lines, len(out), n)
	}
	return out
}

// checkAnswers checks that every row but those in failed succeeded with the emulator's answer.
func checkAnswers(t *testing.T, res map[string]job.Result, n, dupEvery int, failed map[int]bool) {
	t.Helper()
	for i := range n {
		r := res[fmt.Sprintf("r%d", i)]
		if failed[i] {
			if r.Status != job.StatusFailed {
				t.Fatalf("row %d: %+v, want a failure", i, r)
			}
			continue
		}
		if r.Status != job.StatusSucceeded || r.Text != answer(prompt(i, dupEvery)) {
			t.Fatalf("row %d: status %s text %q, want %q", i, r.Status, r.Text, answer(prompt(i, dupEvery)))
		}
	}
}

// made counts the run's source datasets, the uploads they took and the tasks over them. A dataset
// takes one upload; a kill between the upload and its step leaves a DRAFT, which takes it again
// (the same bytes) when redraft.
func (e *env) made(t *testing.T, redraft ...bool) (datasets, uploads, tasks int) {
	t.Helper()
	ctx := context.Background()
	all, err := e.c.FindDatasets(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if _, ok := d.Labels["batchgpt_run"]; !ok {
			continue // a result dataset
		}
		datasets++
		if n := e.srv.Uploads(d.ID); n > 1 && (len(redraft) == 0 || !redraft[0] || n > 2) {
			t.Fatalf("dataset %s was uploaded %d times", d.ID, n)
		}
		uploads += e.srv.Uploads(d.ID)
		ts, err := e.c.FindTasks(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		tasks += len(ts)
	}
	return datasets, uploads, tasks
}

// validOnce makes the emulator's invalid lines a fault of the first validation only (the
// emulator applies them to every dataset): the second dataset, of the valid rows, is valid.
func (e *env) validOnce(crash func(string) error) func(string) error {
	return func(p string) error {
		if p == "after:validated" {
			e.srv.SetFaults(batchmode.Faults{})
		}
		if crash != nil {
			return crash(p)
		}
		return nil
	}
}

func run(t *testing.T, cfg batchjob.Config) (job.Summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return batchjob.New(cfg).Run(ctx)
}

func resume(t *testing.T, cfg batchjob.Config) (job.Summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return batchjob.New(cfg).Resume(ctx)
}

// TestEndToEnd: 100,000 rows (every 97th the same request) through one dataset and one task;
// every row has exactly one line with the emulator's answer.
func TestEndToEnd(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 5_000
	}
	const dupEvery = 97
	e := start(t, batchmode.Config{BatchSize: 5000})
	cfg := e.config(e.input(t, n, dupEvery))
	sum, err := run(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, results(t, cfg.Output, n), n, dupEvery, nil)
	dups := (n - 1) / dupEvery
	if sum.Succeeded != n || sum.Failed != 0 || sum.Pending != 0 || sum.Deduplicated != int64(dups) {
		t.Fatalf("summary %+v, want %d succeeded, %d deduplicated", sum, n, dups)
	}
	if d, u, k := e.made(t); d != 1 || u != 1 || k != 1 {
		t.Fatalf("%d datasets, %d uploads, %d tasks; want one each", d, u, k)
	}
	ds, err := e.c.FindDatasets(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if _, ok := d.Labels["batchgpt_run"]; ok && d.Rows != int64(n-dups) {
			t.Fatalf("the dataset has %d rows, want %d: duplicates are uploaded once", d.Rows, n-dups)
		}
	}
	// Resuming a finished run, or running its input again, does nothing more.
	if _, err := resume(t, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	results(t, cfg.Output, n)
	if d, u, k := e.made(t); d != 1 || u != 1 || k != 1 {
		t.Fatalf("after resume: %d datasets, %d uploads, %d tasks", d, u, k)
	}
}

var errKilled = errors.New("killed")

// crashPoints runs a whole job and lists the points its Crash hook passes.
func crashPoints(t *testing.T, faults batchmode.Faults) []string {
	t.Helper()
	e := start(t, batchmode.Config{BatchSize: 10, Faults: faults})
	cfg := e.config(e.input(t, 50, 7))
	var points []string
	cfg.Crash = e.validOnce(func(p string) error { points = append(points, p); return nil })
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	return points
}

// TestKillAtEveryStep kills the run at every point of every step, before and after it is
// journaled (a kill -9 between a call and its step, or right after the step), then resumes it
// until it is done: every row has exactly one line, every dataset took one upload, and there is
// one task, however many resumes it took.
func TestKillAtEveryStep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults batchmode.Faults
		failed map[int]bool
	}{
		{"clean", batchmode.Faults{}, nil},
		// Lines 2 and 9 are rows 1 and 9: row 7 repeats row 0's request, and is not uploaded.
		{"invalid lines", batchmode.Faults{InvalidLines: []int64{2, 9}}, map[int]bool{1: true, 9: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			points := crashPoints(t, tc.faults)
			if len(points) < 16 {
				t.Fatalf("only %d crash points: %q", len(points), points)
			}
			seen := map[string]int{}
			for _, point := range points {
				seen[point]++
				nth := seen[point]
				t.Run(fmt.Sprintf("%s#%d", point, nth), func(t *testing.T) {
					e := start(t, batchmode.Config{BatchSize: 10, Faults: tc.faults})
					const n, dupEvery = 50, 7
					cfg := e.config(e.input(t, n, dupEvery))
					hits := 0
					cfg.Crash = e.validOnce(func(p string) error {
						if p == point {
							if hits++; hits == nth {
								return errKilled
							}
						}
						return nil
					})
					_, err := run(t, cfg)
					if err == nil && strings.Contains(point, "progress") {
						t.Skip("the task ran faster this time: fewer progress steps")
					}
					if !errors.Is(err, errKilled) {
						t.Fatalf("run: %v, want the kill at %s", err, point)
					}
					cfg.Crash = e.validOnce(nil)
					sum, err := resume(t, cfg)
					if err != nil {
						t.Fatalf("resume: %v", err)
					}
					// Counted once each: a row written again would count twice (and leave a
					// superseded line that Finalize drops, hiding it from the file).
					if sum.Succeeded+sum.Failed != n || sum.Pending != 0 {
						t.Fatalf("resume summary %+v: %d rows resolved, want %d", sum, sum.Succeeded+sum.Failed, n)
					}
					if st, err := store.Load(cfg.Checkpoint); err != nil || st.SupersededBytes() != 0 {
						t.Fatalf("a row has two result lines: %d superseded bytes (%v)", st.SupersededBytes(), err)
					}
					checkAnswers(t, results(t, cfg.Output, n), n, dupEvery, tc.failed)
					wantDatasets := 1
					if tc.failed != nil {
						wantDatasets = 2
					}
					redraft := point == "before:uploaded"
					if d, u, k := e.made(t, redraft); d != wantDatasets || u != d && !redraft || k != 1 {
						t.Fatalf("%d datasets, %d uploads, %d tasks; want %d, %d, 1", d, u, k, wantDatasets, wantDatasets)
					}
				})
			}
		})
	}
}

// TestValidationErrors: rows whose lines fail validation fail with the line's message; the
// others are answered by a second dataset's task.
func TestValidationErrors(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 10, Faults: batchmode.Faults{InvalidLines: []int64{1, 5, 40}}})
	const n = 40
	cfg := e.config(e.input(t, n, 0))
	cfg.Crash = e.validOnce(nil)
	sum, err := run(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := results(t, cfg.Output, n)
	checkAnswers(t, res, n, 0, map[int]bool{0: true, 4: true, 39: true})
	for _, id := range []string{"r0", "r4", "r39"} {
		r := res[id]
		if r.Error == nil || r.Error.Kind != job.KindInvalid || !strings.Contains(r.Error.Message, "emulated fault: line rejected") {
			t.Fatalf("row %s: %+v", id, r.Error)
		}
	}
	if sum.Failed != 3 || sum.FailedByKind[job.KindInvalid] != 3 {
		t.Fatalf("summary %+v", sum)
	}
	if d, u, k := e.made(t); d != 2 || u != 2 || k != 1 {
		t.Fatalf("%d datasets, %d uploads, %d tasks; want 2, 2, 1", d, u, k)
	}
}

// TestFailedTask: a task that fails fails its rows with its error.
func TestFailedTask(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 10, Faults: batchmode.Faults{FailBatch: 2}})
	const n = 30
	cfg := e.config(e.input(t, n, 0))
	sum, err := run(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for id, r := range results(t, cfg.Output, n) {
		if r.Status != job.StatusFailed || r.Error.Kind != job.KindOpFailed || !strings.Contains(r.Error.Message, "emulated fault: batch failed") {
			t.Fatalf("row %s: %+v", id, r)
		}
	}
	if sum.Failed != n {
		t.Fatalf("summary %+v", sum)
	}
}

// TestCancel: batchgpt cancel while the task runs stops it; the run's rows fail as cancelled,
// and a resume starts no other task.
func TestCancel(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 10, Faults: batchmode.Faults{StopAfterBatches: 1}})
	const n = 30
	cfg := e.config(e.input(t, n, 0))
	started := make(chan struct{})
	var once sync.Once
	cfg.Crash = func(p string) error {
		if p == "after:task_started" {
			once.Do(func() { close(started) })
		}
		return nil
	}
	type outcome struct {
		sum job.Summary
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		sum, err := run(t, cfg)
		done <- outcome{sum, err}
	}()
	<-started
	dial := func(s batchjob.Settings) (*batchapi.Client, error) {
		return batchapi.Dial(context.Background(), batchapi.Config{Endpoint: e.target, Insecure: true, Credentials: auth.APIKey(testKey), FolderID: testFolder})
	}
	task, err := batchjob.Cancel(context.Background(), cfg.Checkpoint, dial)
	if !errors.Is(err, batchjob.ErrRunning) && err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if task == "" {
		t.Fatal("cancel named no task")
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	for id, r := range results(t, cfg.Output, n) {
		if r.Status != job.StatusFailed || r.Error.Kind != job.KindCancelled {
			t.Fatalf("row %s: %+v", id, r)
		}
	}
	cfg.Crash = nil
	if _, err := resume(t, cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, k := e.made(t); k != 1 {
		t.Fatalf("%d tasks", k)
	}
}

// killedAfterValidation runs n rows and kills the run once its dataset's validation is journaled.
func killedAfterValidation(t *testing.T, n int) (*env, batchjob.Config) {
	t.Helper()
	e := start(t, batchmode.Config{BatchSize: 10})
	cfg := e.config(e.input(t, n, 0))
	cfg.Crash = func(p string) error {
		if p == "after:validated" {
			return errKilled
		}
		return nil
	}
	if _, err := run(t, cfg); !errors.Is(err, errKilled) {
		t.Fatal(err)
	}
	return e, cfg
}

// TestCancelBeforeTask: a run cancelled before its task started never starts one.
func TestCancelBeforeTask(t *testing.T) {
	const n = 20
	e, cfg := killedAfterValidation(t, n)
	dial := func(batchjob.Settings) (*batchapi.Client, error) { return nil, errors.New("not dialed without a task") }
	if _, err := batchjob.Cancel(context.Background(), cfg.Checkpoint, dial); err != nil {
		t.Fatal(err)
	}
	cfg.Crash = nil
	if _, err := resume(t, cfg); err != nil {
		t.Fatal(err)
	}
	for id, r := range results(t, cfg.Output, n) {
		if r.Error == nil || r.Error.Kind != job.KindCancelled {
			t.Fatalf("row %s: %+v", id, r)
		}
	}
	if _, _, k := e.made(t); k != 0 {
		t.Fatalf("%d tasks after a cancel before the task", k)
	}
}

// TestCleanup: --cleanup deletes the run's datasets and its task once the results are durable.
func TestCleanup(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 10, Faults: batchmode.Faults{InvalidLines: []int64{3}}})
	const n = 25
	cfg := e.config(e.input(t, n, 0))
	cfg.Settings.Cleanup = true
	cfg.Crash = e.validOnce(nil)
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, results(t, cfg.Output, n), n, 0, map[int]bool{2: true})
	all, err := e.c.FindDatasets(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Fatalf("%d datasets left after cleanup", len(all))
	}
	st, err := store.Load(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	s, err := batchjob.StatusOf(st)
	if err != nil || !s.Cleaned || s.Task == "" {
		t.Fatalf("status %+v, %v", s, err)
	}
	tasks, err := e.c.FindTasks(context.Background(), s.Dataset)
	if err != nil || len(tasks) != 0 {
		t.Fatalf("tasks left: %v, %v", tasks, err)
	}
}

// withCache starts an emulator and returns the config of a 20-row run with a result cache.
func withCache(t *testing.T) (*env, batchjob.Config, *cache.Cache) {
	t.Helper()
	e := start(t, batchmode.Config{BatchSize: 10})
	c, err := cache.Open(filepath.Join(e.dir, "cache.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg := e.config(e.input(t, 20, 0))
	cfg.Cache = c
	return e, cfg, c
}

// TestCache: a second run answers from the cache what the first stored (the answers written are
// what the cache keeps), uploads only the rest, and duplicates of a cached request are cached too.
func TestCache(t *testing.T) {
	e, cfg, c := withCache(t)
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	// The second input: the first 20 rows again, 10 new, and duplicates of both kinds.
	path := filepath.Join(e.dir, "second.jsonl")
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, `{"id":"r%d","prompt":%q}`+"\n", i, prompt(i, 0))
	}
	fmt.Fprintf(&b, `{"id":"d1","prompt":%q}`+"\n", prompt(3, 0))
	fmt.Fprintf(&b, `{"id":"d2","prompt":%q}`+"\n", prompt(25, 0))
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2 := e.config(path)
	cfg2.Checkpoint, cfg2.Output, cfg2.Cache = filepath.Join(e.dir, "second.ckpt"), filepath.Join(e.dir, "second.results.jsonl"), c
	sum, err := run(t, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	res := results(t, cfg2.Output, 32)
	for i := range 30 {
		r := res[fmt.Sprintf("r%d", i)]
		if r.Text != answer(prompt(i, 0)) || r.Cached != (i < 20) {
			t.Fatalf("row %d: %+v", i, r)
		}
	}
	if d1, d2 := res["d1"], res["d2"]; d1.DeduplicatedFrom != "r3" || d2.DeduplicatedFrom != "r25" || d2.Text != answer(prompt(25, 0)) {
		t.Fatalf("duplicates: %+v %+v", d1, d2)
	}
	if sum.CacheHits != 20 || sum.Deduplicated != 2 {
		t.Fatalf("summary %+v", sum)
	}
	st, err := store.Load(cfg2.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := batchjob.StatusOf(st)
	ds, err := e.c.DescribeDataset(context.Background(), s.Dataset)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Rows != 10 {
		t.Fatalf("the second run uploaded %d rows, want the 10 the cache did not have", ds.Rows)
	}
}

// TestReadyDatasetNotUploadedAgain: a dataset past DRAFT is never uploaded again, even when the
// journal does not say it was uploaded (here its "uploaded" and "validated" steps are cut off).
func TestReadyDatasetNotUploadedAgain(t *testing.T) {
	const n = 20
	e, cfg := killedAfterValidation(t, n)
	data, err := os.ReadFile(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if !strings.Contains(l, `"step":"uploaded"`) && !strings.Contains(l, `"step":"validated"`) {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(cfg.Checkpoint, []byte(strings.Join(kept, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Crash = nil
	if _, err := resume(t, cfg); err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, results(t, cfg.Output, n), n, 0, nil)
	if d, u, k := e.made(t); d != 1 || u != 1 || k != 1 {
		t.Fatalf("%d datasets, %d uploads, %d tasks; want one each", d, u, k)
	}
}

// TestNightly: the same command over a file exported anew archives the finished run of the night
// before under dated names and runs the new file, the cache answering the rows it already had;
// over the same file it carries the run on (here: nothing left); an unfinished run of another
// file is refused, not archived.
func TestNightly(t *testing.T) {
	e, cfg, _ := withCache(t)
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(cfg.Output)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := run(t, cfg); err != nil || sum.Succeeded != 20 {
		t.Fatalf("the same file again: %+v, %v", sum, err)
	}
	if _, _, tasks := e.made(t); tasks != 1 {
		t.Fatalf("%d tasks after running the same file twice, want 1", tasks)
	}

	e.input(t, 25, 0) // the next night: five rows more
	sum, err := run(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 25 || sum.CacheHits != 20 {
		t.Fatalf("the next night: %+v; want 25 rows, 20 from the cache", sum)
	}
	checkAnswers(t, results(t, cfg.Output, 25), 25, 0, nil)
	st, err := store.Load(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	date := st.Header.Created.UTC().Format(time.DateOnly)
	old := strings.TrimSuffix(cfg.Output, ".results.jsonl") + "." + date + ".results.jsonl"
	if got, err := os.ReadFile(old); err != nil || string(got) != string(first) {
		t.Fatalf("the first night's results at %s: %v; %d bytes, want its %d", old, err, len(got), len(first))
	}
	if prev, err := store.Load(strings.TrimSuffix(cfg.Checkpoint, ".checkpoint.json") + "." + date + ".checkpoint.json"); err != nil || !batchjob.IsBatch(prev.Header) {
		t.Fatalf("the first night's checkpoint: %v", err)
	}

	// An unfinished run of another file stays where it is.
	stop := errors.New("stop")
	cfg2 := cfg
	cfg2.Crash = func(step string) error {
		if step == "after:task_started" {
			return stop
		}
		return nil
	}
	e.input(t, 30, 0)
	if _, err := run(t, cfg2); !errors.Is(err, stop) {
		t.Fatalf("the third night, stopped after its task started: %v", err)
	}
	e.input(t, 31, 0)
	if _, err := run(t, cfg); err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Fatalf("over an unfinished run of another file: %v; want it refused", err)
	}
}

// TestProgressAfterResume: a resumed run's progress counts the rows resolved before it (here the
// cache's answers, written before the crash), not only its own.
func TestProgressAfterResume(t *testing.T) {
	e, cfg, _ := withCache(t)
	if _, err := run(t, cfg); err != nil {
		t.Fatal(err)
	}
	e.input(t, 25, 0) // 20 rows the cache has, 5 new
	stop := errors.New("stop")
	cfg.Force = true
	cfg.Crash = func(p string) error {
		if p == "after:created" {
			return stop
		}
		return nil
	}
	if _, err := run(t, cfg); !errors.Is(err, stop) {
		t.Fatalf("run: %v", err)
	}
	cfg.Crash, cfg.Force = nil, false
	eng := batchjob.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := eng.Resume(ctx)
	if err != nil || sum.Succeeded != 25 {
		t.Fatalf("resume: %+v, %v", sum, err)
	}
	if p := eng.Progress(); p.Rows != 25 || p.Resolved != 25 || p.Succeeded != 25 || p.Failed != 0 {
		t.Fatalf("progress after the resume: %+v; want all 25 rows resolved", p)
	}
}
