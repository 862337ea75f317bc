package store

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// ErrUnresolved means Finalize was called while some rows have no result.
var ErrUnresolved = errors.New("not every row is resolved")

var errShort = errors.New("the results file is shorter than the checkpoint says")

// Steps of Finalize after which hooks.afterStep is called.
const (
	stepResultsTemp   = iota + 1 // new results file written to a temp file
	stepJournalTemp              // new journal snapshot written to a temp file
	stepIntent                   // F record durable in the current journal
	stepResultsRename            // new results file renamed into place
	stepJournalRename            // new journal renamed into place
)

// Finalize rewrites the results file so that it holds the preamble and then
// exactly one line per row, the row's latest: lines superseded by a retry are
// dropped. The rows are in row order when inputOrder, otherwise in the order
// of the results file. Every row must be resolved (ErrUnresolved otherwise).
//
// The two files are replaced crash-safely: the new results and a snapshot of
// the journal that points into them are written to temp files; a record
// "F <size> <crc32c> <order>" is journaled; then the results file and the
// journal are renamed into place, in that order. If the process dies between
// the renames, Open finds the F record last and a results file that matches
// it, and completes the journal's part; if the results file does not match,
// the old one is intact and the F record is ignored.
//
// A failure before the results file is renamed leaves both files as they
// were and the Writer usable; a later one makes the error sticky (the next
// Open completes the job).
func (w *Writer) Finalize(inputOrder bool) error {
	return w.wait(request{kind: kindFinalizeQ, failed: inputOrder})
}

// NeedsFinalize reports whether the results file holds superseded lines
// (of rows reopened and resolved again), as of the records made durable so
// far: call Flush first to include those queued.
func (w *Writer) NeedsFinalize() bool {
	return w.needsFinalize.Load()
}

// finalize runs in the writer goroutine; see Finalize.
func (w *Writer) finalize(inputOrder bool) error {
	if err := w.sticky(); err != nil {
		return err
	}
	// Replace the file a symlink points to, not the link; never rename
	// over a device.
	name, err := filepath.EvalSymlinks(w.header.Results)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("finalize: results file %s is not a regular file", name)
	}
	st, err := w.reload()
	if err != nil {
		return fmt.Errorf("finalize: load checkpoint %s: %w", w.path, err)
	}
	order, size, err := st.layout(inputOrder)
	if err != nil {
		return fmt.Errorf("finalize %s: %w", name, err)
	}
	if size == w.resultsEnd && st.inPlace(order) {
		return nil // already one line per row, in that order
	}

	// (a) The new results file, beside the old one.
	src, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	defer src.Close()
	sum := crc32.New(castagnoli)
	resTmp, err := writeTemp(&w.hooks, name, fi.Mode().Perm(), func(out io.Writer) error {
		return st.copyLines(io.MultiWriter(out, sum), src, order, size, w.hooks.copySize())
	})
	if err != nil {
		return fmt.Errorf("finalize: results file %s: %w", name, err)
	}
	removeTmp := []string{resTmp}
	defer func() {
		for _, t := range removeTmp {
			os.Remove(t)
		}
	}()
	if err := w.hook(stepResultsTemp, &removeTmp); err != nil {
		return err
	}

	// (b) The journal snapshot that describes it.
	st.relayout(order, size)
	jTmp, err := writeTemp(&w.hooks, w.path, 0o600, func(out io.Writer) error { return snapshotOf(out, st, w.path) })
	if err != nil {
		return fmt.Errorf("finalize: checkpoint %s: %w", w.path, err)
	}
	removeTmp = append(removeTmp, jTmp)
	if err := w.hook(stepJournalTemp, &removeTmp); err != nil {
		return err
	}

	// (c) The intent, in the current journal.
	if err := w.appendJournal(appendFinalize(nil, size, sum.Sum32(), inputOrder), 1); err != nil {
		return err
	}
	if err := w.hook(stepIntent, &removeTmp); err != nil {
		return err
	}

	// (d) The results file. A failed rename changes nothing: the F record
	// is then not the last one once anything else is journaled, and if it
	// is, Open sees that the results file does not match it.
	if err := os.Rename(resTmp, name); err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	removeTmp = removeTmp[1:]
	// From here on the writer's files are stale: any failure is sticky.
	if err := syncDir(filepath.Dir(name)); err != nil {
		return w.die(fmt.Errorf("finalize: results file %s: %w", name, err))
	}
	if err := w.hook(stepResultsRename, &removeTmp); err != nil {
		return err
	}

	// (e) The journal.
	if err := os.Rename(jTmp, w.path); err != nil {
		return w.die(fmt.Errorf("finalize: checkpoint %s: %w", w.path, err))
	}
	removeTmp = nil
	if err := syncDir(filepath.Dir(w.path)); err != nil {
		return w.die(fmt.Errorf("finalize: checkpoint %s: %w", w.path, err))
	}
	if err := w.hook(stepJournalRename, &removeTmp); err != nil {
		return err
	}

	res, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return w.die(fmt.Errorf("finalize: reopen results file: %w", err))
	}
	if err := w.reopenJournal(); err != nil {
		res.Close()
		return w.die(err)
	}
	w.results.Close()
	w.results = w.hooks.wrap(res)
	w.resultsEnd = size
	for i := range w.resolved {
		w.resolved[i] = ^uint64(0)
	}
	w.superseded = 0
	w.needsFinalize.Store(false)
	return nil
}

// hook calls hooks.afterStep, a seam for crash tests: an error from it
// simulates a crash at step: Finalize stops right there, temp files stay and
// the Writer writes nothing more.
func (w *Writer) hook(step int, removeTmp *[]string) error {
	if w.hooks.afterStep == nil {
		return nil
	}
	if err := w.hooks.afterStep(step); err != nil {
		*removeTmp = nil
		return w.die(err)
	}
	return nil
}

// die makes err sticky and stops all writing.
func (w *Writer) die(err error) error {
	w.journalFailed, w.resultsFailed = true, true
	w.markJournalBroken()
	return w.fail(err)
}

// layout checks that st can be finalized and returns its rows in the new
// order and the size of the new results file.
func (s *State) layout(inputOrder bool) (order []int32, size int64, err error) {
	unresolved, first := 0, -1
	for i := range s.Len() {
		if s.Phase(i) != PhaseResolved {
			if unresolved++; first < 0 {
				first = i
			}
		}
	}
	if unresolved > 0 {
		return nil, 0, fmt.Errorf("%w: %d rows are not (row %d first)", ErrUnresolved, unresolved, first)
	}
	// The lines must lie within the file, one after the other.
	byStart := make([]int32, s.Len())
	for i := range byStart {
		if s.lineLen(i) == 0 {
			return nil, 0, fmt.Errorf("row %d: the checkpoint does not say where its result line starts (damaged checkpoint)", i)
		}
		byStart[i] = int32(i)
	}
	sortByEnd(byStart, s)
	pre := int64(len(s.preamble))
	size, prev := pre, pre
	for _, i := range byStart {
		end, n := s.end(int(i)), s.lineLen(int(i))
		if end-n < prev {
			return nil, 0, fmt.Errorf("row %d: its result line overlaps another one (damaged checkpoint)", i)
		}
		prev = end
		size += n
	}
	if !inputOrder {
		return byStart, size, nil
	}
	for i := range byStart {
		byStart[i] = int32(i)
	}
	return byStart, size, nil
}

// sortByEnd sorts rows by where their result lines end, which for lines
// that do not overlap is the order of the results file.
func sortByEnd(rows []int32, st *State) {
	less := func(a, b int32) int { return cmp.Compare(st.end(int(a)), st.end(int(b))) }
	if !slices.IsSortedFunc(rows, less) {
		slices.SortFunc(rows, less)
	}
}

// inPlace reports whether the lines of the rows in order follow each other
// from the preamble on.
func (s *State) inPlace(order []int32) bool {
	pos := int64(len(s.preamble))
	for _, i := range order {
		end := s.end(int(i))
		if end-s.lineLen(int(i)) != pos {
			return false
		}
		pos = end
	}
	return true
}

// relayout moves every row's line to where Finalize puts it.
func (s *State) relayout(order []int32, size int64) {
	pos := int64(len(s.preamble))
	for _, i := range order {
		n := s.lineLen(int(i))
		pos += n
		s.setPos(int(i), pos, n)
	}
	s.ResultsEnd, s.cursor = size, size
}

// copySizes are the sizes copyLines works with: how much output it assembles
// at a time (batch), and the largest gap between two lines that it reads
// through rather than making another read.
type copySizes struct{ batch, gap int64 }

// defaultCopySizes: a syscall costs about as much as copying a few KiB.
var defaultCopySizes = copySizes{batch: 8 << 20, gap: 4 << 10}

// lineSpan is where a line is in the old results file and where it goes in
// the batch being assembled.
type lineSpan struct {
	start, out int64
	n          uint32
	row        int32
}

// copyLines writes the preamble and the rows' lines in order to out. It
// assembles the output in batches; within a batch it reads the lines in the
// order of the old file and coalesces neighbours, so that in file order it
// streams the old file in large reads, and in input order, for lines that
// came back roughly in order, it needs few reads as well. It checks that
// every line ends in a newline where the checkpoint says.
func (s *State) copyLines(out io.Writer, src io.ReaderAt, order []int32, size int64, cs copySizes) error {
	copyBatch, copyGap := cs.batch, cs.gap
	written := int64(0)
	write := func(b []byte) error {
		_, err := out.Write(b)
		written += int64(len(b))
		return err
	}
	var (
		obuf, rbuf []byte
		spans      []lineSpan
	)
	readAt := func(b []byte, off int64) error {
		if _, err := src.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				return errShort
			}
			return err
		}
		return nil
	}
	// The preamble.
	if pre := int64(len(s.preamble)); pre > 0 {
		obuf = make([]byte, pre)
		if err := readAt(obuf, 0); err != nil {
			return err
		}
		if err := write(obuf); err != nil {
			return err
		}
	}
	for k := 0; k < len(order); {
		// The rows order[k:n] make the next batch.
		total, n := int64(0), k
		for n < len(order) && (n == k || total+s.lineLen(int(order[n])) <= copyBatch) {
			total += s.lineLen(int(order[n]))
			n++
		}
		if total > copyBatch { // one long line: stream it
			if err := s.copyLong(write, readAt, order[k], copyBatch); err != nil {
				return err
			}
			k = n
			continue
		}
		spans = spans[:0]
		off := int64(0)
		for _, i := range order[k:n] {
			end, n := s.end(int(i)), s.lineLen(int(i))
			spans = append(spans, lineSpan{start: end - n, out: off, n: uint32(n), row: i})
			off += n
		}
		byStart := func(a, b lineSpan) int { return cmp.Compare(a.start, b.start) }
		if !slices.IsSortedFunc(spans, byStart) {
			slices.SortFunc(spans, byStart)
		}
		if int64(cap(obuf)) < total {
			obuf = make([]byte, copyBatch)
		}
		obuf = obuf[:total]
		for a := 0; a < len(spans); {
			lo, hi := spans[a].start, spans[a].start+int64(spans[a].n)
			b := a + 1
			for b < len(spans) {
				end := spans[b].start + int64(spans[b].n)
				if spans[b].start-hi > copyGap || end-lo > copyBatch {
					break
				}
				hi = max(hi, end)
				b++
			}
			if int64(cap(rbuf)) < hi-lo {
				rbuf = make([]byte, copyBatch)
			}
			if err := readAt(rbuf[:hi-lo], lo); err != nil {
				return err
			}
			for _, sp := range spans[a:b] {
				line := rbuf[sp.start-lo : sp.start-lo+int64(sp.n)]
				if line[len(line)-1] != '\n' {
					return fmt.Errorf("row %d: %w", sp.row, errNoLineEnd)
				}
				copy(obuf[sp.out:], line)
			}
			a = b
		}
		if err := write(obuf); err != nil {
			return err
		}
		k = n
	}
	if written != size {
		return fmt.Errorf("wrote %d bytes, want %d", written, size)
	}
	return nil
}

var errNoLineEnd = errors.New("the results file has no line end where the checkpoint says (damaged results file)")

// copyLong copies row's line, longer than a batch, in pieces.
func (s *State) copyLong(write func([]byte) error, readAt func([]byte, int64) error, row int32, copyBatch int64) error {
	buf := make([]byte, copyBatch)
	end := s.end(int(row))
	off := end - s.lineLen(int(row))
	for off < end {
		b := buf[:min(end-off, copyBatch)]
		if err := readAt(b, off); err != nil {
			return err
		}
		if off += int64(len(b)); off == end && b[len(b)-1] != '\n' {
			return fmt.Errorf("row %d: %w", row, errNoLineEnd)
		}
		if err := write(b); err != nil {
			return err
		}
	}
	return nil
}

// settleFinalize decides what an F record at the end of the journal means:
// if the results file matches it, the process died between the two renames
// and the state is the finalized one; otherwise the old results file is
// intact and the F record is void.
func (s *State) settleFinalize() error {
	if !s.hasFinal {
		return nil
	}
	s.hasFinal = false
	f, name := s.final, s.Header.Results
	match, err := fileMatches(name, f.end, f.sum)
	if err != nil {
		return fmt.Errorf("check results file after an interrupted finalize: %w", err)
	}
	if !match {
		s.addProblem("an interrupted finalize of %s was rolled back: the results file was not replaced", name)
		s.voidFinal = true
		return nil
	}
	order, size, err := s.layout(f.inOrder)
	if err == nil && size != f.end {
		err = fmt.Errorf("%d bytes of result lines, want %d", size, f.end)
	}
	if err != nil {
		return fmt.Errorf("results file %s was finalized but the checkpoint does not describe it: %w", name, err)
	}
	s.relayout(order, size)
	s.finalized = true
	return nil
}

// fileMatches reports whether the file at name has the given size and
// CRC-32C.
func fileMatches(name string, size int64, sum uint32) (bool, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() != size {
		return false, nil
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return false, err
	}
	return h.Sum32() == sum, nil
}
