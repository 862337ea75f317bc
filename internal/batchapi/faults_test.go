package batchapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
)

func TestReadsRetryUnavailable(t *testing.T) {
	e := start(t, batchmode.Config{Seed: 7}, nil)
	ctx := testCtx(t)
	id, err := e.c.CreateDataset(ctx, "r", map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	// A third of the calls fail: every read still succeeds within its eight tries (all eight
	// fail for one read in 15,000; the seed makes the draws the same on every run).
	e.srv.SetFaults(batchmode.Faults{UnavailableRate: 0.3})
	for i := range 30 {
		if _, err := e.c.DescribeDataset(ctx, id); err != nil {
			t.Fatalf("describe %d: %v", i, err)
		}
		if found, err := e.c.FindDatasets(ctx, map[string]string{"k": "v"}); err != nil || len(found) != 1 {
			t.Fatalf("find %d: %v %v", i, found, err)
		}
	}
	// Every call fails: a read gives up with the code; a write says its outcome is unknown.
	e.srv.SetFaults(batchmode.Faults{UnavailableRate: 1})
	if _, err := e.c.DescribeDataset(ctx, id); status.Code(err) != codes.Unavailable || errors.Is(err, ErrOutcomeUnknown) ||
		!strings.Contains(err.Error(), "8 tries") {
		t.Errorf("describe, always unavailable: %v", err)
	}
	_, err = e.c.CreateDataset(ctx, "w", nil)
	if !errors.Is(err, ErrOutcomeUnknown) || status.Code(err) != codes.Unavailable {
		t.Errorf("create, unavailable: %v, want ErrOutcomeUnknown wrapping UNAVAILABLE", err)
	}
	_, _, err = e.c.StartTask(ctx, TaskSpec{ModelURI: testModel, SourceDatasetID: id})
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("start task, unavailable: %v, want ErrOutcomeUnknown", err)
	}
	e.srv.SetFaults(batchmode.Faults{})
	// The failed create was refused before it acted (the emulator's fault comes first): only
	// the first dataset exists, as a lookup by labels would tell the caller.
	if found, err := e.c.FindDatasets(ctx, nil); err != nil || len(found) != 1 {
		t.Errorf("datasets: %+v %v", found, err)
	}
}

func TestUnauthenticatedRefreshesOnce(t *testing.T) {
	src := &source{stale: "Bearer t1.stale-secret", fresh: "Bearer t1.fresh-secret"}
	e := start(t, batchmode.Config{Authorize: bearerOnly("t1.fresh-secret")}, func(c *Config) { c.Credentials = src })
	ctx := testCtx(t)
	// A write too: the refused call did nothing, so sending it again is safe.
	id, err := e.c.CreateDataset(ctx, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.DescribeDataset(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := src.count(); n != 1 {
		t.Errorf("%d invalidations, want 1", n)
	}

	// A source that cannot refresh: one invalidation, one more try, then the error, which names
	// no token.
	stuck := &source{stale: "Bearer t1.stale-secret"}
	e2 := start(t, batchmode.Config{Authorize: bearerOnly("t1.fresh-secret")}, func(c *Config) { c.Credentials = stuck })
	_, err = e2.c.DescribeDataset(ctx, "fdsnope")
	if status.Code(err) != codes.Unauthenticated || stuck.count() != 1 {
		t.Errorf("stuck source: %v after %d invalidations, want UNAUTHENTICATED after 1", err, stuck.count())
	}
	_, err = e2.c.CreateDataset(ctx, "b", nil)
	if status.Code(err) != codes.Unauthenticated || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("stuck source, create: %v, want a plain UNAUTHENTICATED", err)
	}
	if err != nil && (strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "[REDACTED]")) {
		t.Errorf("the error names the token: %v", err)
	}
}

// failingSource cannot give a header at all.
type failingSource struct{}

func (failingSource) Authorization(context.Context) (string, error) {
	return "", errors.New("no token yet")
}
func (failingSource) Invalidate(string) {}

func TestCredentialsFailureSendsNothing(t *testing.T) {
	e := start(t, batchmode.Config{}, func(c *Config) { c.Credentials = failingSource{} })
	_, err := e.c.CreateDataset(testCtx(t), "x", nil)
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("create without credentials: %v, want a credentials error whose outcome is known", err)
	}
}

func TestDialRefuses(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"plaintext to the real API", Config{Endpoint: "llm.api.cloud.yandex.net:443", Insecure: true}, "loopback"},
		{"plaintext by default endpoint", Config{Insecure: true}, "loopback"},
		{"plaintext to a private address", Config{Endpoint: "10.0.0.1:9000", Insecure: true}, "loopback"},
		{"no port", Config{Endpoint: "127.0.0.1", Insecure: true}, "host:port"},
		{"small parts off loopback", Config{Endpoint: "llm.api.cloud.yandex.net:443", PartSize: 1 << 20}, "parts must be"},
		{"parts over 5 GB", Config{Endpoint: "127.0.0.1:1", Insecure: true, PartSize: 6 << 30}, "parts must be"},
		{"no folder", Config{Endpoint: "127.0.0.1:1", Insecure: true, FolderID: "-"}, "folder"},
	} {
		cfg := tc.cfg
		cfg.Credentials = failingSource{}
		if cfg.FolderID == "" {
			cfg.FolderID = testFolder
		} else if cfg.FolderID == "-" {
			cfg.FolderID = ""
		}
		c, err := Dial(ctx, cfg)
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: dialled", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	c, err := Dial(ctx, Config{Endpoint: "localhost:1", Insecure: true, Credentials: failingSource{}, FolderID: testFolder})
	if err != nil {
		t.Fatalf("plaintext on localhost: %v", err)
	}
	_ = c.Close()
}

func TestFindDatasetsByLabels(t *testing.T) {
	e := start(t, batchmode.Config{}, nil)
	ctx := testCtx(t)
	// More than one page of List (100 by default).
	want := map[string]bool{}
	for i := range 103 {
		labels := map[string]string{"team": "b"}
		if i%10 == 0 {
			labels = map[string]string{"team": "a", "run": fmt.Sprint(i)}
		}
		id, err := e.c.CreateDataset(ctx, fmt.Sprintf("d%d", i), labels)
		if err != nil {
			t.Fatal(err)
		}
		if labels["team"] == "a" {
			want[id] = true
		}
	}
	for _, tc := range []struct {
		labels map[string]string
		n      int
	}{
		{map[string]string{"team": "a"}, 11},
		{map[string]string{"team": "a", "run": "100"}, 1},
		{map[string]string{"team": "a", "run": "1"}, 0},
		{map[string]string{"run": ""}, 0},
		{nil, 103},
	} {
		found, err := e.c.FindDatasets(ctx, tc.labels)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != tc.n {
			t.Errorf("%v: %d datasets, want %d", tc.labels, len(found), tc.n)
		}
		for _, d := range found {
			if tc.labels["team"] == "a" && !want[d.ID] {
				t.Errorf("%v: found %s (%v)", tc.labels, d.ID, d.Labels)
			}
		}
	}
}

func TestCancel(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 1, RowsPerSecond: 20}, nil)
	ctx := testCtx(t)
	dsID := e.ready(t, rowsOf(200))
	taskID, _, err := e.c.StartTask(ctx, TaskSpec{ModelURI: testModel, SourceDatasetID: dsID})
	if err != nil {
		t.Fatal(err)
	}
	e.waitTask(t, taskID, func(tk *Task) bool { return tk.Status == TaskInProgress })
	if err := e.c.DeleteTask(ctx, taskID); status.Code(err) != codes.FailedPrecondition || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("delete of a running task: %v, want FAILED_PRECONDITION", err)
	}
	if err := e.c.CancelTask(ctx, taskID); err != nil {
		t.Fatal(err)
	}
	tk, err := e.c.DescribeTask(ctx, taskID)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != TaskCanceled || !tk.Ended() || tk.CompletedBatches >= 200 || tk.TotalBatches != 200 {
		t.Fatalf("task after cancel: %+v", tk)
	}
	if err := e.c.CancelTask(ctx, taskID); status.Code(err) != codes.FailedPrecondition || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("second cancel: %v, want FAILED_PRECONDITION", err)
	}
	if err := e.c.DeleteTask(ctx, taskID); err != nil {
		t.Fatal(err)
	}
	if found, err := e.c.FindTasks(ctx, dsID); err != nil || len(found) != 0 {
		t.Errorf("tasks after delete: %+v %v", found, err)
	}
}

func TestFailedBatch(t *testing.T) {
	e := start(t, batchmode.Config{BatchSize: 2, Faults: batchmode.Faults{FailBatch: 2}}, nil)
	ctx := testCtx(t)
	dsID := e.ready(t, rowsOf(5))
	tk := e.run(t, dsID)
	want := []BatchError{{Batch: 2, FirstLine: 3, LastLine: 4, Message: "emulated fault: batch failed"}}
	if tk.Status != TaskFailed || tk.StatusCode != int32(codes.Internal) || tk.StatusMessage == "" ||
		fmt.Sprint(tk.BatchErrors) != fmt.Sprint(want) {
		t.Fatalf("failed task: %+v, want batch errors %v", tk, want)
	}
	// Its result dataset is not READY: no download URLs.
	err := e.c.Results(ctx, tk.ResultDatasetID, func(ResultRow) error { return nil })
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("results of a failed task: %v", err)
	}
}

func TestUploadRetriesAPart(t *testing.T) {
	e := start(t, batchmode.Config{}, func(c *Config) { c.PartSize = 1 << 10 })
	ctx := testCtx(t)
	var failures atomic.Int32
	e.http.fail = func(r *http.Request) bool {
		// The first two PUTs of part 2 answer 503.
		return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/2") && failures.Add(1) <= 2
	}
	body := encode(t, rowsOf(30))
	id, err := e.c.CreateDataset(ctx, "retry", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Upload(ctx, id, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if got := e.http.count("PUT", "/upload/"+id+"/2"); got != 3 {
		t.Errorf("part 2 sent %d times, want 3", got)
	}
	if v, err := e.c.Validate(ctx, id, 0); err != nil || !v.Valid || v.ValidRows != 30 {
		t.Errorf("validation after a retried part: %+v %v", v, err)
	}

	// Always failing: the upload gives up after a few tries.
	e.http.fail = func(r *http.Request) bool { return r.Method == http.MethodPut }
	id2, err := e.c.CreateDataset(ctx, "fail", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.c.Upload(ctx, id2, bytes.NewReader(body), int64(len(body)))
	if err == nil || !strings.Contains(err.Error(), "503") || e.http.count("PUT", "/upload/"+id2+"/1") != presignedTries {
		t.Errorf("upload, always 503: %v after %d tries", err, e.http.count("PUT", "/upload/"+id2+"/1"))
	}
}

// shortReader holds fewer bytes than the size Upload is told.
type shortReader struct{ b []byte }

func (r shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestErrorsNameNoSignature(t *testing.T) {
	e := start(t, batchmode.Config{}, nil)
	ctx := testCtx(t)
	body := encode(t, rowsOf(3))
	id, err := e.c.CreateDataset(ctx, "sig", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A body shorter than declared fails in the transport (its error holds the whole URL) ...
	err1 := e.c.Upload(ctx, id, shortReader{body[:10]}, int64(len(body)))
	if err1 == nil {
		t.Fatal("short body uploaded")
	}
	// ... and a declared size the server did not sign fails with 403.
	u, err := e.c.ds.GetUploadDraftUrl(ctx, &fomods.GetUploadDraftUrlRequest{DatasetId: id, SizeBytes: int64(len(body)) + 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err2 := e.c.put(ctx, "upload", u.GetUploadUrl(), io.NewSectionReader(bytes.NewReader(body), 0, int64(len(body))))
	if !strings.Contains(fmt.Sprint(err2), "403") {
		t.Errorf("PUT of another size than signed: %v, want 403", err2)
	}
	for _, err := range []error{err1, err2} {
		if err == nil {
			t.Errorf("no error")
			continue
		}
		if s := err.Error(); strings.Contains(s, "Signature") || strings.Contains(s, "?") || !strings.Contains(s, "/upload/"+id) {
			t.Errorf("error %q: want the host and path, no query", s)
		}
	}
}
