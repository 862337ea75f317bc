package batchapi

import (
	"context"
	"fmt"
	"time"

	fomobi "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/batch_inference/v1"
	fm "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1"
	textgen "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1/text_generation"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TaskSpec is what a batch completion task runs.
type TaskSpec struct {
	ModelURI        string   // gpt://<folder>/<model>[/<version>]: the task's folder is the model's
	Temperature     *float64 // nil: the model's default
	MaxTokens       int64    // 0: the model's default
	SourceDatasetID string   // a READY dataset of requests
}

// Task statuses (docs/api.md §9, step 5).
const (
	TaskCreated    = "CREATED"
	TaskPending    = "PENDING"
	TaskInProgress = "IN_PROGRESS"
	TaskCompleted  = "COMPLETED"
	TaskFailed     = "FAILED"
	TaskCanceled   = "CANCELED"
)

// Task is what batchgpt needs of a batch inference task.
type Task struct {
	ID              string
	OperationID     string
	Status          string // one of the Task… constants, or the proto's name of another
	ModelURI        string
	SourceDatasetID string
	// ResultDatasetID is set from PENDING on (recorded); its rows are readable once COMPLETED.
	ResultDatasetID string
	CreatedAt       time.Time
	FinishedAt      time.Time // zero until the task ends
	// CompletedBatches and TotalBatches come from the task's operation, when it carries them
	// (the recorded start answer does not; docs/api.md §9, step 4); zero when unknown.
	CompletedBatches, TotalBatches int64

	// StatusCode and StatusMessage are the task's error status (google.rpc.Status); a successful
	// task has code 0 and no message.
	StatusCode    int32
	StatusMessage string
	LineErrors    []LineError
	BatchErrors   []BatchError
}

// LineError is an error of one input line.
type LineError struct {
	Line    int64
	Message string
}

// BatchError is an error of one batch of input lines.
type BatchError struct {
	Batch               int64
	FirstLine, LastLine int64
	Message             string
}

// Ended reports whether the task will not change any more.
func (t *Task) Ended() bool {
	return t.Status == TaskCompleted || t.Status == TaskFailed || t.Status == TaskCanceled
}

func taskOf(t *fomobi.BatchInferenceTask) *Task {
	out := &Task{
		ID: t.GetTaskId(), OperationID: t.GetOperationId(), Status: t.GetStatus().String(), ModelURI: t.GetModelUri(),
		SourceDatasetID: t.GetSourceDatasetId(), ResultDatasetID: t.GetResultDatasetId(),
	}
	if t.GetCreatedAt() != nil {
		out.CreatedAt = t.GetCreatedAt().AsTime()
	}
	if t.GetFinishedAt() != nil {
		out.FinishedAt = t.GetFinishedAt().AsTime()
	}
	e := t.GetErrors()
	out.StatusCode, out.StatusMessage = e.GetStatus().GetCode(), e.GetStatus().GetMessage()
	for _, le := range e.GetLineErrors() {
		out.LineErrors = append(out.LineErrors, LineError{Line: le.GetLineNumber(), Message: le.GetMessage()})
	}
	for _, be := range e.GetBatchErrors() {
		out.BatchErrors = append(out.BatchErrors, BatchError{Batch: be.GetBatchNumber(), FirstLine: be.GetFirstLine(), LastLine: be.GetLastLine(), Message: be.GetMessage()})
	}
	return out
}

// StartTask starts a batch completion over a READY source dataset (docs/api.md §9, step 4) and
// returns the task's id and its operation's. On ErrOutcomeUnknown a task may exist:
// FindTasks(spec.SourceDatasetID) tells before another is started (and billed).
func (c *Client) StartTask(ctx context.Context, spec TaskSpec) (taskID, operationID string, err error) {
	req := &textgen.BatchCompletionRequest{
		ModelUri:      spec.ModelURI,
		RequestFormat: &textgen.BatchCompletionRequest_SourceDatasetId{SourceDatasetId: spec.SourceDatasetID},
	}
	if spec.Temperature != nil || spec.MaxTokens > 0 {
		opts := &fm.CompletionOptions{}
		if spec.Temperature != nil {
			opts.Temperature = wrapperspb.Double(*spec.Temperature)
		}
		if spec.MaxTokens > 0 {
			opts.MaxTokens = wrapperspb.Int64(spec.MaxTokens)
		}
		req.CompletionOptions = opts
	}
	op := "start batch task over dataset " + spec.SourceDatasetID
	o, err := rpc(ctx, c.write, op, c.bc.Completion, req)
	if err != nil {
		return "", "", err
	}
	var meta textgen.BatchCompletionMetadata
	if o.GetMetadata() == nil || o.GetMetadata().UnmarshalTo(&meta) != nil || meta.GetTaskId() == "" {
		return "", o.GetId(), fmt.Errorf("%s: %w: operation %s names no task id", op, ErrOutcomeUnknown, o.GetId())
	}
	return meta.GetTaskId(), o.GetId(), nil
}

// DescribeTask reads a task, and its operation for the batch counts (best effort: the task
// itself is what tells its status, as the SDK reads it).
func (c *Client) DescribeTask(ctx context.Context, id string) (*Task, error) {
	resp, err := rpc(ctx, c.read, "describe batch task "+id, c.bi.Describe, &fomobi.DescribeBatchInferenceRequest{TaskId: id})
	if err != nil {
		return nil, err
	}
	t := taskOf(resp.GetTask())
	if t.OperationID == "" {
		return t, nil
	}
	o, err := rpc(ctx, c.read, "get operation "+t.OperationID, c.ops.Get, &operation.GetOperationRequest{OperationId: t.OperationID})
	var meta textgen.BatchCompletionMetadata
	switch {
	case err != nil:
		c.log.Debug("batchapi: no batch counts", "task", id, "err", err)
	case o.GetMetadata() != nil && o.GetMetadata().UnmarshalTo(&meta) == nil:
		t.CompletedBatches, t.TotalBatches = meta.GetCompletedBatches(), meta.GetTotalBatches()
	}
	return t, nil
}

// CancelTask stops a task (docs/api.md §9, step 7).
func (c *Client) CancelTask(ctx context.Context, id string) error {
	_, err := rpc(ctx, c.write, "cancel batch task "+id, c.bi.Cancel, &fomobi.CancelBatchInferenceRequest{TaskId: id})
	return err
}

// DeleteTask deletes an ended task; its result dataset stays (DeleteDataset).
func (c *Client) DeleteTask(ctx context.Context, id string) error {
	_, err := rpc(ctx, c.write, "delete batch task "+id, c.bi.Delete, &fomobi.DeleteBatchInferenceRequest{TaskId: id})
	return err
}

// FindTasks lists the configured folder's tasks, page by page, and keeps those over
// sourceDatasetID: tasks take no labels, and List filters by neither (docs/api.md §9, "List").
// A task lives in its model URI's folder, so a model of another folder's tasks are not found.
func (c *Client) FindTasks(ctx context.Context, sourceDatasetID string) ([]*Task, error) {
	var out []*Task
	req := &fomobi.ListBatchInferencesRequest{FolderId: c.cfg.FolderID}
	err := listAll(ctx, c, "list batch tasks", &req.PageToken, func(ctx context.Context) (string, error) {
		resp, err := c.bi.List(ctx, req)
		for _, t := range resp.GetTasks() {
			if t.GetSourceDatasetId() == sourceDatasetID {
				out = append(out, taskOf(t))
			}
		}
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
