package job_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// answerRow is one row of an input for the answer-status tests.
type answerRow struct {
	id, prompt string
	maxTokens  int64 // 0: none
}

// answerRows are rows whose answers the emulator finishes as FINAL, TRUNCATED_FINAL (maxTokens
// below the answer's length) and CONTENT_FILTER (the trigger in the prompt).
func answerRows() []answerRow {
	return []answerRow{
		{id: "plain1", prompt: "What is the capital of France?"},
		{id: "plain2", prompt: "Name a prime number."},
		{id: "short1", prompt: "Describe the sea in detail.", maxTokens: 2},
		{id: "short2", prompt: "Describe the sky in detail.", maxTokens: 4},
		{id: "filtered1", prompt: "Something sensitive " + emulator.ContentFilterTrigger},
		{id: "filtered2", prompt: emulator.ContentFilterTrigger + " again", maxTokens: 1},
	}
}

func writeAnswerRows(t *testing.T, path string, rows []answerRow) string {
	t.Helper()
	var b strings.Builder
	for _, r := range rows {
		m := map[string]any{"id": r.id, "prompt": r.prompt}
		if r.maxTokens > 0 {
			m["completionOptions"] = map[string]any{"maxTokens": fmt.Sprint(r.maxTokens)}
		}
		line, _ := json.Marshal(m)
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkAnswerStatuses asserts the result of every row of answerRows: content-filtered rows fail
// with kind content-filter and keep the text (or succeed when accepted); truncated rows succeed
// marked truncated with the cut answer.
func checkAnswerStatuses(t *testing.T, res map[string]job.Result, rows []answerRow, accepted bool) {
	t.Helper()
	if len(res) != len(rows) {
		t.Fatalf("%d results, want %d", len(res), len(rows))
	}
	for _, row := range rows {
		r := res[row.id]
		text, status, _ := emulator.Completion(modelURI, []emulator.Message{{Role: "user", Text: row.prompt}}, row.maxTokens)
		if r.Text != text || r.AlternativeStatus != status {
			t.Fatalf("row %s: text %q status %s; want %q %s", row.id, r.Text, r.AlternativeStatus, text, status)
		}
		switch status {
		case emulator.StatusContentFilter:
			if accepted {
				if r.Status != job.StatusSucceeded || r.Error != nil || r.Truncated {
					t.Fatalf("accepted filtered row %s: %+v", row.id, r)
				}
				continue
			}
			if r.Status != job.StatusFailed || r.Error == nil || r.Error.Kind != job.KindContentFilter ||
				!strings.Contains(r.Error.Message, "--accept-filtered") || r.OperationID == "" || r.Truncated {
				t.Fatalf("filtered row %s: %+v %+v; want failed with kind content-filter", row.id, r, r.Error)
			}
		case emulator.StatusTruncatedFinal:
			if r.Status != job.StatusSucceeded || !r.Truncated || r.Error != nil || r.Usage == nil || r.Usage.CompletionTokens != row.maxTokens {
				t.Fatalf("truncated row %s: %+v; want succeeded, truncated, %d completion tokens", row.id, r, row.maxTokens)
			}
		default:
			if r.Status != job.StatusSucceeded || r.Truncated || r.Error != nil {
				t.Fatalf("row %s: %+v", row.id, r)
			}
		}
	}
}

func TestAnswerStatuses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		accept     bool
		wantFailed int
	}{
		{"filtered rows fail", false, 2},
		{"--accept-filtered keeps them", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{Seed: 11})
			dir := t.TempDir()
			rows := answerRows()
			in := writeAnswerRows(t, filepath.Join(dir, "in.jsonl"), rows)
			cfg := config(dir, in, url)
			cfg.Settings.AcceptFiltered = tc.accept
			sum, err := job.New(cfg).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkAnswerStatuses(t, readResults(t, cfg.Output), rows, tc.accept)
			wantKinds := map[string]int(nil)
			if tc.wantFailed > 0 {
				wantKinds = map[string]int{job.KindContentFilter: tc.wantFailed}
			}
			if sum.Failed != tc.wantFailed || sum.Succeeded != len(rows)-tc.wantFailed || sum.ContentFiltered != 2 || sum.Truncated != 2 ||
				fmt.Sprint(sum.FailedByKind) != fmt.Sprint(wantKinds) {
				t.Fatalf("summary %+v; want %d failed, 2 content filtered, 2 truncated", sum, tc.wantFailed)
			}
			st, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
			if err != nil || st.Failed != tc.wantFailed || st.ContentFiltered != 2 || st.Truncated != 2 {
				t.Fatalf("status %+v, %v", st, err)
			}
			if es := srv.Stats(); es.ContentFiltered != 2 || es.Truncated != 2 {
				t.Fatalf("emulator stats %+v", es)
			}
		})
	}
}

// TestAcceptFilteredKeptByResume: --accept-filtered is a setting of the run, journaled in the
// checkpoint: a resume without it still accepts the filtered answers of the run.
func TestAcceptFilteredKeptByResume(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:20ms:200ms")
	faults, _ := emulator.ParseFaults("content_filter=0.5")
	_, url := startEmulator(t, emulator.Config{Latency: lat, Faults: faults, Seed: 12})
	dir := t.TempDir()
	const n = 1000
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Settings.AcceptFiltered = true
	cfg.Tuning.SubmitRPS = 3000

	ctx, cancel := context.WithCancel(context.Background())
	j := job.New(cfg)
	go func() {
		for j.Progress().Resolved < 100 {
			time.Sleep(2 * time.Millisecond)
		}
		cancel()
	}()
	sum, err := j.Run(ctx)
	if !errors.Is(err, job.ErrInterrupted) || sum.Pending == 0 {
		t.Fatalf("interrupted run: err %v, summary %+v", err, sum)
	}
	rcfg := config(dir, in, url)
	rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{} // no --accept-filtered on resume
	sum2, err := job.New(rcfg).Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Succeeded != n || sum2.Failed != 0 || sum2.ContentFiltered == 0 {
		t.Fatalf("resume: %+v; want every row succeeded, some of them filtered", sum2)
	}
	filtered := 0
	for id, r := range readResults(t, cfg.Output) {
		if r.AlternativeStatus == emulator.StatusContentFilter {
			filtered++
			if r.Status != job.StatusSucceeded || r.Text != emulator.FilteredAnswer {
				t.Fatalf("row %s: %+v", id, r)
			}
		}
	}
	if int64(filtered) < sum2.ContentFiltered || filtered == 0 {
		t.Fatalf("%d filtered rows in the results, resume counted %d", filtered, sum2.ContentFiltered)
	}
}

// TestRetryFailedResubmitsFilteredRows: content-filtered rows are failed rows, which resume
// --retry-failed submits again.
func TestRetryFailedResubmitsFilteredRows(t *testing.T) {
	faults, _ := emulator.ParseFaults("content_filter=0.3")
	srv, url := startEmulator(t, emulator.Config{Faults: faults, Seed: 13})
	dir := t.TempDir()
	const n = 200
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed == 0 || sum.FailedByKind[job.KindContentFilter] != sum.Failed || sum.ContentFiltered != int64(sum.Failed) {
		t.Fatalf("run: %+v; want content-filtered failures", sum)
	}
	srv.SetFaults(emulator.Faults{})
	rcfg := cfg
	rcfg.RetryFailed = true
	sum2, err := job.New(rcfg).Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Succeeded != n || sum2.Submissions != int64(sum.Failed) || sum2.ContentFiltered != 0 {
		t.Fatalf("retry: %+v; want %d succeeded after %d resubmissions", sum2, n, sum.Failed)
	}
	checkAll(t, readResults(t, cfg.Output), n)
}

// TestCacheAndFilteredAnswers: a content-filtered answer is stored in the result cache only
// under --accept-filtered, and answers a row from the cache only under it; a truncated answer
// is a success that the cache returns still marked truncated.
func TestCacheAndFilteredAnswers(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{Seed: 14})
	dir := t.TempDir()
	c := openCache(t, dir)
	rows := answerRows()
	night := func(name string, accept bool) (job.Summary, map[string]job.Result) {
		t.Helper()
		in := writeAnswerRows(t, filepath.Join(dir, name+".jsonl"), rows)
		cfg := nightConfig(dir, in, url, c)
		cfg.Settings.AcceptFiltered = accept
		sum, err := job.New(cfg).Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		res := readResults(t, cfg.Output)
		checkAnswerStatuses(t, res, rows, accept)
		return sum, res
	}
	ops := func(row answerRow) int {
		return srv.OperationsFor(modelURI, []emulator.Message{{Role: "user", Text: row.prompt}})
	}

	// 1: without --accept-filtered the filtered answers are failures, not cached.
	night("n1", false)
	// 2: the same requests again: the cache answers the others; the filtered rows are sent again.
	sum, res := night("n2", false)
	for _, row := range rows {
		r := res[row.id]
		filtered := strings.HasPrefix(row.id, "filtered")
		if want := map[bool]int{true: 2, false: 1}[filtered]; ops(row) != want || r.Cached == filtered {
			t.Fatalf("night 2, row %s: %d operations, cached %v; want %d", row.id, ops(row), r.Cached, want)
		}
	}
	if sum.CacheHits != 4 || sum.Submissions != 2 || sum.Truncated != 2 || sum.ContentFiltered != 2 {
		t.Fatalf("night 2: %+v", sum)
	}
	// 3: with --accept-filtered they are sent again, accepted and stored ...
	night("n3", true)
	// 4: ... and answer every row from the cache under --accept-filtered,
	sum, res = night("n4", true)
	for _, row := range rows {
		if !res[row.id].Cached || ops(row) != map[bool]int{true: 3, false: 1}[strings.HasPrefix(row.id, "filtered")] {
			t.Fatalf("night 4, row %s: %+v after %d operations; want a cache hit", row.id, res[row.id], ops(row))
		}
	}
	if sum.CacheHits != int64(len(rows)) || sum.Submissions != 0 || sum.ContentFiltered != 2 || sum.Truncated != 2 {
		t.Fatalf("night 4: %+v", sum)
	}
	// 5: but not without it: a stored filtered answer would fail the row, so the row is sent.
	sum, _ = night("n5", false)
	if sum.CacheHits != 4 || sum.Submissions != 2 || sum.Failed != 2 {
		t.Fatalf("night 5: %+v", sum)
	}
}

// TestCSVResultsCarryRequestID: the CSV flattening of error.request_id.
func TestCSVResultsCarryRequestID(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	huge, _ := json.Marshal(map[string]string{"id": "huge", "prompt": strings.Repeat("word ", 33000)}) // over the input-token limit: a 400
	if err := os.WriteFile(in, append(append([]byte(`{"id": "ok", "prompt": "hi"}`+"\n"), huge...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config(dir, in, url)
	cfg.Output = filepath.Join(dir, "out.csv")
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	records := readCSV(t, cfg.Output)
	col := map[string]int{}
	for i, name := range records[0] {
		col[name] = i
	}
	reqCol, ok := col["error_request_id"]
	if !ok || len(records) != 3 {
		t.Fatalf("header %q, %d records", records[0], len(records))
	}
	for _, rec := range records[1:] {
		switch rec[col["id"]] {
		case "ok":
			if rec[reqCol] != "" {
				t.Fatalf("succeeded row with a request id: %q", rec)
			}
		case "huge":
			// The emulator's 400 message names its request id, as the real gateway's does.
			m := regexp.MustCompile(`&request_id=([0-9a-f-]+)&`).FindStringSubmatch(rec[col["error_message"]])
			if rec[col["error_kind"]] != job.KindInvalid || m == nil || rec[reqCol] != m[1] {
				t.Fatalf("rejected row %q: want error_request_id = the request id of the message", rec)
			}
		}
	}
}

// readCSV reads a CSV results file strictly: every record must have the header's fields.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	records, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	return records
}

// oldCSVHeader is the header of CSV results written before error_request_id and truncated.
const oldCSVHeader = "id,status,text,alternative_status,input_tokens,completion_tokens,total_tokens,model_version,operation_id,attempts,error_kind,error_code,error_message,cached,cached_at,deduplicated_from\n"

// TestResumeOfAnOldCSVRun: a CSV results file begun by a batchgpt with fewer columns goes on in
// its own columns, so it stays one well-formed table.
func TestResumeOfAnOldCSVRun(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	const n = 20
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Output = filepath.Join(dir, "out.csv")
	// The checkpoint of a run that an older batchgpt started and that never got to write a result.
	data, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	settings, _ := json.Marshal(cfg.Settings)
	w, err := store.Create(cfg.Checkpoint, store.Header{Input: in, InputSHA256: hex.EncodeToString(sum[:]), InputSize: int64(len(data)),
		Rows: n, Results: cfg.Output, ResultsFormat: job.FormatCSV, Settings: settings}, []byte(oldCSVHeader), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rcfg := cfg
	rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{}
	if _, err := job.New(rcfg).Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	records := readCSV(t, cfg.Output)
	if len(records) != n+1 || strings.Join(records[0], ",")+"\n" != oldCSVHeader {
		t.Fatalf("%d records, header %q", len(records), records[0])
	}
	st, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil || st.Succeeded != n || st.OutputTokens == 0 || len(st.Problems) > 0 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// TestStatusCountsOnlyTheLatestLineOfARow: until the results are finalized, a row resolved
// again (resume --retry-failed) has two lines; status counts the latest only.
func TestStatusCountsOnlyTheLatestLineOfARow(t *testing.T) {
	first := job.Result{ID: "a", Status: job.StatusFailed, Text: "filtered\nanswer", AlternativeStatus: emulator.StatusContentFilter,
		Usage: &job.Usage{InputTokens: 10, CompletionTokens: 5, TotalTokens: 15}, OperationID: "op1", Attempts: 1,
		Error: &job.ResultError{Kind: job.KindContentFilter, Message: "stopped"}}
	again := job.Result{ID: "a", Status: job.StatusSucceeded, Text: "an answer", AlternativeStatus: emulator.StatusTruncatedFinal,
		Truncated: true, Usage: &job.Usage{InputTokens: 10, CompletionTokens: 7, TotalTokens: 17}, OperationID: "op2", Attempts: 2}
	other := job.Result{ID: "b", Status: job.StatusSucceeded, Text: "b's answer", AlternativeStatus: emulator.StatusFinal,
		Usage: &job.Usage{InputTokens: 1, CompletionTokens: 2, TotalTokens: 3}, OperationID: "op3", Attempts: 1}
	for _, format := range []string{job.FormatJSONL, job.FormatCSV} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			results := filepath.Join(dir, "out."+format)
			pre, line := []byte(nil), func(r job.Result) []byte { b, _ := json.Marshal(r); return append(b, '\n') }
			if format == job.FormatCSV {
				pre = []byte(oldCSVHeader) // the columns are read from the header, whatever they are
				line = func(r job.Result) []byte {
					var b bytes.Buffer
					w := csv.NewWriter(&b)
					w.Write([]string{r.ID, r.Status, r.Text, r.AlternativeStatus, fmt.Sprint(r.Usage.InputTokens), fmt.Sprint(r.Usage.CompletionTokens),
						fmt.Sprint(r.Usage.TotalTokens), "", r.OperationID, fmt.Sprint(r.Attempts), kindOf(r), "0", "", "false", "", ""})
					w.Flush()
					return b.Bytes()
				}
			}
			w, err := store.Create(filepath.Join(dir, "cp.json"), store.Header{Input: "/nonexistent", Rows: 2, Results: results, ResultsFormat: format}, pre, false)
			if err != nil {
				t.Fatal(err)
			}
			steps := []error{
				w.ResultThen(0, true, line(first), nil),
				w.ResultThen(1, false, line(other), nil),
				w.Reopen(0),
				w.ResultThen(0, false, line(again), nil),
				w.Close(),
			}
			if err := errors.Join(steps...); err != nil {
				t.Fatal(err)
			}
			st, err := job.ReadStatus(filepath.Join(dir, "cp.json"), 10, 5000, time.Now())
			if err != nil || len(st.Problems) > 0 {
				t.Fatalf("status: %+v, %v", st, err)
			}
			if st.Succeeded != 2 || st.Failed != 0 || st.InputTokens != 11 || st.OutputTokens != 9 || st.ContentFiltered != 0 {
				t.Fatalf("status %+v; want the tokens of the latest lines only: 11 in, 9 out, nothing filtered", st)
			}
			if format == job.FormatJSONL && st.Truncated != 1 {
				t.Fatalf("status %+v; want 1 truncated", st)
			}
		})
	}
}

func kindOf(r job.Result) string {
	if r.Error == nil {
		return ""
	}
	return r.Error.Kind
}
