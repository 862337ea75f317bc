package job

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/gocarina/gocsv"
	segjson "github.com/segmentio/encoding/json"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/codes"
	"github.com/batchgpt/batchgpt/store"
)

// Result is one line of the results file. The format is documented in the README.
type Result struct {
	ID                string `json:"id"`
	Status            string `json:"status"` // "succeeded" or "failed"
	Text              string `json:"text"`
	AlternativeStatus string `json:"alternative_status,omitempty"`
	// Truncated marks an answer cut at maxTokens (ALTERNATIVE_STATUS_TRUNCATED_FINAL): a success.
	Truncated    bool         `json:"truncated,omitempty"`
	Usage        *Usage       `json:"usage,omitempty"`
	ModelVersion string       `json:"model_version,omitempty"`
	OperationID  string       `json:"operation_id,omitempty"`
	Attempts     int          `json:"attempts"`
	Error        *ResultError `json:"error,omitempty"`
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
	Kind      string `json:"kind"` // invalid-request, operation-failed, not-found, gave-up, content-filter, cancelled, ...
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
	// KindContentFilter: the API's content filter stopped the answer (unless --accept-filtered).
	KindContentFilter = "content-filter"
	// KindCancelled: the operation was cancelled (batchgpt cancel, or anyone else) and finished
	// with code 1 CANCELLED; resume --retry-failed submits the row again.
	KindCancelled = "cancelled"
)

// csvResult is Result flattened for CSV output (usage and error), written and read with gocsv. New
// columns only ever go at the end, and lines are written in the columns of the file's own header
// (see CSVHeader): a run resumed by a newer batchgpt appends to a file an older one began.
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
	ErrorRequestID    string `csv:"error_request_id"`
	Truncated         bool   `csv:"truncated"`
}

// csvColumns are the columns of csvResult, in order: the header of a new CSV results file.
var csvColumns = func() []string {
	s, err := gocsv.MarshalString([]csvResult{})
	if err != nil {
		panic(err) // a static struct: cannot fail
	}
	cols, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		panic(err)
	}
	return cols
}()

func toCSV(r *Result) csvResult {
	c := csvResult{ID: r.ID, Status: r.Status, Text: r.Text, AlternativeStatus: r.AlternativeStatus,
		ModelVersion: r.ModelVersion, OperationID: r.OperationID, Attempts: r.Attempts,
		Cached: r.Cached, CachedAt: r.CachedAt, DeduplicatedFrom: r.DeduplicatedFrom, Truncated: r.Truncated}
	if r.Usage != nil {
		c.InputTokens, c.CompletionTokens, c.TotalTokens = r.Usage.InputTokens, r.Usage.CompletionTokens, r.Usage.TotalTokens
	}
	if r.Error != nil {
		c.ErrorKind, c.ErrorCode, c.ErrorMessage, c.ErrorRequestID = r.Error.Kind, r.Error.Code, r.Error.Message, r.Error.RequestID
	}
	return c
}

func (c *csvResult) result() *Result {
	r := &Result{ID: c.ID, Status: c.Status, Text: c.Text, AlternativeStatus: c.AlternativeStatus,
		Usage:        &Usage{InputTokens: c.InputTokens, CompletionTokens: c.CompletionTokens, TotalTokens: c.TotalTokens},
		ModelVersion: c.ModelVersion, OperationID: c.OperationID, Attempts: c.Attempts,
		Cached: c.Cached, CachedAt: c.CachedAt, DeduplicatedFrom: c.DeduplicatedFrom, Truncated: c.Truncated}
	if c.ErrorKind != "" {
		r.Error = &ResultError{Kind: c.ErrorKind, Code: c.ErrorCode, Message: c.ErrorMessage, RequestID: c.ErrorRequestID}
	}
	return r
}

// fromCSV reads a record of a CSV results file whose header maps column names to positions.
// Missing columns (a file of an older batchgpt) are empty; a value that does not parse makes
// the record unreadable.
func fromCSV(rec []string, header map[string]int) (*Result, error) {
	fields := make([]string, len(csvColumns))
	for i, col := range csvColumns {
		if k, ok := header[col]; ok && k < len(rec) {
			fields[i] = rec[k]
		}
	}
	var out []csvResult
	if err := gocsv.UnmarshalCSVWithoutHeaders(oneRecord{fields}, &out); err != nil {
		return nil, err
	}
	return out[0].result(), nil
}

// oneRecord is a gocsv.CSVReader of a single record already read.
type oneRecord struct{ rec []string }

func (o oneRecord) Read() ([]string, error)      { return o.rec, nil }
func (o oneRecord) ReadAll() ([][]string, error) { return [][]string{o.rec}, nil }

// CSVHeader returns the columns of the CSV results file at path: those of its header, which an
// older batchgpt may have written with fewer columns (always a prefix of csvColumns); csvColumns
// when it has none yet.
func CSVHeader(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	cols, err := cr.Read()
	if err == io.EOF {
		return csvColumns, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the header of %s: %w", path, err)
	}
	if len(cols) > len(csvColumns) || !slices.Equal(cols, csvColumns[:len(cols)]) {
		return nil, fmt.Errorf("results file %s: its header %q is not one batchgpt writes", path, strings.Join(cols, ","))
	}
	return cols, nil
}

// Formats of the results file.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// ResultsFormat picks the format from the output file name.
func ResultsFormat(path string) string {
	if strings.HasSuffix(strings.ToLower(path), ".csv") {
		return FormatCSV
	}
	return FormatJSONL
}

// Preamble is what a new results file starts with: the CSV header, nothing for JSONL.
func Preamble(format string) ([]byte, error) {
	if format != FormatCSV {
		return nil, nil
	}
	s, err := gocsv.MarshalString([]csvResult{})
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	return []byte(s), nil
}

// Encode renders one result as a complete line ending in a newline: JSON, or a CSV record in the
// columns cols of the file's header (a prefix of csvColumns).
func (r *Result) Encode(format string, cols []string) ([]byte, error) {
	if format == FormatCSV {
		var b bytes.Buffer
		w := firstColumns{csv.NewWriter(&b), len(cols)}
		if err := gocsv.MarshalCSVWithoutHeaders([]csvResult{toCSV(r)}, w); err != nil {
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

// firstColumns is a gocsv.CSVWriter that writes the first n fields of each record: the columns of
// a results file an older batchgpt began.
type firstColumns struct {
	*csv.Writer
	n int
}

func (w firstColumns) Write(rec []string) error { return w.Writer.Write(rec[:min(w.n, len(rec))]) }

// fromOperation builds the result of a finished operation. acceptFiltered is the run's
// --accept-filtered (see judge).
func fromOperation(id string, op *api.Operation, attempts int, acceptFiltered bool) *Result {
	r := &Result{ID: id, OperationID: op.ID, Attempts: attempts}
	if op.Failed() {
		r.Status = StatusFailed
		kind := KindOpFailed
		if codes.Code(op.Error.Code) == codes.Canceled {
			kind = KindCancelled // batchgpt cancel, or anyone else, cancelled it
		}
		r.Error = &ResultError{Kind: kind, Code: op.Error.Code, Message: op.Error.Message}
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
	r.judge(acceptFiltered)
	return r
}

// contentFilterMessage explains a row failed by the content filter.
const contentFilterMessage = "the API's content filter stopped the answer (ALTERNATIVE_STATUS_CONTENT_FILTER): " +
	"change the prompt, or keep such answers as successes with --accept-filtered"

// judge decides what the alternative status of an answer means for its row (docs/api.md §3),
// the same for an answer just received and one from the cache. A content-filtered answer is not
// the answer asked for: the row fails (its text kept) unless the run accepts such answers. An
// answer cut at maxTokens is a success, marked truncated.
func (r *Result) judge(acceptFiltered bool) {
	switch api.AlternativeStatus(r.AlternativeStatus) {
	case api.AltTruncatedFinal:
		r.Truncated = true
	case api.AltContentFilter:
		if !acceptFiltered {
			r.Status = StatusFailed
			r.Error = &ResultError{Kind: KindContentFilter, Message: contentFilterMessage}
		}
	}
}

// contentFiltered reports whether the row's answer was stopped by the content filter, accepted
// or not.
func (r *Result) contentFiltered() bool {
	return r.AlternativeStatus == string(api.AltContentFilter)
}

// countAnswer counts a result line's truncated or content-filtered answer for the summary.
func (j *Job) countAnswer(r *Result) {
	if r.Truncated {
		j.truncated.Add(1)
	}
	if r.contentFiltered() {
		j.contentFiltered.Add(1)
	}
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
	BilledRows             int   // lines with billed tokens (for the mean output of an answer)
	Cached, Deduplicated   int
	SavedTokens            int64 // tokens of the rows answered from the cache or a duplicate
	FailedByKind           map[string]int
	ContentFiltered        int // answers stopped by the content filter, failed or accepted
	Truncated              int // answers cut at maxTokens
}

// tallyResults reads the results file written so far (used by status). current, when not nil,
// reports whether the line ending at a byte offset is its row's latest: the lines of rows
// resolved again (resume --retry-failed) before the results are finalized are not counted.
func tallyResults(path, format string, limit int64, current func(end int64) bool) (Tally, error) {
	t := Tally{FailedByKind: map[string]int{}}
	err := EachResult(path, format, limit, func(r *Result, end int64) {
		if current != nil && !current(end) {
			return
		}
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
		if r.Truncated {
			t.Truncated++
		}
		if r.contentFiltered() {
			t.ContentFiltered++
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
		if in+out > 0 {
			t.BilledRows++
		}
	})
	return t, err
}

// latestLines returns the filter of tallyResults for st: until the results are finalized, a row
// resolved again (resume --retry-failed) has more than one line, and only the one the journal
// vouches for counts; nil when no line was superseded.
func latestLines(st *store.State) func(end int64) bool {
	if st.SupersededBytes() == 0 {
		return nil
	}
	ends := st.LineEnds()
	return func(end int64) bool {
		_, ok := slices.BinarySearch(ends, end)
		return ok
	}
}

// EachResult calls fn for every complete line of a results file (JSONL or CSV) up to limit bytes
// (all of it if limit < 0), with the byte offset where the line ends; lines that cannot be read
// are skipped.
func EachResult(path, format string, limit int64, fn func(r *Result, end int64)) error {
	return eachResult(path, format, limit, nil, fn)
}

// eachResult is EachResult for the lines whose id want accepts (every line when want is nil; want
// is asked once a line). It finds the id of a line as batchgpt writes it without decoding the line: most of the cost of a
// pass over a results file is decoding lines, and a pass for a few rows of ten million skips the
// others for the price of finding their id.
func eachResult(path, format string, limit int64, want func(id []byte) bool, fn func(r *Result, end int64)) error {
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
		cr := csv.NewReader(rd) // buffered inside; InputOffset counts what it parsed
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		cols, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read results %s: %w", path, err)
		}
		header := make(map[string]int, len(cols))
		for i, c := range cols {
			header[c] = i
		}
		for {
			rec, err := cr.Read()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read results %s: %w", path, err)
			}
			i, known := header["id"]
			known = known && i < len(rec)
			if want != nil && known && !want([]byte(rec[i])) {
				continue
			}
			if r, err := fromCSV(rec, header); err == nil && (want == nil || known || want([]byte(r.ID))) {
				fn(r, cr.InputOffset())
			}
		}
	}
	br := bufio.NewReaderSize(rd, 1<<20)
	var end int64
	for {
		line, err := br.ReadBytes('\n')
		end += int64(len(line))
		if len(line) > 0 && line[len(line)-1] == '\n' {
			id, known := plainID(line)
			if want != nil && known && !want(id) {
				continue // err is nil: the line ended with a newline
			}
			var r Result
			if decodeResult(line, &r) == nil && (want == nil || known || want([]byte(r.ID))) {
				fn(&r, end)
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

// plainID returns the id of a JSONL result line as batchgpt writes it (the id first), when it has
// nothing escaped; ok is false for any other line, which must be decoded to be known.
func plainID(line []byte) (id []byte, ok bool) {
	const prefix = `{"id":"`
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return nil, false
	}
	rest := line[len(prefix):]
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return nil, false
	}
	return rest[:i], true
}

// decodeResult decodes one JSONL results line. Not encoding/json: a pass over a results file is
// mostly decoding (status reads every line), and segmentio's decoder, which follows encoding/json
// (FuzzResultLine holds it to that), takes about a fifth of the time: `status` of a ten-million-row
// run took 70 s, now 22 s.
func decodeResult(line []byte, r *Result) error { return segjson.Unmarshal(line, r) }
