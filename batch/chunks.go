package batch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
)

// ChunkSize is the size a pass over an input cuts its chunk table at (Summary.Chunks), unless
// told otherwise ([WithChunkSize]). A resume hashes each chunk it reads once more before parsing
// it, and parses the rows at the start of its first chunk only to skip them: at 8 MiB that is a
// few milliseconds of hashing and some tens of thousands of rows at most (10 ms in all for a row
// in the middle of 10 million, 2.8 GB), well inside the time to a first request, while such an
// input keeps 338 entries (some 40 KB in the checkpoint's header, which every load decodes).
// Smaller chunks grow the header for little; larger ones grow the work before the first new
// request. The size does not change what validating costs: one more SHA-256 of every byte.
const ChunkSize = 8 << 20

// Chunk is one entry of an input's chunk table: a section of the file that starts at a row, so
// that a resume can start reading there and verify only the sections it reads. Chunk 0 is the
// preamble: the bytes before the first row (a CSV header, a byte order mark, blank lines), with
// no row of its own.
type Chunk struct {
	Row    int    // index of its first row (0 for the preamble)
	Line   int    // 1-based line of its first byte
	Offset int64  // byte offset of its first byte
	SHA256 string // hex digest of its bytes, up to the next chunk's Offset (the last: to the end)
}

// PassOption changes how a pass over an input (Validate, ValidateDedup, ScanDedup) works.
type PassOption func(*passConfig)

type passConfig struct {
	chunkSize int64
}

// WithChunkSize cuts the chunk table every size bytes (at the first row from there) instead of
// every ChunkSize bytes; size <= 0 keeps ChunkSize.
func WithChunkSize(size int64) PassOption {
	return func(p *passConfig) {
		if size > 0 {
			p.chunkSize = size
		}
	}
}

func passOf(opts []PassOption) passConfig {
	p := passConfig{chunkSize: ChunkSize}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// maxPending bounds the bytes a chunker keeps while it waits for the row that starts the next
// chunk: past it, it reads them again from the file (a row longer than that, which the page
// cache still holds), so validating keeps its constant memory.
const maxPending = 1 << 20

// chunker cuts the chunk table of a file during the one pass that validates it: every byte read
// goes through Write, in order, and every row start through row. A chunk's bytes are hashed as
// they arrive up to its limit; the bytes past it belong to this chunk or the next depending on
// where the next row starts, which the scanner tells only after it has read ahead, so they wait.
type chunker struct {
	f      io.ReaderAt
	size   int64
	chunks []Chunk   // the last one is the current one, its SHA256 still empty
	h      hash.Hash // of the current chunk's bytes up to hashed
	limit  int64     // bytes before it are hashed at once; the preamble's is 0: any row ends it
	hashed int64
	n      int64  // bytes written
	pend   []byte // bytes [hashed, n), unless lost
	lost   bool   // they were too many to keep: read them from f
	buf    []byte // for reading from f
}

func newChunker(f io.ReaderAt, size int64) *chunker {
	return &chunker{f: f, size: size, h: sha256.New(), chunks: []Chunk{{Line: 1}}}
}

func (c *chunker) Write(p []byte) (int, error) {
	n := len(p)
	if c.hashed == c.n && c.n < c.limit {
		k := int(min(int64(len(p)), c.limit-c.n))
		c.h.Write(p[:k])
		c.hashed += int64(k)
		c.n += int64(k)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	c.n += int64(len(p))
	switch {
	case c.lost:
	case len(c.pend)+len(p) > maxPending:
		c.lost, c.pend = true, c.pend[:0]
	default:
		c.pend = append(c.pend, p...)
	}
	return n, nil
}

// row notes a row start: it starts a new chunk if the current one has reached its limit.
func (c *chunker) row(pos rowPos) error {
	if pos.offset < c.limit {
		return nil
	}
	if err := c.hashTo(pos.offset); err != nil {
		return err
	}
	c.chunks[len(c.chunks)-1].SHA256 = hex.EncodeToString(c.h.Sum(nil))
	c.chunks = append(c.chunks, Chunk{Row: pos.index, Line: pos.line, Offset: pos.offset})
	c.h.Reset()
	c.limit = pos.offset + c.size
	// What was read past the row start is the new chunk's.
	return c.hashTo(min(c.n, c.limit))
}

// hashTo hashes the waiting bytes up to offset to.
func (c *chunker) hashTo(to int64) error {
	k := to - c.hashed
	if k <= 0 {
		return nil
	}
	if c.lost {
		if c.buf == nil {
			c.buf = make([]byte, 64<<10)
		}
		for off := c.hashed; off < to; {
			b := c.buf[:min(int64(len(c.buf)), to-off)]
			if _, err := c.f.ReadAt(b, off); err != nil {
				return fmt.Errorf("hash chunk at offset %d: %w", off, err)
			}
			c.h.Write(b)
			off += int64(len(b))
		}
	} else {
		c.h.Write(c.pend[:k])
		c.pend = c.pend[:copy(c.pend, c.pend[k:])]
	}
	c.hashed = to
	if c.hashed == c.n {
		c.lost, c.pend = false, c.pend[:0]
	}
	return nil
}

// finish hashes the rest of the file into the last chunk and returns the table.
func (c *chunker) finish() ([]Chunk, error) {
	if err := c.hashTo(c.n); err != nil {
		return nil, err
	}
	c.chunks[len(c.chunks)-1].SHA256 = hex.EncodeToString(c.h.Sum(nil))
	return c.chunks, nil
}

// ChangedError means that an input file is not the one its chunk table was taken from: its size
// differs, or the bytes of one of its chunks do.
type ChangedError struct {
	File string
	// Chunk is the index of the chunk that differs, or -1 when the size does.
	Chunk int
	// FirstLine and LastLine are the lines the chunk covered (LastLine 0: to the end of the file).
	FirstLine, LastLine int
	Size, WasSize       int64 // with Chunk -1
}

func (e *ChangedError) Error() string {
	switch {
	case e.Chunk < 0:
		return fmt.Sprintf("%s: size %d bytes, was %d", e.File, e.Size, e.WasSize)
	case e.Chunk == 0:
		return fmt.Sprintf("%s: the bytes before the first row (the header, if any) differ", e.File)
	case e.LastLine == 0:
		return fmt.Sprintf("%s: lines %d to the end differ", e.File, e.FirstLine)
	default:
		return fmt.Sprintf("%s: lines %d-%d differ", e.File, e.FirstLine, e.LastLine)
	}
}

// chunkFile is an input file read against its chunk table.
type chunkFile struct {
	f      *os.File
	path   string
	size   int64
	chunks []Chunk
}

// openChunkFile opens path, checks that chunks is a table of a file of size bytes and that the
// file has that size, and verifies the preamble.
func openChunkFile(path string, size int64, chunks []Chunk) (*chunkFile, error) {
	if err := checkTable(chunks, size); err != nil {
		return nil, fmt.Errorf("%s: chunk table: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	cf := &chunkFile{f: f, path: path, size: size, chunks: chunks}
	fi, err := f.Stat()
	if err == nil && fi.Size() != size {
		err = &ChangedError{File: path, Chunk: -1, Size: fi.Size(), WasSize: size}
	}
	if err == nil {
		err = cf.verify(0)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return cf, nil
}

// checkTable reports what makes chunks no chunk table of a file of size bytes.
func checkTable(chunks []Chunk, size int64) error {
	if len(chunks) == 0 || chunks[0].Offset != 0 || chunks[0].Line != 1 || chunks[0].Row != 0 {
		return errors.New("no preamble")
	}
	if len(chunks) > 1 && chunks[1].Row != 0 {
		return errors.New("the first chunk after the preamble does not start at the first row")
	}
	for k, ch := range chunks {
		switch {
		case k > 0 && (ch.Offset < chunks[k-1].Offset || ch.Line < chunks[k-1].Line || ch.Row < chunks[k-1].Row ||
			k > 1 && (ch.Offset == chunks[k-1].Offset || ch.Row == chunks[k-1].Row)):
			return fmt.Errorf("chunk %d does not follow chunk %d", k, k-1)
		case ch.Offset > size:
			return fmt.Errorf("chunk %d starts at %d, past the end (%d)", k, ch.Offset, size)
		case len(ch.SHA256) != 2*sha256.Size:
			return fmt.Errorf("chunk %d has no SHA-256", k)
		}
	}
	return nil
}

// end is where chunk k ends.
func (cf *chunkFile) end(k int) int64 {
	if k+1 < len(cf.chunks) {
		return cf.chunks[k+1].Offset
	}
	return cf.size
}

// verify hashes chunk k again and compares it with the table.
func (cf *chunkFile) verify(k int) error {
	ch := cf.chunks[k]
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(cf.f, ch.Offset, cf.end(k)-ch.Offset)); err != nil {
		return fmt.Errorf("read %s: %w", cf.path, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != ch.SHA256 {
		return cf.changed(k)
	}
	return nil
}

func (cf *chunkFile) changed(k int) *ChangedError {
	e := &ChangedError{File: cf.path, Chunk: k, FirstLine: cf.chunks[k].Line}
	if k+1 < len(cf.chunks) {
		e.LastLine = cf.chunks[k+1].Line - 1
	}
	return e
}

// CheckPreamble checks, without reading the rows, that the file at path has the size and the
// preamble (chunk 0: the bytes before the first row) of the file whose chunk table is chunks. It
// returns a *ChangedError if not.
func CheckPreamble(path string, size int64, chunks []Chunk) error {
	cf, err := openChunkFile(path, size, chunks)
	if err != nil {
		return err
	}
	return cf.f.Close()
}

// OpenChunks opens for streaming an input file validated before, whose size and chunk table
// (Summary.Size, Summary.Chunks) were size and chunks, from its row from on: reading starts at
// the chunk that holds that row, and the rows of that chunk before it are skipped unparsed.
// The chunks before it are not read at all. The file's size and its preamble (with a CSV
// header, which is read from there) are checked at once; every chunk is hashed again when
// reading enters it, and Next returns a *ChangedError, before any of its rows, for one whose
// bytes differ from the table's. (A chunk is hashed, then parsed: a file rewritten in place in
// between can still slip through; one replaced by a rename cannot, the file stays open.)
func OpenChunks(path string, opt Options, size int64, chunks []Chunk, from int) (*Reader, error) {
	c, err := newConfig(path, opt)
	if err != nil {
		return nil, err
	}
	cf, err := openChunkFile(path, size, chunks)
	if err != nil {
		return nil, err
	}
	r := &Reader{f: cf.f, c: c, path: path, cf: cf, from: from, next: 1}
	for r.next+1 < len(chunks) && chunks[r.next+1].Row <= from {
		r.next++
	}
	if c.format == FormatCSV {
		sc, hdrErrs, err := newCSVScanner(c, io.NewSectionReader(cf.f, 0, cf.end(0)), cf.f)
		if err == nil && len(hdrErrs) > 0 {
			err = &ValidationError{File: path, Errors: hdrErrs}
		}
		if err != nil {
			cf.f.Close()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		r.hdr = sc.hdr
	}
	return r, nil
}

// SkipChunks makes a Reader of OpenChunks pass over the later chunks that hold no row it needs:
// needed(from) returns the first row at or after row from that the reading needs, or -1 if none.
// A chunk passed over is neither read nor verified, so a change in it goes unseen, as one in the
// chunks before from does. A resume uses it to pass over the rows done between the few still open.
func (r *Reader) SkipChunks(needed func(from int) int) { r.needed = needed }

// skipChunks moves on to the chunk of the next row needed (SkipChunks), once the chunk before it
// was read to its end: one question for any number of chunks passed over.
func (r *Reader) skipChunks() error {
	cs := r.cf.chunks
	if r.needed == nil || r.sc == nil || r.next == len(cs) {
		return nil // not asked, before the first chunk (from's, which is needed), or at the end
	}
	skip := len(cs)
	if row := r.needed(cs[r.next].Row); row >= 0 {
		// The chunk that holds row: the last that starts at or before it.
		skip = max(r.next, sort.Search(len(cs), func(k int) bool { return cs[k].Row > row })-1)
	}
	if skip == r.next {
		return nil
	}
	if err := r.ended(); err != nil {
		return err
	}
	r.next, r.sc = skip, nil
	return nil
}

// ended checks that the chunk just read had the rows it had when it was validated: its last row
// is the one before the next chunk's first.
func (r *Reader) ended() error {
	if r.sc != nil && r.index != r.cf.chunks[r.next].Row {
		return r.cf.changed(r.next - 1)
	}
	return nil
}

// enter verifies the chunk reading goes on with and starts scanning it.
func (r *Reader) enter() error {
	cf, k := r.cf, r.next
	ch := cf.chunks[k]
	if err := r.ended(); err != nil {
		return err
	}
	if err := cf.verify(k); err != nil {
		return err
	}
	sec := io.NewSectionReader(cf.f, ch.Offset, cf.end(k)-ch.Offset)
	if r.hdr != nil {
		cs := &csvScanner{c: r.c, hdr: r.hdr, cr: newCSVReader(sec), f: cf.f, base: ch.Offset, lineBase: ch.Line - 1,
			prevEnd: ch.Offset, prevEndLine: ch.Line - 1, index: ch.Row}
		cs.cr.FieldsPerRecord = len(r.hdr.names)
		r.sc = cs
	} else {
		r.sc = &jsonlScanner{c: r.c, lr: newLineReader(sec, ch.Offset, ch.Line-1), f: cf.f, index: ch.Row}
	}
	r.index = ch.Row
	r.next++
	return nil
}

// nextChunked is Next for a Reader of OpenChunks.
func (r *Reader) nextChunked() (Row, error) {
	for {
		if r.sc != nil {
			var pos rowPos
			var spec *rowSpec
			var errs []*InputError
			var err error
			if r.index < r.from {
				_, err = r.sc.skip()
			} else {
				pos, spec, errs, err = r.sc.next()
			}
			switch {
			case err == nil && r.index < r.from:
				r.index++
				continue
			case err == nil:
				r.index++
				return r.c.row(pos, spec, errs, &r.buf)
			case err != io.EOF:
				return Row{}, fmt.Errorf("read %s: %w", r.path, err)
			}
		}
		// At the end of a chunk, or before the first.
		if err := r.skipChunks(); err != nil {
			return Row{}, err
		}
		if r.next == len(r.cf.chunks) {
			return Row{}, io.EOF
		}
		if err := r.enter(); err != nil {
			return Row{}, err
		}
	}
}
