package batchmode

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// Task types and the upload format batchgpt uses (docs/api.md, "Batch mode (AI Studio)"): a
// source dataset of requests, and the result dataset a task writes.
const (
	TaskTypeRequests = "TextToTextGenerationRequest"
	TaskTypeResults  = "TextToTextGeneration"
	UploadFormat     = "jsonlines"
)

// Labels the service puts on a result dataset, as recorded.
const (
	LabelTaskID        = "foundation_models_batch_task_id"
	LabelSourceDataset = "foundation_models_source_dataset"
)

// Validation error names. The real names are not in the sources (UNCONFIRMED).
const (
	ErrInvalidJSON    = "invalid_json"
	ErrInvalidRequest = "invalid_request"
	ErrEmulatedFault  = "emulated_fault"
)

type dataset struct {
	info   *fomods.DatasetInfo
	format string
	sig    string // the "signature" of its presigned URLs

	draftSize int64    // declared by GetUploadDraftUrl; 0: no single upload started
	draft     []byte   // the uploaded content, once complete
	uploaded  bool     // draft holds the whole upload
	uploads   int      // complete uploads (a PUT, or a finished multipart upload), for Uploads
	parts     [][]byte // multipart upload: part i+1; nil while not started
	partTags  []string

	rows  [][]emulator.Message // the valid requests, once validated
	files []file               // what GetDownloadUrls lists
}

type file struct {
	key  string
	data []byte
}

// datasetService implements DatasetService.
type datasetService struct {
	fomods.UnimplementedDatasetServiceServer
	s *Server
}

func (d datasetService) Create(_ context.Context, req *fomods.CreateDatasetRequest) (*fomods.CreateDatasetResponse, error) {
	switch {
	case req.GetFolderId() == "":
		return nil, status.Error(codes.InvalidArgument, "folder_id is required")
	case req.GetName() == "" || len(req.GetName()) > 63:
		return nil, status.Error(codes.InvalidArgument, "name is required, at most 63 characters")
	case req.GetTaskType() != TaskTypeRequests && req.GetTaskType() != TaskTypeResults:
		// UNCONFIRMED: the real service knows more task types (ListTypes); the emulator only these.
		return nil, status.Errorf(codes.InvalidArgument, "unsupported task_type %q", req.GetTaskType())
	case req.GetUploadFormat() != UploadFormat:
		return nil, status.Errorf(codes.InvalidArgument, "unsupported upload_format %q (want %s)", req.GetUploadFormat(), UploadFormat)
	}
	now := timestamppb.Now()
	id := d.s.newID("fds")
	info := &fomods.DatasetInfo{
		DatasetId: id, FolderId: req.GetFolderId(), Name: req.GetName(), Description: req.GetDescription(),
		Metadata: req.GetMetadata(), Status: fomods.DatasetInfo_DRAFT, TaskType: req.GetTaskType(),
		CreatedAt: now, UpdatedAt: now, Labels: req.GetLabels(), AllowDataLog: req.GetAllowDataLog(),
		CreatedBy: emulatedUser,
	}
	//lint:ignore SA1019 deprecated, but recorded answers carry it and the SDK reads it
	info.CreatedById = emulatedUser
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.s.datasets[id] = &dataset{info: info, format: req.GetUploadFormat(), sig: d.s.newID("sig")}
	d.s.dsOrder = append(d.s.dsOrder, id)
	return &fomods.CreateDatasetResponse{DatasetId: id, Dataset: proto.Clone(info).(*fomods.DatasetInfo)}, nil
}

// emulatedUser is the created_by of everything the emulator makes.
const emulatedUser = "emulatoruser00000000"

// lookup returns the dataset; the caller holds s.mu.
func (s *Server) lookup(id string) (*dataset, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "dataset_id is required")
	}
	ds := s.datasets[id]
	if ds == nil {
		return nil, status.Errorf(codes.NotFound, "dataset %s not found", id)
	}
	return ds, nil
}

// Uploads returns how many complete uploads dataset id took (0 once deleted): tests check that a
// client never uploads a dataset twice.
func (s *Server) Uploads(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ds := s.datasets[id]; ds != nil {
		return ds.uploads
	}
	return 0
}

// draftDataset returns a dataset that may still take an upload; the caller holds s.mu.
func (s *Server) draftDataset(id string) (*dataset, error) {
	ds, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if ds.info.Status != fomods.DatasetInfo_DRAFT {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %s is %s, not DRAFT", id, ds.info.Status)
	}
	return ds, nil
}

func (d datasetService) GetUploadDraftUrl(_ context.Context, req *fomods.GetUploadDraftUrlRequest) (*fomods.GetUploadDraftUrlResponse, error) {
	if req.GetSizeBytes() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "size_bytes must be > 0")
	}
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	ds, err := d.s.draftDataset(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	ds.draftSize, ds.parts, ds.partTags = req.GetSizeBytes(), nil, nil
	return &fomods.GetUploadDraftUrlResponse{DatasetId: ds.info.DatasetId, UploadUrl: d.s.storageLink("upload", ds, "")}, nil
}

// maxPartSize bounds the part size of a multipart upload, as S3 does (5 GB); the SDK's parts
// are at least 5 MB, which the emulator does not require.
const maxPartSize = 5 << 30

func (d datasetService) StartMultipartUploadDraft(_ context.Context, req *fomods.StartMultipartUploadDraftRequest) (*fomods.StartMultipartUploadDraftResponse, error) {
	size, parts := req.GetSizeBytes(), req.GetParts()
	if size <= 0 || parts < 0 || parts > 10000 {
		return nil, status.Error(codes.InvalidArgument, "size_bytes must be > 0 and parts in 0..10000")
	}
	if parts == 0 { // "configured automatically": the SDK's default part size, 100 MB
		parts = max(1, (size+100<<20-1)/(100<<20))
	}
	if (size+parts-1)/parts > maxPartSize {
		return nil, status.Error(codes.InvalidArgument, "parts must be at most 5 GB each")
	}
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	ds, err := d.s.draftDataset(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	ds.draftSize, ds.draft, ds.uploaded = size, nil, false
	ds.parts, ds.partTags = make([][]byte, parts), make([]string, parts)
	urls := make([]string, parts)
	for i := range urls {
		urls[i] = d.s.storageLink("upload", ds, strconv.FormatInt(int64(i+1), 10))
	}
	return &fomods.StartMultipartUploadDraftResponse{DatasetId: ds.info.DatasetId, MultipartUploadUrls: urls}, nil
}

func (d datasetService) FinishMultipartUploadDraft(_ context.Context, req *fomods.FinishMultipartUploadDraftRequest) (*fomods.FinishMultipartUploadDraftResponse, error) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	ds, err := d.s.draftDataset(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	if ds.parts == nil {
		return nil, status.Error(codes.FailedPrecondition, "no multipart upload was started")
	}
	got := req.GetUploadedParts()
	if len(got) != len(ds.parts) {
		return nil, status.Errorf(codes.InvalidArgument, "%d parts listed, %d started", len(got), len(ds.parts))
	}
	var all bytes.Buffer
	for _, p := range slices.SortedFunc(slices.Values(got), func(a, b *fomods.UploadedPartInfo) int { return int(a.GetPartNum() - b.GetPartNum()) }) {
		i := p.GetPartNum() - 1
		if i < 0 || i >= int64(len(ds.parts)) || ds.parts[i] == nil || ds.partTags[i] != p.GetEtag() {
			return nil, status.Errorf(codes.InvalidArgument, "part %d: not uploaded or etag %q does not match", p.GetPartNum(), p.GetEtag())
		}
		all.Write(ds.parts[i])
	}
	if int64(all.Len()) != ds.draftSize {
		return nil, status.Errorf(codes.InvalidArgument, "parts hold %d bytes, %d were declared", all.Len(), ds.draftSize)
	}
	ds.draft, ds.uploaded, ds.parts, ds.partTags = all.Bytes(), true, nil, nil
	ds.uploads++
	return &fomods.FinishMultipartUploadDraftResponse{DatasetId: ds.info.DatasetId}, nil
}

func (d datasetService) Validate(_ context.Context, req *fomods.ValidateDatasetRequest) (*operation.Operation, error) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	ds, err := d.s.draftDataset(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	if !ds.uploaded {
		// UNCONFIRMED: what the service does for a dataset with nothing uploaded.
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %s has no uploaded data", ds.info.DatasetId)
	}
	rows, errs := validateLines(ds.draft, d.s.faults.Load().InvalidLines)
	now := time.Now()
	ds.info.Status, ds.info.UpdatedAt = fomods.DatasetInfo_VALIDATING, timestamppb.New(now)
	total := int64(len(rows))
	for _, e := range errs {
		total += int64(len(e.GetRowNumbers()))
	}
	o := &op{
		id: d.s.newID("fds"), created: now, doneAt: now.Add(d.s.cfg.StepDelay), dataset: ds,
		meta: &fomods.ValidateDatasetMetadata{DatasetId: ds.info.DatasetId, ValidRows: int64(len(rows)), ProcessedRows: total, TotalRows: total},
		resp: &fomods.ValidateDatasetResponse{DatasetId: ds.info.DatasetId, IsValid: len(errs) == 0, Errors: errs},
		rows: rows,
	}
	d.s.ops[o.id] = o
	return o.render(now), nil
}

// validateLines parses the uploaded JSON Lines: each line must be an object whose "request" is a
// non-empty list of messages with a role (system, user, assistant) and a text. Errors are grouped
// by name and description, with 1-based line numbers (UNCONFIRMED: the sources show neither the
// names nor whether rows count from 0 or 1). A final newline ends the last line; any other empty
// line is an error.
func validateLines(data []byte, faulty []int64) ([][]emulator.Message, []*fomods.ValidationError) {
	var rows [][]emulator.Message
	var errs []*fomods.ValidationError
	add := func(name, desc string, line int64) {
		for _, e := range errs {
			if e.Error == name && e.ErrorDescription == desc {
				e.RowNumbers = append(e.RowNumbers, line)
				return
			}
		}
		errs = append(errs, &fomods.ValidationError{Error: name, ErrorDescription: desc, RowNumbers: []int64{line}})
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for i, l := range lines {
		line := int64(i + 1)
		if slices.Contains(faulty, line) {
			add(ErrEmulatedFault, "emulated fault: line rejected", line)
			continue
		}
		var v struct {
			Request []emulator.Message `json:"request"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSuffix(l, "\r")), &v); err != nil {
			add(ErrInvalidJSON, "line is not a JSON object", line)
			continue
		}
		if desc := checkRequest(v.Request); desc != "" {
			add(ErrInvalidRequest, desc, line)
			continue
		}
		rows = append(rows, v.Request)
	}
	return rows, errs
}

func checkRequest(msgs []emulator.Message) string {
	if len(msgs) == 0 {
		return `"request" must be a non-empty list of messages`
	}
	for _, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return `a message's "role" must be system, user or assistant`
		}
		if m.Text == "" {
			return `a message's "text" must not be empty`
		}
	}
	return ""
}

// settle finishes a validation whose time has come; the caller holds s.mu.
func (o *op) settle(now time.Time) {
	if o.dataset == nil || o.applied || now.Before(o.doneAt) {
		return
	}
	o.applied = true
	ds := o.dataset
	if ds.info.Status != fomods.DatasetInfo_VALIDATING {
		return // deleted meanwhile
	}
	ds.info.UpdatedAt = timestamppb.New(now)
	ds.info.SizeBytes = int64(len(ds.draft))
	if !o.resp.IsValid {
		ds.info.Status, ds.info.ValidationError = fomods.DatasetInfo_INVALID, o.resp.Errors
		return
	}
	ds.info.Status, ds.info.Rows, ds.rows = fomods.DatasetInfo_READY, int64(len(o.rows)), o.rows
	data, err := writeParquet(o.rows, nil)
	if err == nil {
		ds.files = []file{{key: "main", data: data}} // the key a recorded source dataset had
	}
}

// settleAll finishes due validations; the caller holds s.mu.
func (s *Server) settleAll(now time.Time) {
	for _, o := range s.ops {
		o.settle(now)
	}
}

func (d datasetService) Describe(_ context.Context, req *fomods.DescribeDatasetRequest) (*fomods.DescribeDatasetResponse, error) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.s.settleAll(time.Now())
	ds, err := d.s.lookup(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	return &fomods.DescribeDatasetResponse{Dataset: proto.Clone(ds.info).(*fomods.DatasetInfo)}, nil
}

// List applies the filters the proto has: statuses, a name substring, task types and ids. It has
// no label filter: a client filters by labels itself. The order (creation) is UNCONFIRMED.
func (d datasetService) List(_ context.Context, req *fomods.ListDatasetsRequest) (*fomods.ListDatasetsResponse, error) {
	if req.GetFolderId() == "" {
		return nil, status.Error(codes.InvalidArgument, "folder_id is required")
	}
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.s.settleAll(time.Now())
	var match []*fomods.DatasetInfo
	for _, id := range d.s.dsOrder {
		ds := d.s.datasets[id]
		switch {
		case ds == nil, ds.info.FolderId != req.GetFolderId(),
			len(req.GetStatus()) > 0 && !slices.Contains(req.GetStatus(), ds.info.Status),
			!strings.Contains(ds.info.Name, req.GetDatasetNamePattern()),
			len(req.GetTaskTypeFilter()) > 0 && !slices.Contains(req.GetTaskTypeFilter(), ds.info.TaskType),
			len(req.GetDatasetIds()) > 0 && !slices.Contains(req.GetDatasetIds(), id):
			continue
		}
		match = append(match, ds.info)
	}
	page, next, err := paginate(match, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &fomods.ListDatasetsResponse{NextPageToken: next}
	for _, info := range page {
		out.Datasets = append(out.Datasets, proto.Clone(info).(*fomods.DatasetInfo))
	}
	return out, nil
}

// paginate cuts one page; the token is the offset of the next page (opaque to clients). The
// default page size is 100, as the proto says.
func paginate[T any](all []T, size int64, token string) ([]T, string, error) {
	if size <= 0 {
		size = 100
	}
	var from int64
	if token != "" {
		n, err := strconv.ParseInt(token, 10, 64)
		if err != nil || n < 0 {
			return nil, "", status.Errorf(codes.InvalidArgument, "invalid page_token %q", token)
		}
		from = n
	}
	if from >= int64(len(all)) {
		return nil, "", nil
	}
	to := min(from+size, int64(len(all)))
	next := ""
	if to < int64(len(all)) {
		next = strconv.FormatInt(to, 10)
	}
	return all[from:to], next, nil
}

func (d datasetService) GetDownloadUrls(_ context.Context, req *fomods.GetDownloadUrlsRequest) (*fomods.GetDownloadUrlsResponse, error) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.s.settleAll(time.Now())
	ds, err := d.s.lookup(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	if ds.info.Status != fomods.DatasetInfo_READY {
		// UNCONFIRMED: what the service answers for a dataset that is not READY.
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %s is %s, not READY", ds.info.DatasetId, ds.info.Status)
	}
	out := &fomods.GetDownloadUrlsResponse{DatasetId: ds.info.DatasetId}
	for _, f := range ds.files {
		out.DownloadUrls = append(out.DownloadUrls, &fomods.DatasetFileDownloadUrl{Key: f.key, Url: d.s.storageLink("download", ds, f.key)})
	}
	return out, nil
}

func (d datasetService) Delete(_ context.Context, req *fomods.DeleteDatasetRequest) (*fomods.DeleteDatasetResponse, error) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	ds, err := d.s.lookup(req.GetDatasetId())
	if err != nil {
		return nil, err
	}
	ds.info.Status = fomods.DatasetInfo_DELETING // for a validation still holding it
	delete(d.s.datasets, ds.info.DatasetId)
	return &fomods.DeleteDatasetResponse{}, nil
}

// op is an operation OperationService.Get can read: a validation (dataset set) or a batch
// completion (task set).
type op struct {
	id      string
	created time.Time

	dataset *dataset
	doneAt  time.Time
	applied bool
	meta    *fomods.ValidateDatasetMetadata
	resp    *fomods.ValidateDatasetResponse
	rows    [][]emulator.Message

	task *task
}

// render returns the operation as read at now; the caller holds s.mu. A validation carries no
// metadata until it is done, as recorded.
func (o *op) render(now time.Time) *operation.Operation {
	if o.task != nil {
		return o.task.operation(o)
	}
	out := &operation.Operation{Id: o.id, Description: "Validate dataset", CreatedAt: timestamppb.New(o.created), CreatedBy: emulatedUser, ModifiedAt: timestamppb.New(o.created)}
	if now.Before(o.doneAt) {
		return out
	}
	out.Done, out.ModifiedAt = true, timestamppb.New(o.doneAt)
	out.Metadata = mustAny(o.meta)
	out.Result = &operation.Operation_Response{Response: mustAny(o.resp)}
	return out
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("batchmode: marshal %T: %v", m, err)) // only our own well-formed messages
	}
	return a
}

// operationService implements OperationService.Get; Cancel is not emulated (the batch task is
// cancelled through BatchInferenceService.Cancel).
type operationService struct {
	operation.UnimplementedOperationServiceServer
	s *Server
}

func (o operationService) Get(_ context.Context, req *operation.GetOperationRequest) (*operation.Operation, error) {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	now := time.Now()
	op := o.s.ops[req.GetOperationId()]
	if op == nil {
		return nil, status.Errorf(codes.NotFound, "operation %s not found", req.GetOperationId())
	}
	op.settle(now)
	return op.render(now), nil
}

// etag is S3's ETag of a single-part object: the quoted MD5 of its bytes.
func etag(b []byte) string {
	sum := md5.Sum(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}
