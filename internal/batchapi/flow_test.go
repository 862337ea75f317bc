package batchapi

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
)

// rowsOf makes n requests; every 50th row asks the same as row 0, so that the join meets
// identical requests.
func rowsOf(n int) [][]Message {
	rows := make([][]Message, n)
	for i := range rows {
		q := fmt.Sprintf("question number %d, with a <tag> & a quote \"q\"", i+1)
		if i%50 == 0 {
			q = "the same question again"
		}
		rows[i] = []Message{{Role: "system", Text: "be brief"}, {Role: "user", Text: q}}
	}
	rows[1] = append(rows[1], Message{Role: "assistant", Text: "an earlier answer"}, Message{Role: "user", Text: "и ещё вопрос"})
	return rows
}

func encode(t *testing.T, rows [][]Message) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, r := range rows {
		if err := EncodeLine(&b, r); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func expected(msgs []Message, maxTokens int64) string {
	em := make([]emulator.Message, len(msgs))
	for i, m := range msgs {
		em[i] = emulator.Message(m)
	}
	text, _, _ := emulator.Completion(testModel, em, maxTokens)
	return text
}

func TestFullFlow(t *testing.T) {
	const n, partSize, maxTokens = 1000, 16 << 10, 0
	e := start(t, batchmode.Config{}, func(c *Config) { c.PartSize = partSize })
	ctx := testCtx(t)
	rows := rowsOf(n)
	body := encode(t, rows)
	labels := map[string]string{"batchgpt-run": "flow"}

	dsID, err := e.c.CreateDataset(ctx, "flow", labels)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Upload(ctx, dsID, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	wantParts := (len(body) + partSize - 1) / partSize
	if got := e.http.count("PUT", "/upload/"+dsID+"/"); wantParts < 2 || got != wantParts {
		t.Errorf("%d part PUTs for %d bytes in parts of %d, want %d", got, len(body), partSize, wantParts)
	}
	v, err := e.c.Validate(ctx, dsID, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Valid || len(v.Errors) > 0 || v.ValidRows != n || v.TotalRows != n {
		t.Fatalf("validation: %+v", v)
	}
	ds, err := e.c.DescribeDataset(ctx, dsID)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Status != "READY" || ds.Rows != n || ds.Labels["batchgpt-run"] != "flow" || ds.TaskType != TaskTypeRequests {
		t.Fatalf("dataset after validation: %+v", ds)
	}

	taskID, opID, err := e.c.StartTask(ctx, TaskSpec{ModelURI: testModel, MaxTokens: maxTokens, SourceDatasetID: dsID})
	if err != nil {
		t.Fatal(err)
	}
	if taskID == "" || opID == "" {
		t.Fatalf("task %q, operation %q", taskID, opID)
	}
	tk := e.waitTask(t, taskID, ended)
	batches := int64((n + batchmode.DefaultBatchSize - 1) / batchmode.DefaultBatchSize)
	if tk.Status != TaskCompleted || tk.ResultDatasetID == "" || tk.SourceDatasetID != dsID || tk.OperationID != opID ||
		tk.CompletedBatches != batches || tk.TotalBatches != batches || tk.StatusCode != 0 || tk.FinishedAt.IsZero() {
		t.Fatalf("task: %+v", tk)
	}

	// The join: each key's input lines in order; each result row takes the next line of its key.
	lines := map[[32]byte][]int{}
	for i, r := range rows {
		k := RequestKey(r)
		lines[k] = append(lines[k], i)
	}
	answers := make([]string, n)
	got := 0
	err = e.c.Results(ctx, tk.ResultDatasetID, func(r ResultRow) error {
		if !slices.Equal(r.Request, rows[got]) {
			return fmt.Errorf("result row %d: request %v, want the input's %v (the emulator keeps the order)", got+1, r.Request, rows[got])
		}
		got++
		k := RequestKey(r.Request)
		if len(lines[k]) == 0 {
			return fmt.Errorf("result row %d: no input line left for its request %v", got, r.Request)
		}
		answers[lines[k][0]], lines[k] = r.Response, lines[k][1:]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("%d result rows, want %d", got, n)
	}
	for i, r := range rows {
		if want := expected(r, maxTokens); answers[i] != want {
			t.Fatalf("line %d: answer %q, want %q", i+1, answers[i], want)
		}
	}
	if got := e.http.count("GET", "/download/"+tk.ResultDatasetID+"/"); got != int(batches) {
		t.Errorf("%d result files downloaded, want %d", got, batches)
	}
	if e.http.withAuth != 0 {
		t.Errorf("%d presigned requests carried an Authorization header", e.http.withAuth)
	}
	if left, err := os.ReadDir(e.tmp); err != nil || len(left) != 0 {
		t.Errorf("temporary files left: %v %v", left, err)
	}

	found, err := e.c.FindTasks(ctx, dsID)
	if err != nil || len(found) != 1 || found[0].ID != taskID {
		t.Fatalf("find tasks of %s: %+v %v", dsID, found, err)
	}
	if err := e.c.DeleteTask(ctx, taskID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{tk.ResultDatasetID, dsID} {
		if err := e.c.DeleteDataset(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if left, err := e.c.FindDatasets(ctx, nil); err != nil || len(left) != 0 {
		t.Errorf("datasets after delete: %+v %v", left, err)
	}
}

// A stop asked by fn ends Results with fn's error, and the temporary file goes all the same.
func TestResultsStop(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 3}, nil)
	ctx := testCtx(t)
	dsID := e.ready(t, rowsOf(7))
	tk := e.run(t, dsID)
	stop := errors.New("enough")
	rows := 0
	err := e.c.Results(ctx, tk.ResultDatasetID, func(ResultRow) error {
		if rows++; rows == 4 {
			return stop
		}
		return nil
	})
	if err != stop || rows != 4 {
		t.Errorf("Results: %v after %d rows, want fn's own error after 4", err, rows)
	}
	if left, _ := os.ReadDir(e.tmp); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// ready creates, uploads and validates a dataset of rows.
func (e *env) ready(t *testing.T, rows [][]Message) string {
	t.Helper()
	ctx := testCtx(t)
	body := encode(t, rows)
	id, err := e.c.CreateDataset(ctx, "rows", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Upload(ctx, id, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if v, err := e.c.Validate(ctx, id, time.Millisecond); err != nil || !v.Valid {
		t.Fatalf("validation: %+v %v", v, err)
	}
	return id
}

func TestValidationErrors(t *testing.T) {
	e := start(t, batchmode.Config{Faults: batchmode.Faults{InvalidLines: []int64{3, 7}}}, nil)
	ctx := testCtx(t)
	lines := strings.Split(strings.TrimSuffix(string(encode(t, rowsOf(8))), "\n"), "\n")
	lines[4] = `{"request":` // line 5: not JSON
	body := []byte(strings.Join(lines, "\n") + "\n")
	id, err := e.c.CreateDataset(ctx, "invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Upload(ctx, id, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	v, err := e.c.Validate(ctx, id, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int64{}
	for _, ve := range v.Errors {
		got[ve.Name] = append(got[ve.Name], ve.Lines...)
	}
	want := map[string][]int64{batchmode.ErrEmulatedFault: {3, 7}, batchmode.ErrInvalidJSON: {5}}
	if v.Valid || fmt.Sprint(got) != fmt.Sprint(want) || v.ValidRows != 5 || v.TotalRows != 8 {
		t.Fatalf("validation: %+v, errors by line %v, want %v", v, got, want)
	}
	ds, err := e.c.DescribeDataset(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Status != "INVALID" || len(ds.ValidationErrors) != 2 || !slices.Equal(ds.ValidationErrors[0].Lines, v.Errors[0].Lines) {
		t.Errorf("invalid dataset: %+v", ds)
	}
	// A task over an invalid dataset is refused: the server did nothing, so the outcome is known.
	_, _, err = e.c.StartTask(ctx, TaskSpec{ModelURI: testModel, SourceDatasetID: id})
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("task over an invalid dataset: %v, want a refusal", err)
	}
}
