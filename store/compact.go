package store

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
)

// Compact rewrites the journal as a snapshot of the current state (a header
// and a few records per row: its name if it is not resolved, its phase, its
// doubts) through a temp file and a rename. The results file is untouched.
//
// No command calls it today: a run's journal is replaced only by Finalize,
// and Open (completing an interrupted Finalize) and Archive write the same
// snapshot, with writeSnapshot, from a State they loaded. It is kept because
// it is the one way to snapshot a journal that a Writer is still appending
// to, which compacting the journal during a long run will need, and because
// the tests pin the snapshot and its replay through it, in the middle of a
// run.
func (w *Writer) Compact() error {
	return w.wait(request{kind: kindCompact})
}

// compact runs in the writer goroutine, after everything queued before the
// request is durable. It reloads the journal rather than keeping a second
// copy of the state in memory for a rarely used operation.
func (w *Writer) compact() error {
	if err := w.sticky(); err != nil {
		return err
	}
	st, err := w.reload()
	if err != nil {
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	err = writeFileAtomic(&w.hooks, w.path, func(out io.Writer) error { return writeSnapshot(out, st, nil) })
	if err != nil {
		// The old journal is intact and still open: nothing is lost.
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	return w.reopenJournal()
}

// reload reads the journal back from disk.
func (w *Writer) reload() (*State, error) {
	f, err := os.Open(w.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return load(f)
}

// reopenJournal switches the writer to the file now at its path, after a
// rename over the old one.
func (w *Writer) reopenJournal() error {
	j, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		// Appending to the old, renamed-over file would lose records.
		w.journalFailed = true
		w.markJournalBroken()
		return w.fail(fmt.Errorf("checkpoint %s: reopen after rename: %w", w.path, err))
	}
	w.journal.Close()
	w.journal = w.hooks.wrap(j)
	return nil
}

// writeSnapshot writes the fewest records that replay to st: the header (in
// the current version), each row's N/I/S/U/D records in row order, then the R
// records in results file order, since each line starts where the previous R
// record's ended. A
// P record marks a gap (superseded lines) before a line, and where the next
// line goes if that is not the end of the last one. byEnd, if not nil, is
// the resolved rows in results file order.
func writeSnapshot(out io.Writer, st *State, byEnd []int32) error {
	// A snapshot is written in the current format, whatever the version of
	// the journal it replaces: it may hold N records.
	h := st.Header
	h.Version = Version
	hdr, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: st.preamble})
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	buf := appendHeaderRecord(make([]byte, 0, 64<<10), hdr)
	flush := func(force bool) error {
		if len(buf) < 64<<10 && !force {
			return nil
		}
		_, err := bw.Write(buf)
		buf = buf[:0]
		return err
	}
	known := byEnd != nil
	var idBuf []byte
	for i := range st.Rows {
		r := &st.Rows[i]
		if len(st.Named) > 0 {
			if n, ok := st.Named[i]; ok {
				idBuf = appendJSONString(idBuf[:0], n.ID)
				buf = appendNamed(buf, i, &n.Key, n.Model, idBuf)
			}
		}
		buf = appendRowRecords(buf, i, r)
		if r.Phase == PhaseResolved && !known {
			byEnd = append(byEnd, int32(i))
		}
		if err := flush(false); err != nil {
			return err
		}
	}
	if !known {
		sortByEnd(byEnd, st.ends)
	}
	cur := int64(len(st.preamble))
	for _, i := range byEnd {
		if n := st.lens[i]; n > 0 && st.ends[i]-int64(n) != cur {
			buf = appendPosition(buf, st.ends[i]-int64(n))
		}
		buf = appendResolved(buf, int(i), st.Rows[i].Failed, st.ends[i])
		cur = st.ends[i]
		if err := flush(false); err != nil {
			return err
		}
	}
	if cur != st.cursor {
		buf = appendPosition(buf, st.cursor)
	}
	if err := flush(true); err != nil {
		return err
	}
	return bw.Flush()
}

// sortByEnd sorts rows by where their result lines end, which for lines
// that do not overlap is the order of the results file.
func sortByEnd(rows []int32, ends []int64) {
	less := func(a, b int32) int { return cmp.Compare(ends[a], ends[b]) }
	if !slices.IsSortedFunc(rows, less) {
		slices.SortFunc(rows, less)
	}
}

// appendRowRecords appends the records that replay to r, except its R
// record.
func appendRowRecords(dst []byte, i int, r *Row) []byte {
	// Doubts first: a D record closes a try in flight, so after the phase it would undo it.
	for range r.Doubts {
		dst = appendDoubt(dst, i)
	}
	switch r.Phase {
	case PhaseNew:
		if r.Attempt > 0 {
			dst = appendIntent(dst, i, int(r.Attempt))
			dst = appendReopen(dst, i)
		}
	case PhaseInFlight:
		dst = appendIntent(dst, i, int(r.Attempt))
	case PhaseSubmitted:
		dst = appendSubmitted(dst, i, int(r.Attempt), r.OpID, r.SubmittedAt)
	case PhaseResolved:
		if r.OpID != "" {
			dst = appendSubmitted(dst, i, int(r.Attempt), r.OpID, r.SubmittedAt)
		} else if r.Attempt > 0 {
			dst = appendIntent(dst, i, int(r.Attempt))
		}
	}
	return dst
}
