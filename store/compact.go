package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// Compact rewrites the journal as a snapshot of the current state (a header,
// a few records per open row: its name, its phase, its doubts; a few bytes per
// resolved row in L records) through a temp file and a rename. The results
// file is untouched.
//
// The writer compacts on its own whenever the journal has doubled since the
// last snapshot or grown by 128 MiB (and is at least 64 MiB), between two
// commits (scheduleCompaction); Compact does it now.
func (w *Writer) Compact() error {
	return w.wait(request{kind: kindCompact})
}

// defaultCompactMin is the smallest journal the writer compacts on its own: 64 MiB is about
// 250,000 rows of a run, and reading it back takes a fraction of a second.
const defaultCompactMin = 64 << 20

// defaultCompactTail bounds how far the journal grows past its size at the last snapshot before
// the writer compacts it again: a resume decodes every record of that tail (about 200 MB/s, 0.6 s
// for 128 MiB), and reads a snapshot's resolved rows through its K record (2 GB/s).
const defaultCompactTail = 128 << 20

// scheduleCompaction sets the journal size at which the writer compacts it next: twice its size
// now (a snapshot, or whatever Open found), so that the rewriting costs a constant share of the
// appending, but no more than defaultCompactTail past it, so that what a resume decodes does not
// grow with the rows done. Past 128 MiB of snapshot (about three million resolved rows) a
// compaction thus comes every 128 MiB of records, each rewriting the whole snapshot: at ten
// million rows, a few more compactions than doubling would make.
func (w *Writer) scheduleCompaction() {
	w.compactAt = max(w.hooks.minCompact(), w.journalSize+min(w.journalSize, w.hooks.maxTail()))
}

// autoCompact compacts the journal during a run, between two commits. A failure (a full disk)
// leaves the journal as it was, appended to as before: the run goes on, and the next attempt
// waits until the journal has doubled again.
func (w *Writer) autoCompact() {
	if w.sticky() != nil {
		return
	}
	// The state it loads (about 4 bytes a row, for every row of the input: loadForCompaction) is
	// live on top of the run's own memory, and loading it makes garbage (the journal's tail, read
	// twice): at the collector's default the heap may reach twice state and run together before
	// a collection. Collected often meanwhile, as validation is.
	old := debug.SetGCPercent(25)
	err := w.compact()
	debug.SetGCPercent(old)
	// The state it loaded is garbage now: collect it and return it at once, or the collector's
	// next goal, set while it was live, lets the run's own garbage grow to twice its size before
	// the next collection.
	debug.FreeOSMemory()
	if err != nil {
		w.compactAt = 2 * w.journalSize
		return
	}
	w.compactions.Add(1)
}

// compact runs in the writer goroutine, after everything queued before the
// request is durable. It reloads the journal rather than keeping a second
// copy of the state in memory for a rarely used operation.
func (w *Writer) compact() error {
	if err := w.sticky(); err != nil {
		return err
	}
	st, err := loadForCompaction(w.path)
	if err != nil {
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	err = writeFileAtomic(&w.hooks, w.path, func(out io.Writer) error { return snapshotOf(out, st, w.path) })
	if err != nil {
		// The old journal is intact and still open: nothing is lost.
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	return w.reopenJournal()
}

// reload reads the journal back from disk, ready for a snapshot.
func (w *Writer) reload() (*State, error) { return loadForSnapshot(w.path) }

// loadForSnapshot loads the journal at path for writeSnapshot, with each resolved row's line:
// Finalize, Open and Archive move lines or ask where they are.
func loadForSnapshot(path string) (*State, error) {
	return loadFile(path, loadOptions{resolutions: true})
}

// loadForCompaction loads the journal at path for writeSnapshot alone, keeping about 3 bytes a row
// instead of 11: a compaction runs on top of the run's own memory, and at ten million rows the
// lines it would not use are 80 MB. A journal with a row resolved more often than the lean state
// counts (65,535 times) is loaded in full.
func loadForCompaction(path string) (*State, error) {
	st, err := loadFile(path, loadOptions{resolutions: true, lean: true})
	if err == nil && st.saturated {
		return loadForSnapshot(path)
	}
	return st, err
}

func loadFile(path string, opt loadOptions) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return loadWith(f, opt)
}

// snapshotOf writes the snapshot of st, loaded from the journal at path, to out.
func snapshotOf(out io.Writer, st *State, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return writeSnapshot(out, st, f)
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
	if fi, err := j.Stat(); err == nil {
		w.journalSize = fi.Size()
	}
	w.scheduleCompaction()
	return nil
}

// writeSnapshot writes the fewest records that replay to st: the header (in
// the current version, or BatchVersion with B records), every B record, each open row's N/I/S/U/D records in row order, then
// the resolved rows in L records and the K record that sums them up, then the submissions of the last hour per
// second (T records), and a P record if the next line does not go where the
// last one ended.
//
// st keeps no operation of a resolved row (a row each would cost tens of bytes
// in memory), but a snapshot must, so that a row whose result line is lost is
// fetched again rather than submitted again. So the resolved rows are written
// while journal, the journal st was loaded from (with loadOptions.resolutions),
// is read a second time: a row's entry goes out at its last resolution there,
// with the operation its latest S record named (or its L entry carried), and
// its line as st has it (or, when st was loaded lean, as that resolution put
// it). Rows resolved more than 65,535 times, whose last resolution cannot be
// told, are written after the others, without their operation (a lean state
// has none: loadForCompaction loads such a journal in full).
func writeSnapshot(out io.Writer, st *State, journal io.Reader) error {
	if st.resolutions == nil {
		return errors.New("snapshot: the state was loaded without counting resolutions")
	}
	// A snapshot is written in the current format, whatever the version of
	// the journal it replaces.
	h := st.Header
	if h.Version != BatchVersion && len(st.Steps) == 0 {
		h.Version = Version
	} else {
		h.Version = BatchVersion
	}
	hdr, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: st.preamble})
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	buf := appendHeaderRecord(make([]byte, 0, 64<<10), hdr)
	buf = appendGroups(buf, st.groups)
	for _, raw := range st.Steps { // after the header and groups, in their order
		buf = appendStep(buf, raw)
	}
	flush := func(force bool) error {
		if len(buf) < 64<<10 && !force {
			return nil
		}
		_, err := bw.Write(buf)
		buf = buf[:0]
		return err
	}
	var idBuf []byte
	for i := range st.Len() {
		if len(st.Named) > 0 {
			if n, ok := st.Named[i]; ok {
				idBuf = appendJSONString(idBuf[:0], n.ID)
				buf = appendNamed(buf, i, &n.Key, n.Model, idBuf)
			}
		}
		r := st.Row(i)
		buf = appendRowRecords(buf, i, &r)
		if err := flush(false); err != nil {
			return err
		}
	}

	enc := linesEncoder{cursor: int64(len(st.preamble))} // its cursor: where the last line written ends
	blk := blockSummary{summary: summary{from: enc.cursor}}
	flushLines := func() {
		n, at := enc.count, len(buf)
		if buf = enc.flush(buf); n > 0 {
			blk.linesFlushed(n, len(buf)-at)
		}
	}
	// emit writes row i at its last resolution, whose line ends at end and is n bytes long: the
	// row's count of resolutions left to read comes down to 0 there.
	emit := func(i int, opID []byte, at, end, n int64) {
		left := st.resolutionsOf(i)
		if left == 0 {
			return
		}
		if st.setResolutions(i, left-1); left > 1 || st.Phase(i) != PhaseResolved {
			return
		}
		if st.pos != nil { // where the caller may have moved it (Finalize)
			end, n = st.end(i), st.lineLen(i)
		}
		if n == 0 {
			// Where the line starts is not known: a P and an R record replay that.
			flushLines()
			blk.mixed = true
			buf = appendPosition(buf, end)
			buf = appendResolved(buf, i, st.Failed(i), end)
			enc.cursor = end
		} else {
			blk.end, blk.total = max(blk.end, end), blk.total+n
			if enc.add(i, end-n, n, st.Failed(i), st.attempt(i), opID, at) {
				flushLines()
			}
		}
	}
	// The rows submitted and not yet resolved as the journal is read again: the operation ids are
	// copied, the resolved rows' taken where they are read, so that a snapshot leaves no garbage
	// per row.
	type sub struct {
		opID []byte
		at   int64
	}
	latest := map[int]sub{}
	cursor := int64(len(st.preamble)) // where the next R record's line starts, replayed as the load did
	jr := newJournalReader(journal)
	if _, _, _, err := jr.next(nil); err != nil && err != io.EOF { // the header
		return fmt.Errorf("read journal again: %w", err)
	}
	for {
		rec, lines, reason, err := jr.next(st)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read journal again: %w", err)
		}
		if reason != nil {
			continue // skipped when it was loaded, too
		}
		switch rec.kind {
		case kindPosition:
			cursor = rec.end
		case kindSubmitted:
			latest[rec.row] = sub{bytes.Clone(rec.opID), rec.at}
		case kindIntent, kindReopen, kindDoubt:
			delete(latest, rec.row)
		case kindResolved:
			op := latest[rec.row]
			emit(rec.row, op.opID, op.at, rec.end, lineLen(cursor, rec.end))
			cursor = rec.end
			delete(latest, rec.row)
		case kindLines:
			if checkLines(cursor, lines) != nil {
				continue // skipped when it was loaded, too
			}
			for _, e := range lines {
				cursor += e.skip
				emit(int(e.row), e.opID, e.at, cursor+e.n, lineLen(cursor, cursor+e.n))
				cursor += e.n
				delete(latest, int(e.row))
			}
		}
		if err := flush(false); err != nil {
			return err
		}
	}
	for i := range st.Len() { // resolved more often than counted
		if st.resolutionsOf(i) > 0 && st.Phase(i) == PhaseResolved {
			if st.pos == nil {
				return fmt.Errorf("read journal again: row %d resolved fewer times than when it was loaded", i)
			}
			st.setResolutions(i, 1)
			emit(i, nil, 0, st.end(i), st.lineLen(i))
		}
	}
	st.resolutions, st.bigResolutions = nil, nil // spent
	flushLines()
	buf = blk.appendSummary(buf, st, enc.cursor)
	for _, sc := range st.recent.seconds() {
		buf = appendSeconds(buf, sc.Second, sc.N)
	}
	if enc.cursor != st.cursor {
		buf = appendPosition(buf, st.cursor)
	}
	if err := flush(true); err != nil {
		return err
	}
	return bw.Flush()
}

// appendRowRecords appends the records that replay to r, except those of its
// resolution (its L or R record, which carries a resolved row's attempts and
// operation).
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
	}
	return dst
}
