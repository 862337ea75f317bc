package job

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gocarina/gocsv"

	"github.com/batchgpt/batchgpt/internal/api"
)

// Result is one line of the results file. The format is documented in the README.
type Result struct {
	ID                string       `json:"id"`
	Status            string       `json:"status"` // "succeeded" or "failed"
	Text              string       `json:"text"`
	AlternativeStatus string       `json:"alternative_status,omitempty"`
	Usage             *Usage       `json:"usage,omitempty"`
	ModelVersion      string       `json:"model_version,omitempty"`
	OperationID       string       `json:"operation_id,omitempty"`
	Attempts          int          `json:"attempts"`
	Error             *ResultError `json:"error,omitempty"`
	// Cached marks an answer taken from the result cache: nothing was submitted for the row;
	// OperationID, Usage and ModelVersion are those of the run that paid for it, at CachedAt.
	Cached   bool   `json:"cached,omitempty"`
	CachedAt string `json:"cached_at,omitempty"` // RFC 3339
	// DeduplicatedFrom is the id of the row of this run that sent the same request: this row
	// was not submitted and has that row's answer.
	DeduplicatedFrom string `json:"deduplicated_from,omitempty"`
}

// Usage is the token count of a row, as numbers.
type Usage struct {
	InputTokens      int64 `json:"input_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// ResultError says why a row failed.
type ResultError struct {
	Kind      string `json:"kind"` // invalid-request, operation-failed, not-found, gave-up
	Code      int    `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"` // x-request-id of the API's answer, for support
}

// Status values of a result.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Error kinds of a failed row.
const (
	KindInvalid   = "invalid-request"
	KindOpFailed  = "operation-failed"
	KindNotFound  = "not-found"
	KindGaveUp    = "gave-up"
	KindAuth      = "auth"
	KindMalformed = "malformed-response"
)

// csvResult is Result flattened for CSV output, written with gocsv.
type csvResult struct {
	ID                string `csv:"id"`
	Status            string `csv:"status"`
	Text              string `csv:"text"`
	AlternativeStatus string `csv:"alternative_status"`
	InputTokens       int64  `csv:"input_tokens"`
	CompletionTokens  int64  `csv:"completion_tokens"`
	TotalTokens       int64  `csv:"total_tokens"`
	ModelVersion      string `csv:"model_version"`
	OperationID       string `csv:"operation_id"`
	Attempts          int    `csv:"attempts"`
	ErrorKind         string `csv:"error_kind"`
	ErrorCode         int    `csv:"error_code"`
	ErrorMessage      string `csv:"error_message"`
	Cached            bool   `csv:"cached"`
	CachedAt          string `csv:"cached_at"`
	DeduplicatedFrom  string `csv:"deduplicated_from"`
}

// Formats of the results file.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// resultsFormat picks the format from the output file name.
func resultsFormat(path string) string {
	if strings.HasSuffix(strings.ToLower(path), ".csv") {
		return FormatCSV
	}
	return FormatJSONL
}

// preamble is what a new results file starts with: the CSV header, nothing for JSONL.
func preamble(format string) ([]byte, error) {
	if format != FormatCSV {
		return nil, nil
	}
	s, err := gocsv.MarshalString([]csvResult{})
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	return []byte(s), nil
}

// encode renders one result as a complete line (or CSV record) ending in a newline.
func (r *Result) encode(format string) ([]byte, error) {
	if format == FormatCSV {
		c := csvResult{ID: r.ID, Status: r.Status, Text: r.Text, AlternativeStatus: r.AlternativeStatus,
			ModelVersion: r.ModelVersion, OperationID: r.OperationID, Attempts: r.Attempts,
			Cached: r.Cached, CachedAt: r.CachedAt, DeduplicatedFrom: r.DeduplicatedFrom}
		if r.Usage != nil {
			c.InputTokens, c.CompletionTokens, c.TotalTokens = r.Usage.InputTokens, r.Usage.CompletionTokens, r.Usage.TotalTokens
		}
		if r.Error != nil {
			c.ErrorKind, c.ErrorCode, c.ErrorMessage = r.Error.Kind, r.Error.Code, r.Error.Message
		}
		var b bytes.Buffer
		if err := gocsv.MarshalWithoutHeaders([]csvResult{c}, &b); err != nil {
			return nil, fmt.Errorf("encode result %q: %w", r.ID, err)
		}
		return b.Bytes(), nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result %q: %w", r.ID, err)
	}
	return append(b, '\n'), nil
}

// fromOperation builds the result of a finished operation.
func fromOperation(id string, op *api.Operation, attempts int) *Result {
	r := &Result{ID: id, OperationID: op.ID, Attempts: attempts}
	if op.Failed() {
		r.Status = StatusFailed
		r.Error = &ResultError{Kind: KindOpFailed, Code: op.Error.Code, Message: op.Error.Message}
		return r
	}
	if op.Response == nil || len(op.Response.Alternatives) == 0 {
		r.Status = StatusFailed
		r.Error = &ResultError{Kind: KindMalformed, Message: "operation done without a response or alternatives"}
		return r
	}
	alt := op.Response.Alternatives[0]
	u := op.Response.Usage
	r.Status = StatusSucceeded
	r.Text = alt.Message.Text
	r.AlternativeStatus = string(alt.Status)
	r.Usage = &Usage{InputTokens: int64(u.InputTextTokens), CompletionTokens: int64(u.CompletionTokens), TotalTokens: int64(u.TotalTokens)}
	r.ModelVersion = op.Response.ModelVersion
	return r
}

// failure builds the result of a row that failed without a finished operation.
func failure(id, opID string, attempts int, kind string, err error) *Result {
	re := &ResultError{Kind: kind, Message: err.Error()}
	var ae *api.Error
	if errors.As(err, &ae) {
		re.Code = ae.Code
		re.Message = ae.Message
		re.RequestID = ae.RequestID
	}
	return &Result{ID: id, Status: StatusFailed, OperationID: opID, Attempts: attempts, Error: re}
}

// Tally sums a results file: rows by status and tokens. It reads JSONL and CSV results.
type Tally struct {
	Succeeded, Failed      int
	InputTokens, OutTokens int64 // billed: rows answered from the cache or a duplicate are not
	Cached, Deduplicated   int
	SavedTokens            int64 // tokens of the rows answered from the cache or a duplicate
	FailedByKind           map[string]int
}

// tallyResults reads the results file written so far (used by status).
func tallyResults(path, format string, limit int64) (Tally, error) {
	t := Tally{FailedByKind: map[string]int{}}
	err := eachResult(path, format, limit, func(r *Result) {
		var in, out int64
		if r.Usage != nil {
			in, out = r.Usage.InputTokens, r.Usage.CompletionTokens
		}
		if r.Status == StatusSucceeded {
			t.Succeeded++
		} else {
			kind := ""
			if r.Error != nil {
				kind = r.Error.Kind
			}
			t.Failed++
			t.FailedByKind[kind]++
		}
		switch {
		case r.DeduplicatedFrom != "":
			t.Deduplicated++
		case r.Cached:
			t.Cached++
		}
		if r.Cached || r.DeduplicatedFrom != "" {
			t.SavedTokens += in + out
			return
		}
		t.InputTokens += in
		t.OutTokens += out
	})
	return t, err
}

// eachResult calls fn for every complete line of a results file (JSONL or CSV) up to limit bytes
// (all of it if limit < 0); lines that cannot be read are skipped.
func eachResult(path, format string, limit int64, fn func(*Result)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	var rd io.Reader = f
	if limit >= 0 {
		rd = io.LimitReader(f, limit)
	}
	if format == FormatCSV {
		err := gocsv.UnmarshalToCallback(rd, func(c csvResult) {
			r := Result{ID: c.ID, Status: c.Status, Text: c.Text, AlternativeStatus: c.AlternativeStatus,
				Usage:        &Usage{InputTokens: c.InputTokens, CompletionTokens: c.CompletionTokens, TotalTokens: c.TotalTokens},
				ModelVersion: c.ModelVersion, OperationID: c.OperationID, Attempts: c.Attempts,
				Cached: c.Cached, CachedAt: c.CachedAt, DeduplicatedFrom: c.DeduplicatedFrom}
			if c.ErrorKind != "" {
				r.Error = &ResultError{Kind: c.ErrorKind, Code: c.ErrorCode, Message: c.ErrorMessage}
			}
			fn(&r)
		})
		if err != nil && !errors.Is(err, gocsv.ErrEmptyCSVFile) {
			return fmt.Errorf("read results %s: %w", path, err)
		}
		return nil
	}
	br := bufio.NewReaderSize(rd, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var r Result
			if json.Unmarshal(line, &r) == nil {
				fn(&r)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read results %s: %w", path, err)
		}
	}
}
