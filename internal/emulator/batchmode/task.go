package batchmode

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	fomobi "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/batch_inference/v1"
	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	fm "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1"
	textgen "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1/text_generation"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

type task struct {
	t         *fomobi.BatchInferenceTask
	op        *op
	completed int64
	total     int64
	rows      [][]emulator.Message
	maxTokens int64
	result    *dataset
	stop      context.CancelFunc
}

func terminal(st fomobi.BatchInferenceTask_Status) bool {
	return st == fomobi.BatchInferenceTask_COMPLETED || st == fomobi.BatchInferenceTask_FAILED || st == fomobi.BatchInferenceTask_CANCELED
}

// batchService implements TextGenerationBatchService.
type batchService struct {
	textgen.UnimplementedTextGenerationBatchServiceServer
	s *Server
}

// Completion starts a task over a READY source dataset of requests. The request has no folder:
// the task's folder is the model URI's, as recorded.
func (b batchService) Completion(_ context.Context, req *textgen.BatchCompletionRequest) (*operation.Operation, error) {
	folder, ok := modelFolder(req.GetModelUri())
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "model_uri %q is not gpt://<folder>/<model>[/<version>]", req.GetModelUri())
	}
	if req.GetJsonSchema() != nil || req.GetJsonObject() {
		// The emulator's answers are plain text; a structured-output task is not emulated.
		return nil, status.Error(codes.Unimplemented, "json_object and json_schema are not emulated")
	}
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleAll(time.Now())
	src, err := s.lookup(req.GetSourceDatasetId())
	if err != nil {
		return nil, err
	}
	if src.info.Status != fomods.DatasetInfo_READY || src.info.TaskType != TaskTypeRequests {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %s is %s of type %s, want a READY %s dataset",
			src.info.DatasetId, src.info.Status, src.info.TaskType, TaskTypeRequests)
	}
	now := time.Now()
	opts := req.GetCompletionOptions()
	var biOpts *fomobi.CompletionOptions
	if opts != nil {
		biOpts = &fomobi.CompletionOptions{Temperature: opts.GetTemperature(), MaxTokens: opts.GetMaxTokens()}
		if r := opts.GetReasoningOptions(); r != nil {
			biOpts.ReasoningOptions = &fomobi.ReasoningOptions{Mode: fomobi.ReasoningOptions_ReasoningMode(r.GetMode())}
		}
	} else {
		biOpts = &fomobi.CompletionOptions{}
	}
	t := &task{
		t: &fomobi.BatchInferenceTask{
			TaskId: s.newID("fbi"), OperationId: s.newID("fbi"), FolderId: folder, ModelUri: req.GetModelUri(),
			SourceDatasetId: src.info.DatasetId, Status: fomobi.BatchInferenceTask_CREATED, CreatedBy: emulatedUser,
			CreatedAt: timestamppb.New(now),
			Request: &fomobi.BatchInferenceTask_CompletionRequest{CompletionRequest: &fomobi.BatchCompletionRequest{
				ModelUri: req.GetModelUri(), SourceDatasetId: src.info.DatasetId, CompletionOptions: biOpts,
			}},
		},
		rows:      src.rows,
		maxTokens: opts.GetMaxTokens().GetValue(),
		total:     (int64(len(src.rows)) + int64(s.cfg.BatchSize) - 1) / int64(s.cfg.BatchSize),
	}
	t.op = &op{id: t.t.OperationId, created: now, task: t}
	s.tasks[t.t.TaskId] = t
	s.taskOrder = append(s.taskOrder, t.t.TaskId)
	s.ops[t.op.id] = t.op
	ctx, stop := context.WithCancel(s.ctx)
	t.stop = stop
	s.wg.Add(1)
	go s.run(ctx, t)
	// The answer carries only the task id in its metadata, as recorded.
	out := t.operation(t.op)
	out.Metadata = mustAny(&textgen.BatchCompletionMetadata{TaskId: t.t.TaskId})
	return out, nil
}

// modelFolder returns the folder of gpt://<folder>/<model>[/<version>].
func modelFolder(uri string) (string, bool) {
	rest, ok := strings.CutPrefix(uri, "gpt://")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return "", false
	}
	return parts[0], true
}

// operation renders the task's batch operation; the caller holds s.mu. Once the task ends the
// operation is done: a COMPLETED task answers a BatchCompletionResponse, a FAILED one error code
// 13 and a CANCELED one code 1 (UNCONFIRMED: the SDK follows the task, never this operation).
func (t *task) operation(o *op) *operation.Operation {
	out := &operation.Operation{
		Id: o.id, Description: "Batch completion", CreatedAt: timestamppb.New(o.created), CreatedBy: emulatedUser,
		ModifiedAt: t.modified(),
		Metadata: mustAny(&textgen.BatchCompletionMetadata{TaskId: t.t.TaskId, TaskStatus: fm.BatchInferenceTaskStatus(t.t.Status),
			CompletedBatches: t.completed, TotalBatches: t.total}),
	}
	switch t.t.Status {
	case fomobi.BatchInferenceTask_COMPLETED:
		out.Done = true
		out.Result = &operation.Operation_Response{Response: mustAny(&textgen.BatchCompletionResponse{
			TaskId: t.t.TaskId, TaskStatus: fm.BatchInferenceTaskStatus_COMPLETED, ResultDatasetId: t.t.ResultDatasetId})}
	case fomobi.BatchInferenceTask_FAILED:
		out.Done = true
		out.Result = &operation.Operation_Error{Error: proto.Clone(t.t.GetErrors().GetStatus()).(*rpcstatus.Status)}
	case fomobi.BatchInferenceTask_CANCELED:
		out.Done = true
		out.Result = &operation.Operation_Error{Error: &rpcstatus.Status{Code: int32(codes.Canceled), Message: "task cancelled"}}
	}
	return out
}

func (t *task) modified() *timestamppb.Timestamp {
	for _, ts := range []*timestamppb.Timestamp{t.t.FinishedAt, t.t.StartedAt} {
		if ts != nil {
			return ts
		}
	}
	return t.t.CreatedAt
}

// run moves a task through PENDING and IN_PROGRESS and processes its batches.
func (s *Server) run(ctx context.Context, t *task) {
	defer s.wg.Done()
	// step runs f under s.mu unless the task was stopped (cancelled, or the server closed).
	step := func(wait time.Duration, f func()) bool {
		if wait > 0 {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-timer.C:
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if ctx.Err() != nil || terminal(t.t.Status) {
			return false
		}
		f()
		return true
	}
	if !step(s.cfg.StepDelay, func() { s.pending(t) }) {
		return
	}
	if !step(s.cfg.StepDelay, func() {
		t.t.Status, t.t.StartedAt = fomobi.BatchInferenceTask_IN_PROGRESS, timestamppb.Now()
	}) {
		return
	}
	size := int64(s.cfg.BatchSize)
	for n := int64(1); n <= t.total; n++ {
		f := s.faults.Load()
		if f.StopAfterBatches > 0 && n > f.StopAfterBatches {
			<-ctx.Done() // a crashed worker: the task stays IN_PROGRESS
			return
		}
		first, last := (n-1)*size, min(n*size, int64(len(t.rows)))
		var wait time.Duration
		if s.cfg.RowsPerSecond > 0 {
			wait = time.Duration(float64(last-first) / s.cfg.RowsPerSecond * float64(time.Second))
		}
		rows := t.rows[first:last]
		answers := make([]string, len(rows))
		for i, msgs := range rows {
			answers[i], _, _ = emulator.Completion(t.t.ModelUri, msgs, t.maxTokens)
		}
		data, err := writeParquet(rows, answers)
		failed := false
		if !step(wait, func() {
			if err != nil || n == f.FailBatch {
				msg := "emulated fault: batch failed"
				if err != nil {
					msg = fmt.Sprintf("write results: %v", err)
				}
				s.finish(t, fomobi.BatchInferenceTask_FAILED, &fomobi.BatchInferenceTask_ErrorsInfo{
					Status: &rpcstatus.Status{Code: int32(codes.Internal), Message: msg},
					BatchErrors: []*fomobi.BatchInferenceTask_ErrorsInfo_BatchError{{
						BatchNumber: n, FirstLine: first + 1, LastLine: last, Message: msg}},
				})
				failed = true
				return
			}
			// UNCONFIRMED: the result files' names and number; one file per batch, named by its
			// number, makes a client read them in numeric order as the SDK does.
			t.result.files = append(t.result.files, file{key: strconv.FormatInt(n, 10) + ".parquet", data: data})
			t.completed = n
		}) || failed {
			return
		}
	}
	step(0, func() {
		s.finish(t, fomobi.BatchInferenceTask_COMPLETED, &fomobi.BatchInferenceTask_ErrorsInfo{Status: &rpcstatus.Status{}})
	})
}

// pending creates the result dataset, which recorded tasks name while PENDING; the caller holds
// s.mu.
func (s *Server) pending(t *task) {
	now := timestamppb.Now()
	id := s.newID("fds")
	t.result = &dataset{sig: s.newID("sig"), format: UploadFormat, info: &fomods.DatasetInfo{
		DatasetId: id, FolderId: t.t.FolderId, Name: "Batch inference " + t.t.TaskId + " result",
		Status: fomods.DatasetInfo_DRAFT, TaskType: TaskTypeResults, CreatedAt: now, UpdatedAt: now,
		Labels:    map[string]string{LabelTaskID: t.t.TaskId, LabelSourceDataset: t.t.SourceDatasetId},
		CreatedBy: emulatedUser,
	}}
	//lint:ignore SA1019 deprecated, but recorded answers carry it and the SDK reads it
	t.result.info.CreatedById = emulatedUser
	s.datasets[id] = t.result
	s.dsOrder = append(s.dsOrder, id)
	t.t.Status, t.t.ResultDatasetId = fomobi.BatchInferenceTask_PENDING, id
}

// finish ends a task; the caller holds s.mu. A COMPLETED task's result dataset becomes READY;
// a FAILED or CANCELED one's becomes INVALID and keeps no rows (UNCONFIRMED: whether the real
// service keeps the rows of the batches done).
func (s *Server) finish(t *task, st fomobi.BatchInferenceTask_Status, errs *fomobi.BatchInferenceTask_ErrorsInfo) {
	now := timestamppb.Now()
	t.t.Status, t.t.FinishedAt, t.t.Errors = st, now, errs
	t.stop()
	if r := t.result; r != nil {
		r.info.UpdatedAt = now
		if st == fomobi.BatchInferenceTask_COMPLETED {
			r.info.Status, r.info.Rows, r.rows = fomods.DatasetInfo_READY, int64(len(t.rows)), t.rows
			for _, f := range r.files {
				r.info.SizeBytes += int64(len(f.data))
			}
		} else {
			r.info.Status, r.files = fomods.DatasetInfo_INVALID, nil
		}
	}
}

// inferenceService implements BatchInferenceService.
type inferenceService struct {
	fomobi.UnimplementedBatchInferenceServiceServer
	s *Server
}

func (s *Server) lookupTask(id string) (*task, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "task_id is required")
	}
	t := s.tasks[id]
	if t == nil {
		return nil, status.Errorf(codes.NotFound, "batch inference task %s not found", id)
	}
	return t, nil
}

func (i inferenceService) Describe(_ context.Context, req *fomobi.DescribeBatchInferenceRequest) (*fomobi.DescribeBatchInferenceResponse, error) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	t, err := i.s.lookupTask(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	return &fomobi.DescribeBatchInferenceResponse{Task: proto.Clone(t.t).(*fomobi.BatchInferenceTask)}, nil
}

// List lists a folder's tasks oldest first, as recorded; the only filter is the deprecated
// status. Tasks have labels, but no call sets them: the emulator's have none.
func (i inferenceService) List(_ context.Context, req *fomobi.ListBatchInferencesRequest) (*fomobi.ListBatchInferencesResponse, error) {
	if req.GetFolderId() == "" {
		return nil, status.Error(codes.InvalidArgument, "folder_id is required")
	}
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	//lint:ignore SA1019 deprecated, but still in the proto and the SDK sends it
	want := req.GetStatus()
	var match []*fomobi.BatchInferenceTask
	for _, id := range i.s.taskOrder {
		t := i.s.tasks[id]
		if t == nil || t.t.FolderId != req.GetFolderId() || want != 0 && t.t.Status != want {
			continue
		}
		match = append(match, t.t)
	}
	page, next, err := paginate(match, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &fomobi.ListBatchInferencesResponse{NextPageToken: next}
	for _, t := range page {
		out.Tasks = append(out.Tasks, proto.Clone(t).(*fomobi.BatchInferenceTask))
	}
	return out, nil
}

// Cancel stops a task that has not ended; an ended one answers FAILED_PRECONDITION
// (UNCONFIRMED).
func (i inferenceService) Cancel(_ context.Context, req *fomobi.CancelBatchInferenceRequest) (*fomobi.CancelBatchInferenceResponse, error) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	t, err := i.s.lookupTask(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	if terminal(t.t.Status) {
		return nil, status.Errorf(codes.FailedPrecondition, "task %s is already %s", t.t.TaskId, t.t.Status)
	}
	i.s.finish(t, fomobi.BatchInferenceTask_CANCELED, nil)
	return &fomobi.CancelBatchInferenceResponse{TaskId: t.t.TaskId}, nil
}

// Delete removes an ended task and its operation; its result dataset stays (the SDK deletes it
// on its own). A running task answers FAILED_PRECONDITION (UNCONFIRMED).
func (i inferenceService) Delete(_ context.Context, req *fomobi.DeleteBatchInferenceRequest) (*fomobi.DeleteBatchInferenceResponse, error) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	t, err := i.s.lookupTask(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	if !terminal(t.t.Status) {
		return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: cancel it first", t.t.TaskId, t.t.Status)
	}
	delete(i.s.tasks, t.t.TaskId)
	delete(i.s.ops, t.op.id)
	return &fomobi.DeleteBatchInferenceResponse{TaskId: t.t.TaskId}, nil
}
