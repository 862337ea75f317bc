package batchmode

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	fomobi "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/batch_inference/v1"
	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	fm "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1"
	textgen "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1/text_generation"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

const (
	testFolder = "b1gemulatorfolder000"
	testKey    = "test-key"
	testModel  = "gpt://" + testFolder + "/qwen3-32b/latest"
)

// env is a started emulator and go-genproto's clients for it, over loopback.
type env struct {
	srv  *Server
	auth string
	ds   fomods.DatasetServiceClient
	bc   textgen.TextGenerationBatchServiceClient
	bi   fomobi.BatchInferenceServiceClient
	ops  operation.OperationServiceClient
}

func start(t *testing.T, cfg Config) *env {
	t.Helper()
	if cfg.Authorize == nil {
		cfg.Authorize = emulator.New(emulator.Config{APIKeys: []string{testKey}}).Authorize
	}
	srv := New(cfg)
	target, _, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &env{srv: srv, auth: "Api-Key " + testKey, ds: fomods.NewDatasetServiceClient(conn),
		bc: textgen.NewTextGenerationBatchServiceClient(conn), bi: fomobi.NewBatchInferenceServiceClient(conn),
		ops: operation.NewOperationServiceClient(conn)}
}

// ctx is a call context with the credentials.
func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if e.auth == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", e.auth)
}

// jsonl renders requests as the input lines of a source dataset.
func jsonl(t *testing.T, rows [][]emulator.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, r := range rows {
		line, err := json.Marshal(map[string]any{"request": r})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func prompts(n int) [][]emulator.Message {
	rows := make([][]emulator.Message, n)
	for i := range rows {
		rows[i] = []emulator.Message{{Role: "system", Text: "be brief"}, {Role: "user", Text: fmt.Sprintf("question number %d, a longer one", i+1)}}
	}
	return rows
}

func put(t *testing.T, url string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

// create makes a dataset of requests and uploads body through the presigned URL.
func (e *env) create(t *testing.T, name string, labels map[string]string, body []byte) string {
	t.Helper()
	cr, err := e.ds.Create(e.ctx(t), &fomods.CreateDatasetRequest{Name: name, FolderId: testFolder,
		TaskType: TaskTypeRequests, UploadFormat: UploadFormat, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.ds.GetUploadDraftUrl(e.ctx(t), &fomods.GetUploadDraftUrlRequest{DatasetId: cr.GetDatasetId(), SizeBytes: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if resp := put(t, u.GetUploadUrl(), body); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
		t.Fatalf("upload: %s, ETag %q", resp.Status, resp.Header.Get("ETag"))
	}
	return cr.GetDatasetId()
}

// validate runs Validate and polls its operation until done.
func (e *env) validate(t *testing.T, id string) (*fomods.ValidateDatasetResponse, *fomods.ValidateDatasetMetadata) {
	t.Helper()
	o, err := e.ds.Validate(e.ctx(t), &fomods.ValidateDatasetRequest{DatasetId: id})
	if err != nil {
		t.Fatal(err)
	}
	o = e.waitOp(t, o.GetId())
	var resp fomods.ValidateDatasetResponse
	var meta fomods.ValidateDatasetMetadata
	if err := o.GetResponse().UnmarshalTo(&resp); err != nil {
		t.Fatalf("validation response: %v (%v)", err, o)
	}
	if err := o.GetMetadata().UnmarshalTo(&meta); err != nil {
		t.Fatal(err)
	}
	return &resp, &meta
}

func (e *env) waitOp(t *testing.T, id string) *operation.Operation {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		o, err := e.ops.Get(e.ctx(t), &operation.GetOperationRequest{OperationId: id})
		if err != nil {
			t.Fatal(err)
		}
		if o.GetDone() {
			return o
		}
	}
	t.Fatalf("operation %s not done", id)
	return nil
}

// run starts a task and returns its id and operation id.
func (e *env) run(t *testing.T, dsID string, maxTokens int64) (taskID, opID string) {
	t.Helper()
	req := &textgen.BatchCompletionRequest{ModelUri: testModel,
		RequestFormat: &textgen.BatchCompletionRequest_SourceDatasetId{SourceDatasetId: dsID}}
	if maxTokens > 0 {
		req.CompletionOptions = &fm.CompletionOptions{MaxTokens: wrapperspb.Int64(maxTokens)}
	}
	o, err := e.bc.Completion(e.ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var meta textgen.BatchCompletionMetadata
	if err := o.GetMetadata().UnmarshalTo(&meta); err != nil || meta.GetTaskId() == "" {
		t.Fatalf("completion metadata: %v %v", err, o)
	}
	return meta.GetTaskId(), o.GetId()
}

// wait polls the task until cond holds.
func (e *env) wait(t *testing.T, id string, cond func(*fomobi.BatchInferenceTask) bool) *fomobi.BatchInferenceTask {
	t.Helper()
	var last *fomobi.BatchInferenceTask
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r, err := e.bi.Describe(e.ctx(t), &fomobi.DescribeBatchInferenceRequest{TaskId: id})
		if err != nil {
			t.Fatal(err)
		}
		if last = r.GetTask(); cond(last) {
			return last
		}
	}
	t.Fatalf("task %s: condition not reached, last %v", id, last)
	return nil
}

func ended(tk *fomobi.BatchInferenceTask) bool { return terminal(tk.GetStatus()) }

// results downloads a dataset's files in the numeric order of their keys, as the SDK reads them.
func (e *env) results(t *testing.T, dsID string) (rows []ResultRow, schemas []string) {
	t.Helper()
	r, err := e.ds.GetDownloadUrls(e.ctx(t), &fomods.GetDownloadUrlsRequest{DatasetId: dsID})
	if err != nil {
		t.Fatal(err)
	}
	urls := r.GetDownloadUrls()
	num := func(u *fomods.DatasetFileDownloadUrl) int {
		n, err := strconv.Atoi(strings.TrimSuffix(u.GetKey(), ".parquet"))
		if err != nil {
			t.Fatalf("key %q is not numeric", u.GetKey())
		}
		return n
	}
	slices.SortFunc(urls, func(a, b *fomods.DatasetFileDownloadUrl) int { return num(a) - num(b) })
	for _, u := range urls {
		resp, err := http.Get(u.GetUrl())
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("download %s: %s %v", u.GetKey(), resp.Status, err)
		}
		f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		schemas = append(schemas, f.Schema().String())
		got, err := parquet.Read[ResultRow](bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, got...)
	}
	return rows, schemas
}

// realSchema is the schema of a dataset file downloaded from the real service (a recorded
// response in the official Python SDK's tests), printed by parquet-go.
const realSchema = `message schema {
	optional group request (LIST) {
		repeated group list {
			optional group element {
				optional binary role (STRING);
				optional binary text (STRING);
			}
		}
	}
	optional binary response (STRING);
}`

func TestEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rows      int
		batchSize int
		maxTokens int64
	}{
		{"three batches, the last short", 7, 3, 0},
		{"one batch, answers cut by maxTokens", 4, 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, Config{BatchSize: tc.batchSize})
			in := prompts(tc.rows)
			in[1] = append(in[1], emulator.Message{Role: "assistant", Text: "an earlier answer"}, emulator.Message{Role: "user", Text: "and a follow-up"})
			id := e.create(t, "rows", map[string]string{"run": "e2e"}, jsonl(t, in))
			resp, meta := e.validate(t, id)
			if !resp.GetIsValid() || len(resp.GetErrors()) > 0 || meta.GetValidRows() != int64(tc.rows) || meta.GetTotalRows() != int64(tc.rows) {
				t.Fatalf("validation: %v, %v", resp, meta)
			}
			taskID, opID := e.run(t, id, tc.maxTokens)
			tk := e.wait(t, taskID, ended)
			if tk.GetStatus() != fomobi.BatchInferenceTask_COMPLETED || tk.GetResultDatasetId() == "" || tk.GetStartedAt() == nil || tk.GetFinishedAt() == nil {
				t.Fatalf("task: %v", tk)
			}
			o := e.waitOp(t, opID)
			var om textgen.BatchCompletionMetadata
			var or textgen.BatchCompletionResponse
			if err := o.GetMetadata().UnmarshalTo(&om); err != nil {
				t.Fatal(err)
			}
			if err := o.GetResponse().UnmarshalTo(&or); err != nil {
				t.Fatal(err)
			}
			batches := int64((tc.rows + tc.batchSize - 1) / tc.batchSize)
			if om.GetCompletedBatches() != batches || om.GetTotalBatches() != batches || or.GetResultDatasetId() != tk.GetResultDatasetId() ||
				or.GetTaskStatus() != fm.BatchInferenceTaskStatus_COMPLETED {
				t.Fatalf("operation: %v / %v", &om, &or)
			}
			rd, err := e.ds.Describe(e.ctx(t), &fomods.DescribeDatasetRequest{DatasetId: tk.GetResultDatasetId()})
			if err != nil {
				t.Fatal(err)
			}
			if d := rd.GetDataset(); d.GetStatus() != fomods.DatasetInfo_READY || d.GetTaskType() != TaskTypeResults ||
				d.GetLabels()[LabelTaskID] != taskID || d.GetLabels()[LabelSourceDataset] != id || d.GetRows() != int64(tc.rows) {
				t.Fatalf("result dataset: %v", d)
			}
			got, schemas := e.results(t, tk.GetResultDatasetId())
			if len(schemas) != int(batches) {
				t.Errorf("%d result files, want one per batch (%d)", len(schemas), batches)
			}
			for _, s := range schemas {
				if s != realSchema {
					t.Errorf("result schema:\n%s\nwant the real service's:\n%s", s, realSchema)
				}
			}
			if len(got) != tc.rows {
				t.Fatalf("%d result rows, want %d", len(got), tc.rows)
			}
			for i, r := range got {
				var msgs []emulator.Message
				for _, m := range r.Request {
					msgs = append(msgs, emulator.Message{Role: *m.Role, Text: *m.Text})
				}
				if !slices.Equal(msgs, in[i]) {
					t.Errorf("row %d: request %v, want %v", i+1, msgs, in[i])
				}
				want, _, _ := emulator.Completion(testModel, in[i], tc.maxTokens)
				if r.Response == nil || *r.Response != want {
					t.Errorf("row %d: response %v, want %q", i+1, r.Response, want)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := `{"request":[{"role":"user","text":"hi"}]}`
	for _, tc := range []struct {
		name   string
		lines  []string
		faults Faults
		want   map[string][]int64 // error name → rows
	}{
		{"valid", []string{good, good}, Faults{}, nil},
		{"not JSON", []string{good, `{"request":`, good, `nope`}, Faults{}, map[string][]int64{ErrInvalidJSON: {2, 4}}},
		{"bad requests", []string{`{"request":[]}`, good, `{"request":[{"role":"robot","text":"x"}]}`, `{"other":1}`, `{"request":[{"role":"user","text":""}]}`},
			Faults{}, map[string][]int64{ErrInvalidRequest: {1, 3, 4, 5}}},
		{"empty line", []string{good, "", good}, Faults{}, map[string][]int64{ErrInvalidJSON: {2}}},
		{"fault on chosen lines", []string{good, good, good}, Faults{InvalidLines: []int64{1, 3}}, map[string][]int64{ErrEmulatedFault: {1, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, Config{Faults: tc.faults})
			id := e.create(t, "v", nil, []byte(strings.Join(tc.lines, "\n")+"\n"))
			resp, meta := e.validate(t, id)
			got := map[string][]int64{}
			for _, ve := range resp.GetErrors() {
				if ve.GetErrorDescription() == "" {
					t.Errorf("error %s without a description", ve.GetError())
				}
				got[ve.GetError()] = append(got[ve.GetError()], ve.GetRowNumbers()...)
			}
			for _, rows := range got {
				slices.Sort(rows)
			}
			if fmt.Sprint(got) != fmt.Sprint(map[string][]int64(tc.want)) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("errors %v, want %v", got, tc.want)
			}
			if resp.GetIsValid() != (len(tc.want) == 0) || meta.GetTotalRows() != int64(len(tc.lines)) {
				t.Errorf("is_valid %v, metadata %v", resp.GetIsValid(), meta)
			}
			d, err := e.ds.Describe(e.ctx(t), &fomods.DescribeDatasetRequest{DatasetId: id})
			if err != nil {
				t.Fatal(err)
			}
			wantStatus := fomods.DatasetInfo_READY
			if len(tc.want) > 0 {
				wantStatus = fomods.DatasetInfo_INVALID
			}
			if d.GetDataset().GetStatus() != wantStatus || len(d.GetDataset().GetValidationError()) != len(resp.GetErrors()) {
				t.Errorf("dataset %v, want %s", d.GetDataset(), wantStatus)
			}
			_, err = e.bc.Completion(e.ctx(t), &textgen.BatchCompletionRequest{ModelUri: testModel,
				RequestFormat: &textgen.BatchCompletionRequest_SourceDatasetId{SourceDatasetId: id}})
			if wantCode := map[bool]codes.Code{true: codes.OK, false: codes.FailedPrecondition}[len(tc.want) == 0]; status.Code(err) != wantCode {
				t.Errorf("completion over a %s dataset: %v, want %s", wantStatus, err, wantCode)
			}
		})
	}
}

func TestMultipartUpload(t *testing.T) {
	e := start(t, Config{})
	body := jsonl(t, prompts(5))
	cr, err := e.ds.Create(e.ctx(t), &fomods.CreateDatasetRequest{Name: "mp", FolderId: testFolder, TaskType: TaskTypeRequests, UploadFormat: UploadFormat})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetDatasetId()
	st, err := e.ds.StartMultipartUploadDraft(e.ctx(t), &fomods.StartMultipartUploadDraftRequest{DatasetId: id, SizeBytes: int64(len(body)), Parts: 2})
	if err != nil || len(st.GetMultipartUploadUrls()) != 2 {
		t.Fatalf("start: %v %v", st, err)
	}
	half := len(body) / 2
	var parts []*fomods.UploadedPartInfo
	for i, chunk := range [][]byte{body[:half], body[half:]} {
		resp := put(t, st.GetMultipartUploadUrls()[i], chunk)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
			t.Fatalf("part %d: %s", i+1, resp.Status)
		}
		parts = append(parts, &fomods.UploadedPartInfo{PartNum: int64(i + 1), Etag: resp.Header.Get("ETag")})
	}
	bad := []*fomods.UploadedPartInfo{parts[0], {PartNum: 2, Etag: `"0000"`}}
	if _, err := e.ds.FinishMultipartUploadDraft(e.ctx(t), &fomods.FinishMultipartUploadDraftRequest{DatasetId: id, UploadedParts: bad}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("finish with a wrong etag: %v, want InvalidArgument", err)
	}
	// Listed out of order: the parts are joined by number.
	if _, err := e.ds.FinishMultipartUploadDraft(e.ctx(t), &fomods.FinishMultipartUploadDraftRequest{DatasetId: id,
		UploadedParts: []*fomods.UploadedPartInfo{parts[1], parts[0]}}); err != nil {
		t.Fatal(err)
	}
	if resp, meta := e.validate(t, id); !resp.GetIsValid() || meta.GetValidRows() != 5 {
		t.Fatalf("validation: %v %v", resp, meta)
	}
}

func TestPresignedURLs(t *testing.T) {
	e := start(t, Config{})
	cr, err := e.ds.Create(e.ctx(t), &fomods.CreateDatasetRequest{Name: "u", FolderId: testFolder, TaskType: TaskTypeRequests, UploadFormat: UploadFormat})
	if err != nil {
		t.Fatal(err)
	}
	body := jsonl(t, prompts(2))
	u, err := e.ds.GetUploadDraftUrl(e.ctx(t), &fomods.GetUploadDraftUrlRequest{DatasetId: cr.GetDatasetId(), SizeBytes: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		url  string
		body []byte
		want int
	}{
		{"other size than declared", u.GetUploadUrl(), body[1:], http.StatusForbidden},
		{"bad signature", strings.Replace(u.GetUploadUrl(), sigParam+"=", sigParam+"=x", 1), body, http.StatusForbidden},
		{"declared size", u.GetUploadUrl(), body, http.StatusOK},
	} {
		if got := put(t, tc.url, tc.body).StatusCode; got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if _, err := e.ds.GetDownloadUrls(e.ctx(t), &fomods.GetDownloadUrlsRequest{DatasetId: cr.GetDatasetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("download URLs of a draft: %v, want FailedPrecondition", err)
	}
}

func TestCancel(t *testing.T) {
	e := start(t, Config{BatchSize: 1, RowsPerSecond: 20})
	id := e.create(t, "c", nil, jsonl(t, prompts(200)))
	e.validate(t, id)
	taskID, opID := e.run(t, id, 0)
	e.wait(t, taskID, func(tk *fomobi.BatchInferenceTask) bool {
		return tk.GetStatus() == fomobi.BatchInferenceTask_IN_PROGRESS
	})
	if _, err := e.bi.Delete(e.ctx(t), &fomobi.DeleteBatchInferenceRequest{TaskId: taskID}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("delete of a running task: %v, want FailedPrecondition", err)
	}
	if _, err := e.bi.Cancel(e.ctx(t), &fomobi.CancelBatchInferenceRequest{TaskId: taskID}); err != nil {
		t.Fatal(err)
	}
	tk := e.wait(t, taskID, ended)
	if tk.GetStatus() != fomobi.BatchInferenceTask_CANCELED || tk.GetFinishedAt() == nil {
		t.Fatalf("task after cancel: %v", tk)
	}
	if o := e.waitOp(t, opID); o.GetError().GetCode() != int32(codes.Canceled) {
		t.Errorf("operation after cancel: %v", o)
	}
	if _, err := e.bi.Cancel(e.ctx(t), &fomobi.CancelBatchInferenceRequest{TaskId: taskID}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second cancel: %v, want FailedPrecondition", err)
	}
	time.Sleep(100 * time.Millisecond) // a batch that was under way must not complete the task
	if tk := e.wait(t, taskID, ended); tk.GetStatus() != fomobi.BatchInferenceTask_CANCELED {
		t.Fatalf("task later: %v", tk)
	}
	if _, err := e.bi.Delete(e.ctx(t), &fomobi.DeleteBatchInferenceRequest{TaskId: taskID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.bi.Describe(e.ctx(t), &fomobi.DescribeBatchInferenceRequest{TaskId: taskID}); status.Code(err) != codes.NotFound {
		t.Errorf("describe after delete: %v, want NotFound", err)
	}
}

func TestList(t *testing.T) {
	e := start(t, Config{})
	ids := map[string]string{}
	for _, n := range []struct{ name, team string }{{"alpha-1", "a"}, {"beta-1", "b"}, {"alpha-2", "a"}} {
		ids[n.name] = e.create(t, n.name, map[string]string{"team": n.team}, jsonl(t, prompts(1)))
	}
	e.validate(t, ids["alpha-1"])
	list := func(req *fomods.ListDatasetsRequest) []string {
		t.Helper()
		req.FolderId = testFolder
		var names []string
		for {
			r, err := e.ds.List(e.ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range r.GetDatasets() {
				names = append(names, d.GetName()+"/"+d.GetLabels()["team"])
			}
			if r.GetNextPageToken() == "" {
				return names
			}
			req.PageToken = r.GetNextPageToken()
		}
	}
	for _, tc := range []struct {
		name string
		req  *fomods.ListDatasetsRequest
		want []string
	}{
		{"all, two a page", &fomods.ListDatasetsRequest{PageSize: 2}, []string{"alpha-1/a", "beta-1/b", "alpha-2/a"}},
		{"name pattern", &fomods.ListDatasetsRequest{DatasetNamePattern: "alpha"}, []string{"alpha-1/a", "alpha-2/a"}},
		{"status", &fomods.ListDatasetsRequest{Status: []fomods.DatasetInfo_Status{fomods.DatasetInfo_READY}}, []string{"alpha-1/a"}},
		{"ids", &fomods.ListDatasetsRequest{DatasetIds: []string{ids["beta-1"]}}, []string{"beta-1/b"}},
		{"task type", &fomods.ListDatasetsRequest{TaskTypeFilter: []string{TaskTypeResults}}, nil},
	} {
		if got := list(tc.req); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// The proto has no label filter: a client keeps the datasets whose labels match.
	var teamA []string
	for _, n := range list(&fomods.ListDatasetsRequest{}) {
		if strings.HasSuffix(n, "/a") {
			teamA = append(teamA, n)
		}
	}
	if len(teamA) != 2 {
		t.Errorf("team a: %v", teamA)
	}
	if _, err := e.ds.List(e.ctx(t), &fomods.ListDatasetsRequest{FolderId: "other"}); err != nil {
		t.Fatal(err)
	}

	first, _ := e.run(t, ids["alpha-1"], 0)
	second, _ := e.run(t, ids["alpha-1"], 0)
	e.wait(t, second, ended)
	e.wait(t, first, ended)
	var tasks []string
	req := &fomobi.ListBatchInferencesRequest{FolderId: testFolder, PageSize: 1}
	for {
		r, err := e.bi.List(e.ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range r.GetTasks() {
			tasks = append(tasks, tk.GetTaskId())
		}
		if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if !slices.Equal(tasks, []string{first, second}) {
		t.Errorf("tasks %v, want oldest first %v", tasks, []string{first, second})
	}
	// Result datasets carry the service's labels, so a client finds a task's results by them.
	r, err := e.ds.List(e.ctx(t), &fomods.ListDatasetsRequest{FolderId: testFolder, TaskTypeFilter: []string{TaskTypeResults}})
	if err != nil {
		t.Fatal(err)
	}
	var resultOf []string
	for _, d := range r.GetDatasets() {
		resultOf = append(resultOf, d.GetLabels()[LabelTaskID])
	}
	if !slices.Equal(resultOf, []string{first, second}) {
		t.Errorf("result datasets of %v, want %v", resultOf, []string{first, second})
	}
}

func TestFaults(t *testing.T) {
	t.Run("fail batch", func(t *testing.T) {
		e := start(t, Config{BatchSize: 2, Faults: Faults{FailBatch: 2}})
		id := e.create(t, "f", nil, jsonl(t, prompts(5)))
		e.validate(t, id)
		taskID, opID := e.run(t, id, 0)
		tk := e.wait(t, taskID, ended)
		be := tk.GetErrors().GetBatchErrors()
		if tk.GetStatus() != fomobi.BatchInferenceTask_FAILED || len(be) != 1 || be[0].GetBatchNumber() != 2 ||
			be[0].GetFirstLine() != 3 || be[0].GetLastLine() != 4 || tk.GetErrors().GetStatus().GetCode() == 0 {
			t.Fatalf("task: %v", tk)
		}
		if o := e.waitOp(t, opID); o.GetError().GetCode() != int32(codes.Internal) {
			t.Errorf("operation: %v", o)
		}
		d, err := e.ds.Describe(e.ctx(t), &fomods.DescribeDatasetRequest{DatasetId: tk.GetResultDatasetId()})
		if err != nil || d.GetDataset().GetStatus() != fomods.DatasetInfo_INVALID {
			t.Errorf("result dataset of a failed task: %v %v", d, err)
		}
	})
	t.Run("stop after", func(t *testing.T) {
		e := start(t, Config{BatchSize: 1, Faults: Faults{StopAfterBatches: 2}})
		id := e.create(t, "s", nil, jsonl(t, prompts(4)))
		e.validate(t, id)
		taskID, opID := e.run(t, id, 0)
		e.wait(t, taskID, func(tk *fomobi.BatchInferenceTask) bool {
			return tk.GetStatus() == fomobi.BatchInferenceTask_IN_PROGRESS
		})
		time.Sleep(100 * time.Millisecond)
		o, err := e.ops.Get(e.ctx(t), &operation.GetOperationRequest{OperationId: opID})
		if err != nil {
			t.Fatal(err)
		}
		var m textgen.BatchCompletionMetadata
		if err := o.GetMetadata().UnmarshalTo(&m); err != nil {
			t.Fatal(err)
		}
		if o.GetDone() || m.GetCompletedBatches() != 2 || m.GetTotalBatches() != 4 || m.GetTaskStatus() != fm.BatchInferenceTaskStatus_IN_PROGRESS {
			t.Errorf("stopped task's operation: done %v, %v", o.GetDone(), &m)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		for _, tc := range []struct {
			rate     float64
			min, max int
		}{{0, 0, 0}, {1, 40, 40}, {0.5, 5, 35}} {
			e := start(t, Config{Seed: 1, Faults: Faults{UnavailableRate: tc.rate}})
			n := 0
			for range 40 {
				_, err := e.ds.List(e.ctx(t), &fomods.ListDatasetsRequest{FolderId: testFolder})
				switch status.Code(err) {
				case codes.Unavailable:
					n++
				case codes.OK:
				default:
					t.Fatal(err)
				}
			}
			if n < tc.min || n > tc.max {
				t.Errorf("rate %v: %d of 40 calls UNAVAILABLE, want %d..%d", tc.rate, n, tc.min, tc.max)
			}
		}
	})
}

func TestAuthorization(t *testing.T) {
	e := start(t, Config{})
	for _, tc := range []struct {
		auth string
		want codes.Code
	}{
		{"", codes.Unauthenticated},
		{"Api-Key wrong", codes.Unauthenticated},
		{"Bearer not-a-token", codes.Unauthenticated},
		{"Basic " + testKey, codes.Unauthenticated},
		{"Api-Key " + testKey, codes.OK},
	} {
		e.auth = tc.auth
		_, err := e.ds.List(e.ctx(t), &fomods.ListDatasetsRequest{FolderId: testFolder})
		if status.Code(err) != tc.want {
			t.Errorf("%q: %v, want %s", tc.auth, err, tc.want)
		}
		_, err = e.ops.Get(e.ctx(t), &operation.GetOperationRequest{OperationId: "fdsnope"})
		if want := map[bool]codes.Code{true: codes.NotFound, false: tc.want}[tc.want == codes.OK]; status.Code(err) != want {
			t.Errorf("%q: operation get %v, want %s", tc.auth, err, want)
		}
	}
}

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Faults
		bad  bool
	}{
		{"", Faults{}, false},
		{"invalid_line=3, invalid_line=7,fail_batch=2,unavailable=0.25,stop_after=4",
			Faults{InvalidLines: []int64{3, 7}, FailBatch: 2, UnavailableRate: 0.25, StopAfterBatches: 4}, false},
		{"unavailable=2", Faults{}, true},
		{"fail_batch=0", Faults{}, true},
		{"crash=1", Faults{}, true},
		{"stop_after", Faults{}, true},
	} {
		got, err := ParseFaults(tc.spec)
		if (err != nil) != tc.bad || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %+v, %v", tc.spec, got, err)
		}
	}
}
