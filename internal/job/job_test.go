package job_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/poller"
)

const folder = "b1gtestfolder0000000"

var modelURI = "gpt://" + folder + "/yandexgpt-lite/latest"

// startEmulator serves an emulator on loopback for one test.
func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Server, string) {
	t.Helper()
	cfg.APIKeys = []string{"test-key"}
	srv := emulator.New(cfg)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, url
}

// prompt is the text of row i; every row differs so duplicates are visible to the emulator.
func prompt(i int) string {
	return fmt.Sprintf("Вопрос %d: what is %d + %d?", i, i, i*7)
}

func writeJSONL(t *testing.T, dir string, n int) string { return writePrompts(t, dir, n, prompt) }

// writePrompts writes dir/in.jsonl: n rows, row i with id r0000i and the prompt promptOf(i).
func writePrompts(t *testing.T, dir string, n int, promptOf func(int) string) string {
	t.Helper()
	p := filepath.Join(dir, "in.jsonl")
	var b strings.Builder
	for i := range n {
		line, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("r%05d", i), "prompt": promptOf(i)})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeCSV(t *testing.T, dir string, n int) string {
	t.Helper()
	p := filepath.Join(dir, "in.csv")
	var b strings.Builder
	b.WriteString("id,prompt\r\n")
	for i := range n {
		fmt.Fprintf(&b, "r%05d,\"%s\"\r\n", i, strings.ReplaceAll(prompt(i), `"`, `""`))
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func config(dir, input, url string) job.Config {
	cp, _ := job.DefaultPaths(input)
	return job.Config{
		Input: input, Checkpoint: cp, Output: filepath.Join(dir, "out.jsonl"),
		Settings: job.Settings{Input: batch.Options{Folder: folder, Model: "yandexgpt-lite"}, Endpoint: url, OperationsEndpoint: url},
		Tuning: job.Tuning{Concurrency: 32, MaxAttempts: 8, BackoffBase: 5 * time.Millisecond, RequestTimeout: 5 * time.Second,
			Schedule: fastSchedule()},
		Credentials: auth.APIKey("test-key"),
	}
}

func fastSchedule() *poller.Schedule {
	s := poller.NewSchedule()
	s.Initial = 20 * time.Millisecond
	s.MaxGap = 200 * time.Millisecond
	return s
}

// readResults parses a JSONL results file into id → result, failing on any duplicate id.
func readResults(t *testing.T, path string) map[string]job.Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]job.Result{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r job.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("results line %q: %v", sc.Text(), err)
		}
		if _, dup := out[r.ID]; dup {
			t.Fatalf("row %s written twice", r.ID)
		}
		out[r.ID] = r
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAll asserts that every row appears once, succeeded, with the emulator's answer to its prompt.
func checkAll(t *testing.T, results map[string]job.Result, n int) {
	t.Helper()
	if len(results) != n {
		t.Fatalf("results: %d rows, want %d", len(results), n)
	}
	for i := range n {
		id := fmt.Sprintf("r%05d", i)
		r, ok := results[id]
		if !ok {
			t.Fatalf("row %s missing from results", id)
		}
		want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}})
		if r.Status != job.StatusSucceeded || r.Text != want {
			t.Fatalf("row %s: status %q text %q error %+v; want succeeded %q", id, r.Status, r.Text, r.Error, want)
		}
		if r.Usage == nil || r.Usage.TotalTokens != r.Usage.InputTokens+r.Usage.CompletionTokens || r.OperationID == "" {
			t.Fatalf("row %s: bad usage or operation id: %+v", id, r)
		}
	}
}

func TestRunEndToEnd(t *testing.T) {
	lat, err := emulator.ParseLatency("uniform:0s:60ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		write func(*testing.T, string, int) string
		rows  int
	}{
		{"jsonl", writeJSONL, 3000},
		{"csv", writeCSV, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 1})
			dir := t.TempDir()
			in := tc.write(t, dir, tc.rows)
			sum, err := job.New(config(dir, in, url)).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sum.Succeeded != tc.rows || sum.Failed != 0 || sum.Pending != 0 {
				t.Fatalf("summary %+v", sum)
			}
			checkAll(t, readResults(t, filepath.Join(dir, "out.jsonl")), tc.rows)
			st := srv.Stats()
			if st.Submissions != int64(tc.rows) || st.DuplicateSubmissions != 0 {
				t.Fatalf("emulator saw %d submissions (%d duplicates), want exactly %d", st.Submissions, st.DuplicateSubmissions, tc.rows)
			}
			status, err := job.ReadStatus(config(dir, in, url).Checkpoint, 10, 5000, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if status.Succeeded != tc.rows || status.Pending != 0 || status.InputTokens == 0 {
				t.Fatalf("status %+v", status)
			}
		})
	}
}

func TestRunAgainOnTheSameInput(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeJSONL(t, dir, 5)
	if _, err := job.New(config(dir, in, url)).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The same command on the same input: the run is complete, nothing is sent.
	sum, err := job.New(config(dir, in, url)).Run(context.Background())
	if err != nil || !sum.NothingToDo || sum.Succeeded != 5 || srv.Stats().Submissions != 5 {
		t.Fatalf("second run: %+v, %v (emulator: %d submissions)", sum, err, srv.Stats().Submissions)
	}
	// --force starts over: the earlier run is archived under its date, the rows are sent again.
	cfg := config(dir, in, url)
	cfg.Force = true
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if n := len(readResults(t, cfg.Output)); n != 5 || srv.Stats().Submissions != 10 {
		t.Fatalf("after --force: %d results, %d submissions", n, srv.Stats().Submissions)
	}
	archived, _ := filepath.Glob(filepath.Join(dir, "in.*-*-*.checkpoint.json"))
	results, _ := filepath.Glob(filepath.Join(dir, "out.*-*-*.jsonl"))
	if len(archived) != 1 || len(results) != 1 {
		t.Fatalf("archives: %v %v", archived, results)
	}
	st, err := job.ReadStatus(archived[0], 10, 5000, time.Now())
	if err != nil || st.Succeeded != 5 || st.Results != results[0] || len(st.Problems) > 0 {
		t.Fatalf("status of the archived run: %+v, %v", st, err)
	}
}

// TestResumeAfterInterrupt: a run stopped mid-way (the Ctrl-C path) resumes to every row once,
// with its journal as appended, and with a journal the writer compacts again and again during
// both processes (L records replacing the resolved rows' records as the rows go).
func TestResumeAfterInterrupt(t *testing.T) {
	for _, tc := range []struct {
		name        string
		compactFrom int64
	}{{"journal", 0}, {"compacted", 16 << 10}} {
		t.Run(tc.name, func(t *testing.T) { resumeAfterInterrupt(t, tc.compactFrom) })
	}
}

func resumeAfterInterrupt(t *testing.T, compactFrom int64) {
	lat, _ := emulator.ParseLatency("uniform:20ms:300ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 2})
	dir := t.TempDir()
	const n = 2000
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.SubmitRPS = 4000 // slow enough that the interruption lands mid-run
	cfg.CompactFrom = compactFrom

	ctx, cancel := context.WithCancel(context.Background())
	j := job.New(cfg)
	go func() {
		for j.Progress().Resolved < 300 {
			time.Sleep(2 * time.Millisecond)
		}
		cancel()
	}()
	sum, err := j.Run(ctx)
	if !errors.Is(err, job.ErrInterrupted) {
		t.Fatalf("interrupted run: err %v, summary %+v", err, sum)
	}
	if sum.Pending == 0 {
		t.Fatalf("the interruption came too late to test anything: %+v", sum)
	}
	mid, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if mid.Succeeded != sum.Succeeded || mid.InDoubt != 0 {
		t.Fatalf("status after interrupt %+v, summary %+v", mid, sum)
	}

	data, err := os.ReadFile(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	// A compacted journal's resolved rows are in L records, summed up by a K record, which the
	// resume's Open takes in their place.
	for _, kind := range []string{"\nL ", "\nK "} {
		if bytes.Contains(data, []byte(kind)) != (compactFrom > 0) {
			t.Fatalf("%q records in the interrupted run's journal: %v, with compaction from %d bytes", kind[1:2], !(compactFrom > 0), compactFrom)
		}
	}

	rcfg := config(dir, in, url)
	rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{}
	rcfg.CompactFrom = compactFrom
	sum2, err := job.New(rcfg).Resume(context.Background())
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if sum2.Succeeded != n || sum2.InDoubt != 0 {
		t.Fatalf("resume summary %+v", sum2)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	if st := srv.Stats(); st.Submissions != n || st.DuplicateSubmissions != 0 {
		t.Fatalf("emulator: %d submissions, %d duplicates; want %d and 0", st.Submissions, st.DuplicateSubmissions, n)
	}
}

func TestResumeOfChangedInputCollects(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:300ms:900ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 12})
	dir := t.TempDir()
	in := writeJSONL(t, dir, 200)
	cfg := config(dir, in, url)
	cfg.Tuning.SubmitRPS = 400
	ctx, cancel := context.WithCancel(context.Background())
	j := job.New(cfg)
	go func() {
		for j.Progress().Submitted < 100 {
			time.Sleep(2 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := j.Run(ctx); !errors.Is(err, job.ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	mid, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil || mid.Submitted == mid.Succeeded {
		t.Fatalf("status after the interruption: %+v %v (no operation pending: the test tested little)", mid, err)
	}
	// The input is re-exported: the rows the checkpoint refers to are gone.
	content := `{"id":"other","prompt":"another file now"}` + "\n"
	if err := os.WriteFile(in, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	submissions := srv.Stats().Submissions
	rcfg := config(dir, in, url)
	rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{}
	_, err = job.New(rcfg).Resume(context.Background())
	if !errors.Is(err, job.ErrInputChanged) || !strings.Contains(err.Error(), "collected") {
		t.Fatalf("resume over a changed input: %v", err)
	}
	after, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil || after.Succeeded != mid.Submitted || after.Submitted != mid.Submitted || srv.Stats().Submissions != submissions {
		t.Fatalf("after collection: %+v (was %+v), %d new submissions", after, mid, srv.Stats().Submissions-submissions)
	}
	results := readResults(t, cfg.Output)
	for id, r := range results {
		var i int
		fmt.Sscanf(id, "r%05d", &i)
		if want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}}); r.Text != want {
			t.Fatalf("collected row %s: %+v, want %q", id, r, want)
		}
	}
}

func TestFaultsEveryRowResolves(t *testing.T) {
	faults, err := emulator.ParseFaults("429=0.05,500=0.05,503=0.05,reset=0.03,garbage=0.03,op_error=0.05,fresh404=0.05,no_done=0.2,submit_lost=0.02,slow=0.02,slow_delay=50ms")
	if err != nil {
		t.Fatal(err)
	}
	lat, _ := emulator.ParseLatency("uniform:0s:50ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Faults: faults, Seed: 3})
	dir := t.TempDir()
	const n = 1500
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.MaxAttempts = 20
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	st := srv.Stats()
	t.Logf("faults injected: %v; duplicates %d, in doubt %d, resubmitted %d, throttled %d", st.Faults, st.DuplicateSubmissions, sum.InDoubt, sum.Resubmitted, sum.Throttled)
	var injected int64
	for _, v := range st.Faults {
		injected += v
	}
	if injected < 100 {
		t.Fatalf("only %d faults injected: the test does not test much", injected)
	}
	// A duplicate may only come from a submission we reported in doubt or resubmitted
	// (a failed operation is submitted again on purpose).
	if st.DuplicateSubmissions > sum.InDoubt+sum.Resubmitted {
		t.Fatalf("%d duplicate submissions but only %d in doubt + %d resubmitted reported", st.DuplicateSubmissions, sum.InDoubt, sum.Resubmitted)
	}
}

func TestPermanentOperationErrorFailsRowOnly(t *testing.T) {
	faults, _ := emulator.ParseFaults("op_perm_error=0.2")
	_, url := startEmulator(t, emulator.Config{Faults: faults, Seed: 4})
	dir := t.TempDir()
	const n = 200
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res := readResults(t, cfg.Output)
	failed := 0
	for _, r := range res {
		if r.Status == job.StatusFailed {
			failed++
			if r.Error == nil || r.Error.Kind != job.KindOpFailed || r.Error.Code != 3 || r.Error.Message == "" {
				t.Fatalf("failed row %+v: want an operation-failed error with code 3", r)
			}
		}
	}
	if len(res) != n || failed == 0 || failed == n || failed != sum.Failed {
		t.Fatalf("%d results, %d failed, summary %+v", len(res), failed, sum)
	}
}

// TestServiceAccountTokensExpiringFast runs with a service-account key whose IAM tokens live two
// seconds: the run must finish with no failed row and a token exchange per refresh, not per request.
func TestServiceAccountTokensExpiringFast(t *testing.T) {
	iam := emulator.NewIAM(2*time.Second, nil)
	key, err := iam.GenerateKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	lat, _ := emulator.ParseLatency("uniform:100ms:1s")
	srv := emulator.New(emulator.Config{Latency: lat, IAM: iam, Seed: 5})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	sa, err := auth.NewServiceAccount(key, url, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const n = 2000
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Credentials = sa
	cfg.Tuning.SubmitRPS = 400 // about five seconds of submissions: several token lifetimes
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	ex := iam.Exchanges()
	t.Logf("%d rows in %s with %d token exchanges; %d unauthorized answers", n, sum.Elapsed, ex, srv.Stats().Unauthorized)
	if ex < 2 || ex > int64(sum.Elapsed/time.Second)+5 {
		t.Fatalf("%d token exchanges in %s: want a few (one per refresh), not one per request", ex, sum.Elapsed)
	}
	data, _ := os.ReadFile(cfg.Checkpoint)
	res, _ := os.ReadFile(cfg.Output)
	for _, secret := range []string{"PRIVATE KEY", "t1."} {
		if strings.Contains(string(data), secret) || strings.Contains(string(res), secret) {
			t.Fatalf("%q found in the checkpoint or results", secret)
		}
	}
}

func TestRetryFailedLeavesOneLinePerRow(t *testing.T) {
	faults, _ := emulator.ParseFaults("op_perm_error=0.3")
	srv, url := startEmulator(t, emulator.Config{Faults: faults, Seed: 8})
	dir := t.TempDir()
	const n = 300
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed == 0 {
		t.Fatalf("no row failed: %+v", sum)
	}
	srv.SetFaults(emulator.Faults{}) // the cause is fixed
	rcfg := cfg
	rcfg.RetryFailed = true
	sum2, err := job.New(rcfg).Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Succeeded != n || sum2.Submissions != int64(sum.Failed) {
		t.Fatalf("retry: %+v; want %d succeeded after %d resubmissions", sum2, n, sum.Failed)
	}
	checkAll(t, readResults(t, cfg.Output), n) // fails on a row written twice
}

// A row that used all its attempts gets all of them again with resume --retry-failed (it once got
// a single try: its count carried over).
func TestRetryFailedResetsAttempts(t *testing.T) {
	always, _ := emulator.ParseFaults("op_error=1") // a transient operation error, every time
	_, url := startEmulator(t, emulator.Config{Faults: always, Seed: 3})
	dir := t.TempDir()
	const n, attempts = 20, 3
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.MaxAttempts = attempts
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.Failed != n || sum.Submissions != n*attempts {
		t.Fatalf("run: %v %+v; want %d rows failed after %d submissions each", err, sum, n, attempts)
	}
	rcfg := cfg
	rcfg.RetryFailed = true
	sum2, err := job.New(rcfg).Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Failed != n || sum2.Submissions != n*attempts {
		t.Fatalf("retry: %d submissions for %d failed rows, want %d (%d each)", sum2.Submissions, sum2.Failed, n*attempts, attempts)
	}
	for id, r := range readResults(t, cfg.Output) {
		if r.Attempts != attempts {
			t.Fatalf("row %s: %d attempts after the retry, want %d", id, r.Attempts, attempts)
		}
	}
}

func TestOrderInput(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:0s:200ms")
	_, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 9})
	dir := t.TempDir()
	const n = 500
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Settings.Order = job.OrderInput
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.Output)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		var r job.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.ID != fmt.Sprintf("r%05d", i) {
			t.Fatalf("line %d is row %q (%v), want input order", i+1, r.ID, err)
		}
	}
	checkAll(t, readResults(t, cfg.Output), n)
}

// TestUnavailableStopsResumable: when every submission keeps failing, the run stops (rather than
// failing every row) and a resume once the API is back finishes the work.
func TestUnavailableStopsResumable(t *testing.T) {
	down, _ := emulator.ParseFaults("503=1")
	srv, url := startEmulator(t, emulator.Config{Faults: down})
	dir := t.TempDir()
	const n = 200
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.MaxAttempts = 2
	cfg.Tuning.Concurrency = 4
	sum, err := job.New(cfg).Run(context.Background())
	if !errors.Is(err, job.ErrUnavailable) {
		t.Fatalf("run against a failing API: %v, %+v", err, sum)
	}
	if sum.Failed != 0 || sum.Pending != n {
		t.Fatalf("rows were failed instead of left for resume: %+v", sum)
	}
	srv.SetFaults(emulator.Faults{})
	sum2, err := job.New(cfg).Resume(context.Background())
	if err != nil || sum2.Succeeded != n {
		t.Fatalf("resume: %v %+v", err, sum2)
	}
	checkAll(t, readResults(t, cfg.Output), n)
}

func TestCSVResults(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	const n = 50
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Output = filepath.Join(dir, "out.csv")
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(cfg.Output)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := "id,status,text,alternative_status,input_tokens,completion_tokens,total_tokens,model_version,operation_id,attempts,error_kind,error_code,error_message,cached,cached_at,deduplicated_from,error_request_id,truncated"
	if len(records) != n+1 || strings.Join(records[0], ",") != wantHeader {
		t.Fatalf("%d records, header %q", len(records), records[0])
	}
	seen := map[string]bool{}
	for _, r := range records[1:] {
		var i int
		fmt.Sscanf(r[0], "r%05d", &i)
		want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}})
		if seen[r[0]] || r[1] != job.StatusSucceeded || r[2] != want || r[8] == "" {
			t.Fatalf("record %q: duplicate %v or wrong content (want text %q)", r, seen[r[0]], want)
		}
		seen[r[0]] = true
	}
}

// TestRejectedRowFailsAndRunGoesOn: a row the API refuses with a 400 (here a prompt over the
// emulator's input-token limit, which our validation does not know) is recorded as failed with
// the API's message and request id, and every other row succeeds.
func TestRejectedRowFailsAndRunGoesOn(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writePrompts(t, dir, 10, func(i int) string {
		if i == 4 {
			return strings.Repeat("word ", 33000)
		}
		return prompt(i)
	})
	cfg := config(dir, in, url)
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res := readResults(t, cfg.Output)
	bad := res["r00004"]
	if sum.Succeeded != 9 || sum.Failed != 1 || bad.Status != job.StatusFailed || bad.Error == nil ||
		bad.Error.Kind != job.KindInvalid || bad.Error.Code != 3 || !strings.Contains(bad.Error.Message, "input tokens") ||
		bad.Error.RequestID == "" || bad.Attempts != 1 {
		t.Fatalf("summary %+v; rejected row %+v %+v", sum, bad, bad.Error)
	}
	if st := srv.Stats(); st.Submissions != 10 {
		t.Fatalf("the rejected row was sent %d times in all submissions (%d), want once", st.Submissions-9, st.Submissions)
	}
}

func TestRunOverADamagedCheckpoint(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeJSONL(t, dir, 4)
	cfg := config(dir, in, url)
	if err := os.WriteFile(cfg.Checkpoint, []byte("not a checkpoint\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := job.New(cfg).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("run over a damaged checkpoint: %v, want a refusal that names --force", err)
	}
	cfg.Force = true
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatalf("--force over a damaged checkpoint: %v", err)
	}
	checkAll(t, readResults(t, cfg.Output), 4)
}

// With no quota the ETA follows the run's own pace (it once said a few milliseconds with most of
// the rows left: the quota was all it knew).
func TestETAWithoutQuota(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	const n = 4000
	cfg := config(dir, writeJSONL(t, dir, n), url)
	cfg.Tuning.Concurrency = 4
	cfg.Tuning.SubmitRPS, cfg.Tuning.SubmitPerHour, cfg.Tuning.PollRPS = 0, 0, 0
	j := job.New(cfg)
	done := make(chan error, 1)
	go func() { _, err := j.Run(context.Background()); done <- err }()
	var best job.Progress
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			break wait
		case <-tick.C:
			if p := j.Progress(); p.Submitted > n/4 && p.Submitted < n*3/4 && best.Rows == 0 {
				best = p
			}
		}
	}
	if best.Rows == 0 {
		t.Skip("the run was too fast to be seen half way")
	}
	if best.ETA < 100*time.Millisecond {
		t.Fatalf("eta %v with %d of %d rows submitted and no quota", best.ETA, best.Submitted, best.Rows)
	}
}

// A dry run counts the rows that repeat an earlier row's request as duplicates, not as rows to
// submit.
func TestDryRunDuplicates(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "{\"id\":\"r%d\",\"prompt\":%q}\n", i, prompt(i%5))
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config(dir, in, "http://127.0.0.1:9")
	pl, err := job.DryRun(context.Background(), in, cfg.Settings, nil, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Duplicates != 5 || pl.ToSubmit != 5 || pl.CacheHits != 0 {
		t.Fatalf("plan %+v: want 5 duplicates and 5 rows to submit", pl)
	}
}
