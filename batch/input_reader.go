package batch

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Reader streams the rows of an input file. It does not check that ids are
// unique: Validate does, and is meant to run first.
type Reader struct {
	f    *os.File
	c    *config
	sc   scanner
	path string
	buf  bytes.Buffer

	// Of OpenChunks: the file against its chunk table, the first row to return, the next chunk
	// to enter, the index of the next row, a CSV file's header, and which chunks to read
	// (SkipChunks; nil: every one).
	cf     *chunkFile
	from   int
	next   int
	index  int
	hdr    *csvHeader
	needed func(from int) int
}

// Open opens an input file for streaming. Problems with a CSV header come
// back as a *ValidationError.
func Open(path string, opt Options) (*Reader, error) {
	c, err := newConfig(path, opt)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	sc, hdrErrs, err := newScanner(c, f, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(hdrErrs) > 0 {
		f.Close()
		return nil, &ValidationError{File: path, Errors: hdrErrs}
	}
	return &Reader{f: f, c: c, sc: sc, path: path}, nil
}

// Next returns the next row, or io.EOF after the last one. A row with
// problems comes back with its position and a *InputError (the first of its
// problems); reading can go on after it. A Reader of OpenChunks returns a
// *ChangedError for a chunk that is not what its table says, and no row of it.
func (r *Reader) Next() (Row, error) {
	if r.cf != nil {
		return r.nextChunked()
	}
	pos, spec, errs, err := r.sc.next()
	if err == io.EOF {
		return Row{}, io.EOF
	}
	if err != nil {
		return Row{}, fmt.Errorf("read %s: %w", r.path, err)
	}
	return r.c.row(pos, spec, errs, &r.buf)
}

// Close closes the file.
func (r *Reader) Close() error {
	return r.f.Close()
}

// row turns a scanned row into a Row.
func (c *config) row(pos rowPos, spec *rowSpec, errs []*InputError, buf *bytes.Buffer) (Row, error) {
	row := Row{Index: pos.index, Line: pos.line, Offset: pos.offset, ID: spec.id}
	if len(errs) > 0 {
		return row, errs[0]
	}
	body, err := c.encode(spec, buf)
	if err != nil {
		return row, c.errAt(pos.line, "", "%v", err)
	}
	row.Body = body
	row.PromptChars = c.promptChars(spec)
	if m := c.maxTokensOf(spec); m != nil {
		row.MaxTokens = *m
	}
	return row, nil
}

// ReadRow re-reads the single row that starts at offset, whose index and line
// are known from an earlier read (Row.Offset, Row.Index, Row.Line), for
// example to submit it again.
func ReadRow(path string, opt Options, offset int64, index, line int) (Row, error) {
	c, err := newConfig(path, opt)
	if err != nil {
		return Row{}, err
	}
	if offset < 0 || index < 0 || line < 1 {
		return Row{}, fmt.Errorf("read %s: invalid row position (offset %d, index %d, line %d)", path, offset, index, line)
	}
	f, err := os.Open(path)
	if err != nil {
		return Row{}, fmt.Errorf("open input: %w", err)
	}
	defer f.Close()
	// A CSV row needs the header; scanning starts there and stops after it.
	sc, hdrErrs, err := newScanner(c, f, f)
	if err != nil {
		return Row{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(hdrErrs) > 0 {
		return Row{}, &ValidationError{File: path, Errors: hdrErrs}
	}
	pos := rowPos{index: index, line: line, offset: offset}
	spec, errs, err := sc.reread(pos)
	if err != nil {
		return Row{}, fmt.Errorf("read %s at offset %d: %w", path, offset, err)
	}
	var buf bytes.Buffer
	return c.row(pos, spec, errs, &buf)
}
