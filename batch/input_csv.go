package batch

// CSV input is read with encoding/csv rather than gocsv: gocsv maps records
// to structs but cannot report line numbers, and every error here must name
// its line. csv.Reader.FieldPos gives the line of each field (multi-line
// quoted fields included) and InputOffset the byte offset of each record.

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode/utf8"
)

// csvHeader is the parsed header row.
type csvHeader struct {
	names              []string
	prompt, id, system int // column indexes; -1 when absent
}

type csvScanner struct {
	c   *config
	hdr *csvHeader
	cr  *csv.Reader
	f   io.ReaderAt
	// base is the file offset of the csv.Reader's first byte; lineBase is
	// the number of lines before it.
	base     int64
	lineBase int
	// prevEnd is the file offset just after the previous record and
	// prevEndLine the line it ended on; the next record starts there unless
	// blank lines (which encoding/csv skips) come between.
	prevEnd     int64
	prevEndLine int
	index       int
	data        map[string]string
	sb          strings.Builder
}

func newCSVReader(r io.Reader) *csv.Reader {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	return cr
}

// newCSVScanner reads the header from r. The header's problems come back as
// hdrErrs; the scanner is nil then.
func newCSVScanner(c *config, r io.Reader, f io.ReaderAt) (*csvScanner, []*InputError, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var base int64
	if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
		n, _ := br.Discard(len(utf8BOM))
		base = int64(n)
	}
	s := &csvScanner{c: c, cr: newCSVReader(br), f: f, base: base}
	rec, err := s.cr.Read()
	var pe *csv.ParseError
	switch {
	case err == io.EOF:
		return nil, []*InputError{c.errAt(0, "", "empty file: a CSV input needs a header row")}, nil
	case errors.As(err, &pe):
		return nil, []*InputError{c.errAt(pe.Line, "", "header: %s", csvErrMsg(pe))}, nil
	case err != nil:
		return nil, nil, err
	}
	hdr, errs := c.parseHeader(rec, s.lineOf(0))
	if len(errs) > 0 {
		return nil, errs, nil
	}
	s.hdr = hdr
	s.recordEnd(rec)
	return s, nil, nil
}

// lineOf returns the file line where field i of the last record starts.
func (s *csvScanner) lineOf(i int) int {
	line, _ := s.cr.FieldPos(i)
	return s.lineBase + line
}

// recordEnd notes where the record just read ended.
func (s *csvScanner) recordEnd(rec []string) {
	last := len(rec) - 1
	// Quoted fields keep their line breaks (CRLF read as LF), so the record
	// ends that many lines after its last field starts.
	s.prevEndLine = s.lineOf(last) + strings.Count(rec[last], "\n")
	s.prevEnd = s.base + s.cr.InputOffset()
}

func (c *config) parseHeader(rec []string, line int) (*csvHeader, []*InputError) {
	var errs []*InputError
	h := &csvHeader{names: slices.Clone(rec), prompt: -1, id: -1, system: -1}
	seen := make(map[string]bool, len(rec))
	for i, name := range h.names {
		if !utf8.ValidString(name) {
			errs = append(errs, c.errAt(line, "", "header: column %d: invalid UTF-8", i+1))
			continue
		}
		if seen[name] {
			errs = append(errs, c.errAt(line, "", "header: duplicate column %q", name))
		}
		seen[name] = true
	}
	if len(errs) > 0 {
		return nil, errs
	}
	columns := strings.Join(quoteAll(h.names), ", ")
	find := func(name, what string, required bool) int {
		if i := slices.Index(h.names, name); i >= 0 {
			return i
		}
		if required {
			errs = append(errs, c.errAt(line, "", "header: no %s column %q (columns: %s)", what, name, columns))
		}
		return -1
	}
	if c.tmpl == nil {
		h.prompt = find(c.promptCol, "prompt", true)
	}
	h.id = find(c.idCol, "id", c.idColSet)
	if c.systemCol != "" {
		h.system = find(c.systemCol, "system", true)
	}
	// Checked once here so that a missing column is one problem, not one per row.
	for _, col := range c.tmplCols {
		if !seen[col] {
			errs = append(errs, c.errAt(line, "template", "refers to column %q, which the header does not have (columns: %s)", col, columns))
		}
	}
	return h, errs
}

func quoteAll(names []string) []string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return q
}

func csvErrMsg(pe *csv.ParseError) string {
	if errors.Is(pe.Err, csv.ErrFieldCount) {
		return pe.Err.Error()
	}
	return fmt.Sprintf("column %d: %v", pe.Column, pe.Err)
}

func (s *csvScanner) next() (rowPos, *rowSpec, []*InputError, error) {
	pos, rec, errs, err := s.advance()
	if err != nil {
		return rowPos{}, nil, nil, err
	}
	if errs != nil {
		return pos, &rowSpec{}, errs, nil
	}
	spec, errs := s.parseRecord(rec, pos)
	return pos, spec, errs, nil
}

func (s *csvScanner) skip() (rowPos, error) {
	pos, _, _, err := s.advance()
	return pos, err
}

// advance reads the next record and returns it with its position, or the problem that makes it
// unreadable (a CSV syntax error, a wrong number of fields).
func (s *csvScanner) advance() (rowPos, []string, []*InputError, error) {
	rec, err := s.cr.Read()
	if err == io.EOF {
		return rowPos{}, nil, nil, io.EOF
	}
	pos := rowPos{index: s.index, offset: s.prevEnd}
	s.index++
	var pe *csv.ParseError
	if errors.As(err, &pe) && !errors.Is(pe.Err, csv.ErrFieldCount) {
		// The reader skips the rest of the bad record's last line.
		pos.line = s.lineBase + pe.StartLine
		s.prevEndLine = s.lineBase + pe.Line
		s.prevEnd = s.base + s.cr.InputOffset()
		return pos, nil, []*InputError{s.c.errAt(s.lineBase+pe.Line, "", "%s", csvErrMsg(pe))}, nil
	}
	if err != nil && pe == nil {
		return rowPos{}, nil, nil, err
	}
	pos.line = s.lineOf(0)
	if skipped := pos.line - s.prevEndLine - 1; skipped > 0 {
		off, err := s.skipBlankLines(s.prevEnd, skipped)
		if err != nil {
			return rowPos{}, nil, nil, err
		}
		pos.offset = off
	}
	s.recordEnd(rec)
	if pe != nil {
		return pos, nil, []*InputError{s.c.errAt(pos.line, "", "wrong number of fields: %d (the header has %d)", len(rec), len(s.hdr.names))}, nil
	}
	return pos, rec, nil, nil
}

// skipBlankLines returns the offset after n blank lines ("\n" or "\r\n")
// starting at off. encoding/csv skips blank lines without reporting them, so
// this re-reads those few bytes to keep Row.Offset exact.
func (s *csvScanner) skipBlankLines(off int64, n int) (int64, error) {
	buf := make([]byte, 2*n)
	m, err := s.f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return 0, err
	}
	buf = buf[:m]
	i := 0
	for ; n > 0 && i < len(buf); n-- {
		if buf[i] == '\r' && i+1 < len(buf) && buf[i+1] == '\n' {
			i += 2
		} else if buf[i] == '\n' {
			i++
		} else {
			break
		}
	}
	return off + int64(i), nil
}

func (s *csvScanner) parseRecord(rec []string, pos rowPos) (*rowSpec, []*InputError) {
	h := s.hdr
	spec := &rowSpec{}
	var errs []*InputError
	for i, v := range rec {
		if !utf8.ValidString(v) {
			errs = append(errs, s.c.errAt(s.lineOf(i), h.names[i], "invalid UTF-8"))
		}
	}
	if len(errs) > 0 {
		return spec, errs
	}
	if h.id >= 0 {
		if v := rec[h.id]; strings.TrimSpace(v) == "" {
			errs = append(errs, s.c.errAt(s.lineOf(h.id), h.names[h.id], "empty id"))
		} else {
			spec.id = strings.Clone(v)
		}
	} else {
		spec.id = strconv.Itoa(pos.index + 1)
	}
	if h.system >= 0 {
		if v := rec[h.system]; strings.TrimSpace(v) != "" {
			spec.system = strings.Clone(v)
		}
	}
	if s.c.tmpl != nil {
		if s.data == nil {
			s.data = make(map[string]string, len(h.names))
		}
		for i, name := range h.names {
			s.data[name] = rec[i]
		}
		s.sb.Reset()
		if err := s.c.tmpl.Execute(&s.sb, s.data); err != nil {
			errs = append(errs, s.c.errAt(pos.line, "template", "%v", err))
		} else if strings.TrimSpace(s.sb.String()) == "" {
			errs = append(errs, s.c.errAt(pos.line, "template", "empty prompt"))
		} else {
			spec.prompt = s.sb.String()
		}
	} else if v := rec[h.prompt]; strings.TrimSpace(v) == "" {
		errs = append(errs, s.c.errAt(s.lineOf(h.prompt), h.names[h.prompt], "empty prompt"))
	} else {
		spec.prompt = strings.Clone(v)
	}
	return spec, errs
}

func (s *csvScanner) reread(pos rowPos) (*rowSpec, []*InputError, error) {
	r := &csvScanner{
		c:           s.c,
		hdr:         s.hdr,
		cr:          newCSVReader(section(s.f, pos.offset)),
		f:           s.f,
		base:        pos.offset,
		lineBase:    pos.line - 1,
		prevEnd:     pos.offset,
		prevEndLine: pos.line - 1,
		index:       pos.index,
	}
	r.cr.FieldsPerRecord = len(s.hdr.names)
	p, spec, errs, err := r.next()
	if err == io.EOF {
		return nil, nil, io.ErrUnexpectedEOF
	}
	if err == nil && p.offset != pos.offset {
		return nil, nil, fmt.Errorf("no row starts at offset %d", pos.offset)
	}
	return spec, errs, err
}

// templateColumns lists the columns a template refers to as {{.name}},
// {{$.name}} or {{index . "name"}}.
func templateColumns(t *template.Template) []string {
	var cols []string
	add := func(name string) {
		if !slices.Contains(cols, name) {
			cols = append(cols, name)
		}
	}
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			if len(n.Args) == 3 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" {
					if _, ok := n.Args[1].(*parse.DotNode); ok {
						if s, ok := n.Args[2].(*parse.StringNode); ok {
							add(s.Text)
						}
					}
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			add(n.Ident[0])
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				add(n.Ident[1])
			}
		case *parse.ChainNode:
			walk(n.Node)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return cols
}
