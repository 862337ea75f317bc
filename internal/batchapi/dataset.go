package batchapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"time"

	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// Task types and upload format of batch mode (docs/api.md §9): a source dataset holds requests,
// a result dataset the requests with their answers.
const (
	TaskTypeRequests = "TextToTextGenerationRequest"
	TaskTypeResults  = "TextToTextGeneration"
	uploadFormat     = "jsonlines"
)

// Labels the service puts on a result dataset (docs/api.md §9, recorded).
const (
	LabelTaskID        = "foundation_models_batch_task_id"
	LabelSourceDataset = "foundation_models_source_dataset"
)

// Dataset is what batchgpt needs of a dataset.
type Dataset struct {
	ID        string
	Name      string
	Status    string // DRAFT, VALIDATING, READY, INVALID, DELETING
	TaskType  string
	Labels    map[string]string
	Rows      int64
	SizeBytes int64
	CreatedAt time.Time
	// ValidationErrors are those of an INVALID dataset.
	ValidationErrors []ValidationError
}

func datasetOf(d *fomods.DatasetInfo) *Dataset {
	out := &Dataset{
		ID: d.GetDatasetId(), Name: d.GetName(), Status: d.GetStatus().String(), TaskType: d.GetTaskType(),
		Labels: maps.Clone(d.GetLabels()), Rows: d.GetRows(), SizeBytes: d.GetSizeBytes(),
	}
	if d.GetCreatedAt() != nil {
		out.CreatedAt = d.GetCreatedAt().AsTime()
	}
	out.ValidationErrors = validationErrors(d.GetValidationError())
	return out
}

// CreateDataset creates a DRAFT dataset of requests (task type TextToTextGenerationRequest,
// JSON Lines) in the configured folder and returns its id. Labels are how a run finds its
// dataset again after ErrOutcomeUnknown (FindDatasets).
func (c *Client) CreateDataset(ctx context.Context, name string, labels map[string]string) (string, error) {
	resp, err := rpc(ctx, c.write, fmt.Sprintf("create dataset %q", name), c.ds.Create, &fomods.CreateDatasetRequest{
		FolderId: c.cfg.FolderID, Name: name, TaskType: TaskTypeRequests, UploadFormat: uploadFormat, Labels: labels,
	})
	if err != nil {
		return "", err
	}
	if resp.GetDatasetId() == "" {
		return "", fmt.Errorf("create dataset %q: %w: the answer has no dataset id", name, ErrOutcomeUnknown)
	}
	return resp.GetDatasetId(), nil
}

// DescribeDataset reads a dataset.
func (c *Client) DescribeDataset(ctx context.Context, id string) (*Dataset, error) {
	resp, err := rpc(ctx, c.read, "describe dataset "+id, c.ds.Describe, &fomods.DescribeDatasetRequest{DatasetId: id})
	if err != nil {
		return nil, err
	}
	return datasetOf(resp.GetDataset()), nil
}

// DeleteDataset deletes a dataset.
func (c *Client) DeleteDataset(ctx context.Context, id string) error {
	_, err := rpc(ctx, c.write, "delete dataset "+id, c.ds.Delete, &fomods.DeleteDatasetRequest{DatasetId: id})
	return err
}

// FindDatasets lists the folder's datasets, page by page, and keeps those that carry every one
// of labels: List has no label filter (docs/api.md §9, "List").
func (c *Client) FindDatasets(ctx context.Context, labels map[string]string) ([]*Dataset, error) {
	var out []*Dataset
	req := &fomods.ListDatasetsRequest{FolderId: c.cfg.FolderID}
	err := listAll(ctx, c, "list datasets", &req.PageToken, func(ctx context.Context) (string, error) {
		resp, err := c.ds.List(ctx, req)
		for _, d := range resp.GetDatasets() {
			if hasLabels(d.GetLabels(), labels) {
				out = append(out, datasetOf(d))
			}
		}
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listAll calls page, a List call that reads *token, until it answers no next page token. Each
// page is a read: retried on its own.
func listAll(ctx context.Context, c *Client, op string, token *string, page func(context.Context) (next string, err error)) error {
	for {
		var next string
		if err := c.read(ctx, op, func(ctx context.Context) (err error) {
			next, err = page(ctx)
			return err
		}); err != nil {
			return err
		}
		if *token = next; next == "" {
			return nil
		}
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Upload uploads size bytes of body into a DRAFT dataset: one presigned PUT up to the part size,
// a multipart upload above it (docs/api.md §9, step 2). A failed PUT is tried a few times. On
// failure the dataset stays a DRAFT: Upload may be called again, or the dataset deleted.
func (c *Client) Upload(ctx context.Context, datasetID string, body io.ReaderAt, size int64) error {
	if size <= 0 {
		return fmt.Errorf("upload dataset %s: nothing to upload (%d bytes)", datasetID, size)
	}
	partSize := c.cfg.PartSize
	if size <= partSize {
		return c.uploadSingle(ctx, datasetID, body, size)
	}
	// Object Storage takes at most maxParts parts: grow the parts for a file that needs more.
	partSize = max(partSize, (size+maxParts-1)/maxParts)
	return c.uploadMultipart(ctx, datasetID, body, size, partSize)
}

func (c *Client) uploadSingle(ctx context.Context, datasetID string, body io.ReaderAt, size int64) error {
	op := "upload dataset " + datasetID
	// Asking again for the URL of a draft changes nothing but the URL: safe to retry.
	resp, err := rpc(ctx, c.read, op+": get upload URL", c.ds.GetUploadDraftUrl,
		&fomods.GetUploadDraftUrlRequest{DatasetId: datasetID, SizeBytes: size})
	if err != nil {
		return err
	}
	_, err = c.put(ctx, op, resp.GetUploadUrl(), io.NewSectionReader(body, 0, size))
	return err
}

func (c *Client) uploadMultipart(ctx context.Context, datasetID string, body io.ReaderAt, size, partSize int64) error {
	op := "upload dataset " + datasetID
	parts := (size + partSize - 1) / partSize
	// Starting again before any part is sent only replaces the URLs: safe to retry.
	resp, err := rpc(ctx, c.read, op+": start multipart upload", c.ds.StartMultipartUploadDraft,
		&fomods.StartMultipartUploadDraftRequest{DatasetId: datasetID, SizeBytes: size, Parts: parts})
	if err != nil {
		return err
	}
	urls := resp.GetMultipartUploadUrls()
	if int64(len(urls)) != parts {
		return fmt.Errorf("%s: asked for %d part URLs, got %d", op, parts, len(urls))
	}
	done := make([]*fomods.UploadedPartInfo, 0, parts)
	for i, u := range urls {
		off := int64(i) * partSize
		tag, err := c.put(ctx, fmt.Sprintf("%s: part %d of %d", op, i+1, parts), u, io.NewSectionReader(body, off, min(partSize, size-off)))
		if err != nil {
			return err
		}
		done = append(done, &fomods.UploadedPartInfo{PartNum: int64(i + 1), Etag: tag})
	}
	_, err = rpc(ctx, c.write, op+": finish multipart upload", c.ds.FinishMultipartUploadDraft,
		&fomods.FinishMultipartUploadDraftRequest{DatasetId: datasetID, UploadedParts: done})
	return err
}

// put sends part to a presigned URL and returns the answer's ETag. The content length is set
// exactly: the URL's signature covers it (docs/api.md §9).
func (c *Client) put(ctx context.Context, op, rawURL string, part *io.SectionReader) (string, error) {
	var tag string
	err := c.presigned(ctx, op, rawURL, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, io.NewSectionReader(part, 0, part.Size()))
		if err != nil {
			return nil, err
		}
		req.ContentLength = part.Size()
		return req, nil
	}, func(resp *http.Response) error {
		if tag = resp.Header.Get("ETag"); tag == "" {
			return errors.New("the answer has no ETag")
		}
		return nil
	})
	return tag, err
}

// ValidationResult is the outcome of a validation.
type ValidationResult struct {
	Valid     bool
	ValidRows int64
	TotalRows int64
	Errors    []ValidationError
}

// ValidationError is one kind of error and the input lines that have it.
type ValidationError struct {
	Name        string
	Description string
	Lines       []int64 // 1-based lines of the uploaded file
}

// rowNumberBase is the number the service gives the first line in a validation error's
// row_numbers. The sources do not say whether it counts from 0 or 1 (docs/api.md §9, "Not
// settled by the sources", UNCONFIRMED); the emulator counts from 1, and so do we until a real
// answer says otherwise. This is the one place that assumption lives.
const rowNumberBase = 1

func validationErrors(errs []*fomods.ValidationError) []ValidationError {
	var out []ValidationError
	for _, e := range errs {
		lines := make([]int64, len(e.GetRowNumbers()))
		for i, n := range e.GetRowNumbers() {
			lines[i] = n - rowNumberBase + 1
		}
		out = append(out, ValidationError{Name: e.GetError(), Description: e.GetErrorDescription(), Lines: lines})
	}
	return out
}

// Validate starts the validation of an uploaded dataset and polls its operation every pollEvery
// (DefaultPollEvery if 0) until it is done (docs/api.md §9, step 3). An invalid dataset is no
// error: the result says why, by line. After ErrOutcomeUnknown, DescribeDataset tells whether
// the validation started: the dataset is then no longer a DRAFT.
func (c *Client) Validate(ctx context.Context, datasetID string, pollEvery time.Duration) (*ValidationResult, error) {
	op := "validate dataset " + datasetID
	o, err := rpc(ctx, c.write, op, c.ds.Validate, &fomods.ValidateDatasetRequest{DatasetId: datasetID})
	if err != nil {
		return nil, err
	}
	if o, err = c.waitOperation(ctx, op, o, pollEvery); err != nil {
		return nil, err
	}
	var resp fomods.ValidateDatasetResponse
	if err := o.GetResponse().UnmarshalTo(&resp); err != nil {
		return nil, fmt.Errorf("%s: operation %s: read response: %w", op, o.GetId(), err)
	}
	res := &ValidationResult{Valid: resp.GetIsValid(), Errors: validationErrors(resp.GetErrors())}
	var meta fomods.ValidateDatasetMetadata
	if o.GetMetadata() != nil && o.GetMetadata().UnmarshalTo(&meta) == nil {
		res.ValidRows, res.TotalRows = meta.GetValidRows(), meta.GetTotalRows()
	}
	return res, nil
}

// freshNotFound is how many NOT_FOUND answers a new operation may give before it is believed
// gone: a fresh one may not be visible on every replica yet (docs/api.md §4).
const freshNotFound = 3

// waitOperation polls o until it is done; an operation that ended with an error is an error.
func (c *Client) waitOperation(ctx context.Context, op string, o *operation.Operation, pollEvery time.Duration) (*operation.Operation, error) {
	if pollEvery <= 0 {
		pollEvery = DefaultPollEvery
	}
	id := o.GetId()
	if id == "" {
		return nil, fmt.Errorf("%s: %w: the answer has no operation id", op, ErrOutcomeUnknown)
	}
	missing, seen := 0, false
	for !o.GetDone() {
		if err := retry.Sleep(ctx, pollEvery); err != nil {
			return nil, fmt.Errorf("%s: wait for operation %s: %w", op, id, err)
		}
		next, err := rpc(ctx, c.read, "get operation "+id, c.ops.Get, &operation.GetOperationRequest{OperationId: id})
		if status.Code(err) == codes.NotFound && !seen && missing < freshNotFound {
			missing++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		o, seen = next, true
	}
	if e := o.GetError(); e != nil {
		return nil, fmt.Errorf("%s: operation %s failed: %w", op, id, status.ErrorProto(e))
	}
	return o, nil
}
