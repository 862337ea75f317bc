package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf8"
)

// Input formats.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// Options say how to read an input file and which defaults its rows get.
type Options struct {
	Format string `json:"format,omitempty"` // "", "jsonl" or "csv"; "" = by extension
	Folder string `json:"folder,omitempty"` // folder id for model URIs built from short names
	// Model is a short name ("yandexgpt-lite", "yandexgpt/rc", "llama-lite", ...)
	// or a full "gpt://..." / "ds://..." URI. It may be empty for JSONL inputs
	// whose rows all carry a modelUri.
	Model  string `json:"model,omitempty"`
	System string `json:"system,omitempty"` // default system message (a row's own system/messages win)

	Temperature   *float64 `json:"temperature,omitempty"`    // 0..1
	MaxTokens     *int64   `json:"max_tokens,omitempty"`     // > 0
	ReasoningMode string   `json:"reasoning_mode,omitempty"` // REASONING_MODE_UNSPECIFIED, DISABLED or ENABLED_HIDDEN

	// JSONSchema is the default structured-output schema (the object sent as
	// jsonSchema.schema); JSONObject asks for any JSON object instead. They are
	// exclusive. A row's own jsonSchema/jsonObject replace both.
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
	JSONObject bool            `json:"json_object,omitempty"`

	// CSV only.
	PromptColumn string `json:"prompt_column,omitempty"` // default "prompt"
	IDColumn     string `json:"id_column,omitempty"`     // default "id"; without such a column the id is the row number
	SystemColumn string `json:"system_column,omitempty"` // optional; an empty cell means the default system message
	// Template is a text/template over the row's columns by header name, e.g.
	// `Translate to English: {{.text}}`; it replaces PromptColumn.
	Template string `json:"template,omitempty"`
}

// UnmarshalJSON reads Options in their snake_case form and in the Go field names that
// checkpoints written before the json tags carry ("PromptColumn", "MaxTokens", ...): every
// checkpoint ever written must resume with the settings it was made with. encoding/json matches
// keys case-insensitively, so only the names that differ by more than case need the second pass.
func (o *Options) UnmarshalJSON(b []byte) error {
	type plain Options // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var legacy struct {
		MaxTokens     *int64          `json:"MaxTokens"`
		ReasoningMode string          `json:"ReasoningMode"`
		JSONSchema    json.RawMessage `json:"JSONSchema"`
		JSONObject    bool            `json:"JSONObject"`
		PromptColumn  string          `json:"PromptColumn"`
		IDColumn      string          `json:"IDColumn"`
		SystemColumn  string          `json:"SystemColumn"`
	}
	if err := json.Unmarshal(b, &legacy); err != nil {
		return err
	}
	if p.MaxTokens == nil {
		p.MaxTokens = legacy.MaxTokens
	}
	if p.JSONSchema == nil {
		p.JSONSchema = legacy.JSONSchema
	}
	p.JSONObject = p.JSONObject || legacy.JSONObject
	for _, f := range []struct {
		dst *string
		old string
	}{
		{&p.ReasoningMode, legacy.ReasoningMode}, {&p.PromptColumn, legacy.PromptColumn},
		{&p.IDColumn, legacy.IDColumn}, {&p.SystemColumn, legacy.SystemColumn},
	} {
		if *f.dst == "" {
			*f.dst = f.old
		}
	}
	*o = Options(p)
	return nil
}

// Row is one input row ready to submit.
type Row struct {
	Index  int   // 0-based data row number (the checkpoint refers to rows by it)
	Line   int   // 1-based line where the row starts
	Offset int64 // byte offset of the row's first byte (so one row can be re-read)
	ID     string
	Body   []byte // the completionAsync request JSON
	// PromptChars counts the runes of all message texts (for token estimates).
	PromptChars int
	// MaxTokens is the request's completionOptions.maxTokens (0: none), the most it can be
	// answered with (for spend estimates, without parsing Body again).
	MaxTokens int64
}

// InputError is one problem in an input file.
type InputError struct {
	File  string
	Line  int    // 1-based; 0 when the problem concerns the whole file
	Field string // JSON path ("messages[1].role") or CSV column; may be empty
	Msg   string
}

func (e *InputError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		// %q keeps invalid UTF-8 in a field name out of the message.
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errAt reports a problem at line (0: the whole file) of c's input, in field when not "".
func (c *config) errAt(line int, field, format string, args ...any) *InputError {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &InputError{File: c.path, Line: line, Field: field, Msg: msg}
}

// ValidationError lists the problems found in an input file.
type ValidationError struct {
	File   string
	Errors []*InputError
	More   int // problems found beyond the listed ones
}

func (e *ValidationError) Error() string {
	if len(e.Errors) == 0 && e.More == 0 {
		return e.File + ": invalid input"
	}
	var b strings.Builder
	for i, ie := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(ie.Error())
	}
	if e.More > 0 {
		if len(e.Errors) > 0 {
			b.WriteByte('\n')
		}
		noun := "problems"
		if e.More == 1 {
			noun = "problem"
		}
		fmt.Fprintf(&b, "... and %d more %s", e.More, noun)
	}
	return b.String()
}

// Unwrap lets errors.As find the individual *InputError values.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, ie := range e.Errors {
		errs[i] = ie
	}
	return errs
}

// Summary describes a validated input file.
type Summary struct {
	Format          string // "jsonl" or "csv"
	Rows            int
	Size            int64  // bytes
	SHA256          string // hex digest of the exact file bytes
	PromptChars     int64
	EstimatedTokens int64
	// Chunks is the file's chunk table, taken in the same pass: the preamble, then sections of
	// about ChunkSize bytes that each start at a row, to the end of the file (see OpenChunks).
	Chunks []Chunk
}

// EstimateTokens approximates the number of input tokens for chars runes of
// prompt text as chars/4 rounded up. It is a rough planning figure only (Russian
// text usually needs more tokens per character than English); the tokenizer
// API gives exact counts.
func EstimateTokens(chars int64) int64 {
	if chars <= 0 {
		return 0
	}
	return (chars + 3) / 4
}

// config is Options checked and resolved for one file.
type config struct {
	path          string
	format        string
	folder        string
	model         string // full URI of the default model; "" if none
	system        string
	temperature   *float64
	maxTokens     *int64
	reasoningMode string
	jsonObject    bool
	jsonSchema    json.RawMessage

	promptCol, idCol, systemCol string
	idColSet                    bool // IDColumn was given, so it must exist
	tmpl                        *template.Template
	tmplCols                    []string // columns the template refers to
}

func newConfig(path string, opt Options) (*config, error) {
	c := &config{
		path:          path,
		folder:        opt.Folder,
		system:        opt.System,
		temperature:   opt.Temperature,
		maxTokens:     opt.MaxTokens,
		reasoningMode: opt.ReasoningMode,
		jsonObject:    opt.JSONObject,
	}
	switch opt.Format {
	case FormatJSONL, FormatCSV:
		c.format = opt.Format
	case "":
		switch ext := strings.ToLower(filepath.Ext(path)); ext {
		case ".jsonl", ".ndjson", ".json":
			c.format = FormatJSONL
		case ".csv":
			c.format = FormatCSV
		default:
			return nil, fmt.Errorf("%s: cannot tell the input format from the extension %q: use .jsonl or .csv, or set the format (jsonl or csv)", path, ext)
		}
	default:
		return nil, fmt.Errorf("unknown input format %q (want jsonl or csv)", opt.Format)
	}

	if opt.Model != "" {
		uri, err := ModelURI(opt.Folder, opt.Model)
		if err != nil {
			return nil, err
		}
		c.model = uri
	} else if c.format == FormatCSV {
		return nil, errors.New("no model: set --model")
	}
	if !utf8.ValidString(opt.System) {
		return nil, errors.New("the system message is not valid UTF-8")
	}
	if t := opt.Temperature; t != nil && !(*t >= 0 && *t <= 1) {
		return nil, fmt.Errorf("temperature %v is out of range (want 0 to 1)", *t)
	}
	if m := opt.MaxTokens; m != nil && *m <= 0 {
		return nil, fmt.Errorf("max tokens must be positive, not %d", *m)
	}
	if opt.ReasoningMode != "" && !reasoningModes[opt.ReasoningMode] {
		return nil, fmt.Errorf("invalid reasoning mode %q (want %s)", opt.ReasoningMode, reasoningModeList)
	}
	if len(opt.JSONSchema) > 0 {
		if opt.JSONObject {
			return nil, errors.New("a JSON schema and a plain JSON object output are exclusive")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(opt.JSONSchema, &m); err != nil || m == nil {
			return nil, errors.New("the JSON schema must be a JSON object")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, opt.JSONSchema); err != nil {
			return nil, fmt.Errorf("JSON schema: %w", err)
		}
		c.jsonSchema = buf.Bytes()
	}

	if c.format == FormatJSONL {
		if opt.Template != "" || opt.SystemColumn != "" ||
			(opt.PromptColumn != "" && opt.PromptColumn != "prompt") ||
			(opt.IDColumn != "" && opt.IDColumn != "id") {
			return nil, errors.New("column and template options apply to CSV input only")
		}
		return c, nil
	}

	c.promptCol, c.idCol, c.systemCol = opt.PromptColumn, opt.IDColumn, opt.SystemColumn
	if c.idCol == "" {
		c.idCol = "id"
	} else {
		c.idColSet = true
	}
	if opt.Template != "" {
		if opt.PromptColumn != "" {
			return nil, errors.New("a prompt column and a template are exclusive")
		}
		if !utf8.ValidString(opt.Template) {
			return nil, errors.New("the template is not valid UTF-8")
		}
		t, err := template.New("template").Option("missingkey=error").Parse(opt.Template)
		if err != nil {
			return nil, fmt.Errorf("parse template: %w", err)
		}
		c.tmpl = t
		c.tmplCols = templateColumns(t)
	} else if c.promptCol == "" {
		c.promptCol = "prompt"
	}
	return c, nil
}

// scanner yields the rows of one input format.
type scanner interface {
	// next returns the next row. spec is never nil; errs lists the row's
	// problems. err is io.EOF at the end, or an I/O error.
	next() (pos rowPos, spec *rowSpec, errs []*InputError, err error)
	// skip is next without parsing the row: it returns only the row's position.
	skip() (rowPos, error)
	// reread parses the row at pos again (to confirm a duplicate id).
	reread(pos rowPos) (*rowSpec, []*InputError, error)
}

// rowPos locates a row in its file.
type rowPos struct {
	index  int
	line   int
	offset int64
}

// newScanner starts reading the file f through r (which may be f itself or a
// reader that also hashes). Header problems of a CSV file come back as hdrErrs.
func newScanner(c *config, r io.Reader, f io.ReaderAt) (sc scanner, hdrErrs []*InputError, err error) {
	if c.format == FormatCSV {
		cs, hdrErrs, err := newCSVScanner(c, r, f)
		if cs == nil { // not a nil *csvScanner in a non-nil interface
			return nil, hdrErrs, err
		}
		return cs, nil, nil
	}
	return newJSONLScanner(c, r, f), nil, nil
}

// section returns the part of f from off on.
func section(f io.ReaderAt, off int64) *io.SectionReader {
	return io.NewSectionReader(f, off, math.MaxInt64-off)
}

// Validate reads the whole file once: it computes the SHA-256 of its exact
// bytes and its chunk table (po may set the chunk size), counts rows and
// prompt characters, and checks every row, including
// that ids are unique. It returns a *ValidationError listing up to maxErrors
// problems (all of them if maxErrors <= 0) when the input is invalid, and
// other errors for bad options or I/O failures.
func Validate(path string, opt Options, maxErrors int, po ...PassOption) (Summary, error) {
	return validate(path, opt, maxErrors, true, nil, passOf(po))
}

// validRowFunc is called for each row without problems while an input is validated.
type validRowFunc func(c *config, pos rowPos, spec *rowSpec) error

func validate(path string, opt Options, maxErrors int, checkIDs bool, valid validRowFunc, pc passConfig) (Summary, error) {
	c, err := newConfig(path, opt)
	if err != nil {
		return Summary{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, fmt.Errorf("open input: %w", err)
	}
	defer f.Close()

	h := &countingHash{h: sha256.New()}
	chunks := newChunker(f, pc.chunkSize)
	tee := io.TeeReader(f, io.MultiWriter(h, chunks))
	verr := &ValidationError{File: path}
	add := func(errs []*InputError) {
		for _, e := range errs {
			if maxErrors <= 0 || len(verr.Errors) < maxErrors {
				verr.Errors = append(verr.Errors, e)
			} else {
				verr.More++
			}
		}
	}
	sum := Summary{Format: c.format}

	sc, hdrErrs, err := newScanner(c, tee, f)
	if err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	add(hdrErrs)
	var ids *idSet
	if checkIDs {
		ids = newIDSet()
		defer ids.free()
	}
	if sc != nil { // nil after header problems: the rows cannot be checked
		if err := validateRows(c, sc, &sum, add, ids, valid, chunks, fileSize(f)); err != nil {
			return Summary{}, fmt.Errorf("read %s: %w", path, err)
		}
	}
	// Hash whatever the scanner did not need to read.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	if ids != nil && ids.suspects() {
		// Some ids may repeat: the rows are read again, their problems found again in the same
		// order, now with the duplicate ids among them.
		verr.Errors, verr.More = nil, 0
		if err := recheckRows(c, f, add, ids); err != nil {
			return Summary{}, fmt.Errorf("read %s: %w", path, err)
		}
	}
	if sum.Rows == 0 && len(hdrErrs) == 0 {
		add([]*InputError{{File: path, Msg: "no data rows"}})
	}
	if sum.Chunks, err = chunks.finish(); err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	sum.Size = h.n
	sum.SHA256 = hex.EncodeToString(h.h.Sum(nil))
	sum.EstimatedTokens = EstimateTokens(sum.PromptChars)
	if len(verr.Errors) > 0 || verr.More > 0 {
		return sum, verr
	}
	return sum, nil
}

// validateRows checks every row of sc and, with ids, notes each row's id in it; valid is called
// for each row without problems; chunks learns where each row starts. size is the file's size (0
// if unknown), to size ids.
func validateRows(c *config, sc scanner, sum *Summary, add func([]*InputError), ids *idSet, valid validRowFunc, chunks *chunker, size int64) error {
	for {
		pos, spec, errs, err := sc.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := chunks.row(pos); err != nil {
			return err
		}
		sum.Rows++
		if sum.Rows == sizingRows && ids != nil {
			ids.hashes.reserve(rowsHint(sum.Rows, pos.offset, size))
		}
		add(errs)
		if spec.id != "" && ids != nil {
			ids.add(spec.id)
		}
		if len(errs) == 0 {
			sum.PromptChars += int64(c.promptChars(spec))
			if valid != nil {
				if err := valid(c, pos, spec); err != nil {
					return err
				}
			}
		}
	}
}

// recheckRows reads the rows of f again after ids found suspects: it reports each row's problems
// as validateRows did, and the rows whose id is that of an earlier row.
func recheckRows(c *config, f *os.File, add func([]*InputError), ids *idSet) error {
	sc, _, err := newScanner(c, section(f, 0), f)
	if err != nil || sc == nil { // the first pass read the header without a problem
		return err
	}
	for {
		pos, spec, errs, err := sc.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		add(errs)
		if spec.id == "" {
			continue
		}
		first, err := ids.check(sc, spec.id, pos)
		if err != nil {
			return err
		}
		if first != nil {
			add([]*InputError{c.errAt(pos.line, "id", "duplicate id %q (first on line %d)", spec.id, first.line)})
		}
	}
}

// fileSize returns the size of f, or 0 if it cannot tell.
func fileSize(f *os.File) int64 {
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		return fi.Size()
	}
	return 0
}

// rowsHint estimates the rows of a file of size bytes whose first rows rows took offset bytes
// (rounded up by 5%), at most MaxRowsHint; rows when it cannot tell.
func rowsHint(rows int, offset, size int64) int {
	if size <= offset || offset <= 0 {
		return rows
	}
	return int(min(float64(rows)*float64(size)/float64(offset)*1.05, MaxRowsHint))
}

// countingHash hashes and counts what is written to it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// CheckOptions reports a problem with the options themselves (format, model, template, ranges)
// for the input at path, without reading it: a usage error, before anything else happens.
func CheckOptions(path string, opt Options) error {
	_, err := newConfig(path, opt)
	return err
}
