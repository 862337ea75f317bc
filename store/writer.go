package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gofrs/flock"
)

// Writer appends to a checkpoint and its results file. One goroutine owns
// both files and commits whatever is queued as a group, so a burst of
// requests costs two fsyncs. All methods are safe for concurrent use.
//
// Once a write or fsync fails (a full disk), the error is sticky: every later
// call returns it. A call that returned nil was durable, or (Name, Submitted,
// Result, Reopen, Doubt) is queued and becomes durable with the next successful
// commit, which Flush waits for and reports. After a results-file failure the
// records already queued that need no result line are still journaled.
type Writer struct {
	path        string
	rows        int
	lock        *flock.Flock
	journal     file
	results     file
	preamble    []byte // to rewrite the header on Compact
	header      Header
	closeOnce   sync.Once
	closeErr    error
	done        chan struct{} // closed when the writer goroutine exits
	commits     atomic.Int64
	recordCount atomic.Int64

	mu      sync.Mutex
	wake    sync.Cond // queue became non-empty, or closing
	queue   []request
	err     error // sticky
	closing bool

	needsFinalize atomic.Bool

	// Owned by the writer goroutine.
	resultsEnd    int64
	resolved      []uint64 // bit set per row whose latest result line is in the file
	superseded    int64    // superseded bytes when opened, plus lines since
	resultsFailed bool     // sticky error from the results file: journal the rest
	journalFailed bool     // sticky error from the journal: write nothing more
	journalBroken bool     // journalFailed, as seen by enqueue (under mu)
	spare         []request
	late          []request // journal-only requests that joined the commit under way
	jbuf, rbuf    []byte
}

type request struct {
	kind    byte
	failed  bool
	row     int
	attempt int
	at      int64
	opID    string
	reset   bool       // Reopen: the row's attempts start over
	line    []byte     // Result: the result line; Name: the whole N record
	done    chan error // nil for queued-only requests
	durable func()     // Result, Submitted: called once its record is durable
}

func newWriter(path string, lk *flock.Flock, journal, results *os.File, st *State, rows int) *Writer {
	w := &Writer{
		path:       path,
		rows:       rows,
		lock:       lk,
		journal:    wrapFile(journal),
		results:    wrapFile(results),
		preamble:   st.preamble,
		header:     st.Header,
		done:       make(chan struct{}),
		resultsEnd: st.ResultsEnd,
		resolved:   make([]uint64, (rows+63)/64),
		superseded: st.SupersededBytes(),
	}
	for i := range st.Rows {
		if st.Rows[i].Phase == PhaseResolved {
			w.resolved[i/64] |= 1 << (i % 64)
		}
	}
	w.needsFinalize.Store(w.superseded > 0)
	w.wake.L = &w.mu
	go w.run()
	return w
}

// Create starts a new checkpoint at path for header h and a results file at
// h.Results beginning with resultsPreamble (e.g. a CSV header line). It
// refuses to overwrite an existing checkpoint or results file unless force.
// Header.Results is used as given, so callers should store an absolute path.
func Create(path string, h Header, resultsPreamble []byte, force bool) (_ *Writer, err error) {
	if h.Version == 0 {
		h.Version = Version
	}
	switch {
	case h.Version != Version:
		return nil, fmt.Errorf("create checkpoint: %w %d", ErrVersion, h.Version)
	case h.Rows < 0 || h.Rows > MaxRows:
		return nil, fmt.Errorf("create checkpoint: rows %d out of range [0,%d]", h.Rows, MaxRows)
	case h.Results == "":
		return nil, errors.New("create checkpoint: no results file")
	}
	if h.Created.IsZero() {
		h.Created = time.Now().UTC()
	}
	hdr, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: resultsPreamble})
	if err != nil {
		return nil, fmt.Errorf("create checkpoint: header: %w", err)
	}
	if len(hdr) > maxRecord-32 {
		return nil, errors.New("create checkpoint: header too large")
	}

	lk, err := lock(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lk.Close()
		}
	}()
	if !force {
		for _, p := range []struct{ what, name, hint string }{
			{"checkpoint", path, "use resume to continue that run, or --force to start over"},
			{"results file", h.Results, "use --force to overwrite it"},
		} {
			if _, err := os.Lstat(p.name); err == nil {
				return nil, fmt.Errorf("create checkpoint: %s %s %w: %s", p.what, p.name, ErrExists, p.hint)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("create checkpoint: %w", err)
			}
		}
	}

	err = writeFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(appendHeaderRecord(nil, hdr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create checkpoint %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(path) // no half-created run
		}
	}()
	res, err := createResults(h.Results, resultsPreamble, force)
	if err != nil {
		return nil, fmt.Errorf("create checkpoint: %w", err)
	}
	j, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		res.Close()
		return nil, fmt.Errorf("create checkpoint: %w", err)
	}
	// No per-row state: every row of a new checkpoint is new, and a million rows of zeroes
	// would only be garbage.
	st := &State{Header: h, preamble: resultsPreamble,
		ResultsEnd: int64(len(resultsPreamble)), cursor: int64(len(resultsPreamble))}
	return newWriter(path, lk, j, res, st, h.Rows), nil
}

// createResults creates (or with force truncates) the results file and
// writes its preamble durably.
func createResults(name string, preamble []byte, force bool) (_ *os.File, err error) {
	flag := os.O_WRONLY | os.O_APPEND | os.O_CREATE | os.O_EXCL
	if force {
		flag = os.O_WRONLY | os.O_APPEND | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create results file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// An existing file keeps its mode on O_TRUNC; tighten it, but never
	// chmod a device such as /dev/null.
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("create results file: %w", err)
		}
	}
	if len(preamble) > 0 {
		if _, err := f.Write(preamble); err != nil {
			return nil, fmt.Errorf("write results file %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("sync results file %s: %w", name, err)
		}
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return nil, fmt.Errorf("create results file: %w", err)
	}
	return f, nil
}

// Open locks the checkpoint at path, loads it and repairs both files for
// appending: a torn journal tail is truncated, the results file is cut back
// to the journaled end, and rows whose result lines are missing from it go
// back to PhaseSubmitted (PhaseNew if they never got an operation id). An
// interrupted Finalize is completed or rolled back, and leftover temp files
// are removed. The repairs are listed in the returned State's Problems.
func Open(path string) (*Writer, *State, error) {
	// No lock file is left beside a checkpoint that is not there.
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	lk, err := lock(path)
	if err != nil {
		return nil, nil, err
	}
	w, st, err := open(path, lk)
	if err != nil {
		lk.Close()
		return nil, nil, err
	}
	return w, st, nil
}

func open(path string, lk *flock.Flock) (_ *Writer, _ *State, err error) {
	j, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			j.Close()
		}
	}()
	st, err := load(j)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint %s: %w", path, err)
	}
	if st.DroppedBytes > 0 {
		if err := j.Truncate(st.validEnd); err != nil {
			return nil, nil, fmt.Errorf("open checkpoint: truncate torn tail: %w", err)
		}
		if err := j.Sync(); err != nil {
			return nil, nil, fmt.Errorf("open checkpoint: sync %s: %w", path, err)
		}
	}
	// Temp files of an interrupted Create, Compact or Finalize; the lock
	// says nobody else is writing them.
	removeTemps(path)
	if res, err := filepath.EvalSymlinks(st.Header.Results); err == nil {
		removeTemps(res) // Finalize writes beside the file a link points to
	}
	if err := st.settleFinalize(); err != nil {
		return nil, nil, fmt.Errorf("open checkpoint %s: %w", path, err)
	}
	if st.finalized {
		// The results file was replaced, the journal not yet: do it now.
		err := writeFileAtomic(path, func(out io.Writer) error { return writeSnapshot(out, st, nil) })
		if err != nil {
			return nil, nil, fmt.Errorf("open checkpoint %s: complete finalize: %w", path, err)
		}
		j.Close()
		if j, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
			return nil, nil, fmt.Errorf("open checkpoint: %w", err)
		}
	}
	// The names of rows whose result lines are gone, which repairResults
	// moves back: the loader dropped them when the rows were resolved.
	names := func(rows []uint64) (map[int]Named, error) {
		return namesOf(io.NewSectionReader(j, 0, math.MaxInt64), rows)
	}
	res, fix, err := repairResults(st, names)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint %s: %w", path, err)
	}
	if len(fix) > 0 {
		if _, err = j.Write(fix); err == nil {
			err = j.Sync()
		}
		if err != nil {
			res.Close()
			return nil, nil, fmt.Errorf("open checkpoint: write %s: %w", path, err)
		}
	}
	st.finishProblems()
	return newWriter(path, lk, j, res, st, len(st.Rows)), st, nil
}

// repairResults opens the results file for appending at the journaled end.
// It returns the journal records that move rows whose result lines are gone
// back to where they can be fetched again, with their names (from names, which
// reads the N records of a set of rows from the journal).
func repairResults(st *State, names func(rows []uint64) (map[int]Named, error)) (_ *os.File, fix []byte, err error) {
	name, pre := st.Header.Results, int64(len(st.preamble))
	_, statErr := os.Lstat(name)
	missing := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open results file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("open results file: %w", err)
	}
	size := fi.Size()
	valid := size
	if valid < pre {
		valid = 0 // the preamble itself is damaged: rewrite it
	}
	var (
		gone  []uint64 // rows whose lines are gone
		named map[int]Named
	)
	for i := range st.Rows {
		if st.Rows[i].Phase == PhaseResolved && st.ends[i] > valid {
			if gone == nil {
				gone = make([]uint64, (len(st.Rows)+63)/64)
			}
			gone[i/64] |= 1 << (i % 64)
		}
	}
	if gone != nil {
		if named, err = names(gone); err != nil {
			return nil, nil, fmt.Errorf("read row names: %w", err)
		}
	}
	end, moved := pre, 0
	var idBuf []byte
	for i := range st.Rows {
		r := &st.Rows[i]
		if r.Phase != PhaseResolved {
			continue
		}
		if st.ends[i] <= valid {
			end = max(end, st.ends[i])
			continue
		}
		// Its line is gone; the operation id, if any, is still good, and so
		// is its name.
		moved++
		st.ends[i], st.lens[i] = 0, 0
		if n, ok := named[i]; ok {
			if st.Named == nil {
				st.Named = make(map[int]Named)
			}
			st.Named[i] = n
			idBuf = appendJSONString(idBuf[:0], n.ID)
			fix = appendNamed(fix, i, &n.Key, n.Model, idBuf)
		}
		if r.OpID != "" {
			*r = Row{Phase: PhaseSubmitted, Attempt: r.Attempt, OpID: r.OpID, SubmittedAt: r.SubmittedAt, Doubts: r.Doubts}
			fix = appendSubmitted(fix, i, int(r.Attempt), r.OpID, r.SubmittedAt)
		} else {
			*r = Row{Attempt: r.Attempt, Doubts: r.Doubts}
			fix = appendReopen(fix, i)
		}
	}
	switch {
	case missing:
		st.addProblem("results file %s was missing: recreated it; %d resolved rows will be fetched again", name, moved)
	case size < st.ResultsEnd:
		st.addProblem("results file %s is shorter than the checkpoint says (%d bytes, want %d): %d resolved rows will be fetched again",
			name, size, st.ResultsEnd, moved)
	case size > end:
		st.addProblem("results file %s: removed %d bytes after the last journaled result (they will be written again)", name, size-end)
	}
	if valid < pre || size > end {
		if valid < pre {
			end = 0
		}
		if err := f.Truncate(end); err != nil {
			return nil, nil, fmt.Errorf("truncate results file: %w", err)
		}
		if end < pre {
			if _, err := f.Write(st.preamble); err != nil {
				return nil, nil, fmt.Errorf("write results file %s: %w", name, err)
			}
			end = pre
		}
		if err := f.Sync(); err != nil {
			return nil, nil, fmt.Errorf("sync results file %s: %w", name, err)
		}
	}
	if missing {
		if err := syncDir(filepath.Dir(name)); err != nil {
			return nil, nil, err
		}
	}
	st.ResultsEnd = end
	if st.cursor != end || st.voidFinal {
		// The next line starts where the file now ends, not where the
		// last R record said: tell the loader. This also ends the log
		// with something other than a void F record.
		fix = appendPosition(fix, end)
		st.cursor = end
	}
	return f, fix, nil
}

// Path returns the checkpoint's path.
func (w *Writer) Path() string { return w.path }

// Stats returns how many group commits (journal fsyncs) and journal records
// the Writer has made.
func (w *Writer) Stats() (commits, records int64) {
	return w.commits.Load(), w.recordCount.Load()
}

func (w *Writer) checkRow(row int) error {
	if row < 0 || row >= w.rows {
		return fmt.Errorf("checkpoint: row %d out of range [0,%d)", row, w.rows)
	}
	return nil
}

func (w *Writer) checkAttempt(row, attempt int) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	if attempt < 1 || attempt > math.MaxUint16 {
		return fmt.Errorf("checkpoint: row %d: attempt %d out of range", row, attempt)
	}
	return nil
}

// Intent journals that row is about to be POSTed (attempt n >= 1) and
// returns once that is durable.
func (w *Writer) Intent(row, attempt int) error {
	if err := w.checkAttempt(row, attempt); err != nil {
		return err
	}
	return w.wait(request{kind: kindIntent, row: row, attempt: attempt})
}

// Submitted queues the operation id the API returned for row. It returns the
// sticky error, if any; Flush waits until the record is durable.
func (w *Writer) Submitted(row, attempt int, opID string, at time.Time) error {
	return w.SubmittedThen(row, attempt, opID, at, nil)
}

// SubmittedThen is [Writer.Submitted] that also calls durable, on the writer's
// goroutine, once the S record is durable (never if it does not become so).
// durable must be quick and must not call the Writer.
func (w *Writer) SubmittedThen(row, attempt int, opID string, at time.Time, durable func()) error {
	if err := w.checkAttempt(row, attempt); err != nil {
		return err
	}
	if !validOpID(opID) {
		return fmt.Errorf("checkpoint: row %d: invalid operation id %q", row, opID)
	}
	return w.enqueue(request{kind: kindSubmitted, row: row, attempt: attempt, opID: opID, at: at.UnixMilli(), durable: durable})
}

// Name queues the N record of row (like Submitted: it returns the sticky error, if any; it is
// journal-only, so it is still accepted after the results file failed; Flush or a later
// Intent's wait makes it durable, since records commit in queue order).
//
// Journal it once, before the row's first Intent; it stays the row's name until the row is
// resolved. A row reopened after it was resolved has lost it: name it again before its next
// Intent (a later N record of a row replaces an earlier one). n.Model must be 1 to 256 bytes
// without spaces or control characters; n.ID must be non-empty valid UTF-8 of at most 64 KiB
// as a JSON string.
func (w *Writer) Name(row int, n Named) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	if !validOpID(n.Model) {
		return fmt.Errorf("checkpoint: row %d: invalid model URI %q", row, n.Model)
	}
	if n.ID == "" || len(n.ID) > maxNamedID || !utf8.ValidString(n.ID) {
		return fmt.Errorf("checkpoint: row %d: invalid row id (empty, longer than %d bytes or not UTF-8)", row, maxNamedID)
	}
	id := appendJSONString(make([]byte, 0, len(n.ID)+2), n.ID)
	if len(id) > maxNamedID {
		return fmt.Errorf("checkpoint: row %d: row id too long (%d bytes encoded, at most %d)", row, len(id), maxNamedID)
	}
	// The record is built here, off the writer goroutine; commit copies it.
	return w.enqueue(request{kind: kindNamed, row: row, line: appendNamed(nil, row, &n.Key, n.Model, id)})
}

// Result queues row's result line (which must end in '\n'; it may contain
// others, e.g. a quoted CSV field) and then the record that resolves the
// row. The line is copied.
func (w *Writer) Result(row int, failed bool, line []byte) error {
	return w.ResultThen(row, failed, line, nil)
}

// ResultThen is [Writer.Result] that also calls durable, on the writer's goroutine, once the
// row's result line and its R record are durable (never if they do not become so). durable must
// be quick and must not call the Writer.
func (w *Writer) ResultThen(row int, failed bool, line []byte, durable func()) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return fmt.Errorf("checkpoint: row %d: result line does not end in a newline", row)
	}
	return w.enqueue(request{kind: kindResolved, row: row, failed: failed, line: append([]byte(nil), line...), durable: durable})
}

// Reopen queues a record that sends row back to PhaseNew (its attempt count
// is kept), e.g. to retry a failed row.
func (w *Writer) Reopen(row int) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	return w.enqueue(request{kind: kindReopen, row: row})
}

// Retry queues a record that sends row back to PhaseNew with its attempts reset, so that it gets
// the full --max-attempts again (resume --retry-failed).
func (w *Writer) Retry(row int) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	return w.enqueue(request{kind: kindReopen, row: row, reset: true})
}

// Doubt queues a record that a try of row may have created an operation
// whose answer is never used (a possible billed duplicate). It also closes
// the row's try in flight or its operation: the row is new again (see the D
// record in the package doc). It returns the sticky error, if any; Flush, or
// a later Intent's wait, makes it durable.
func (w *Writer) Doubt(row int) error {
	if err := w.checkRow(row); err != nil {
		return err
	}
	return w.enqueue(request{kind: kindDoubt, row: row})
}

// Flush returns once everything queued before it is durable, or the error
// that prevented it.
func (w *Writer) Flush() error {
	return w.wait(request{kind: kindFlush})
}

// Compact rewrites the journal as a snapshot of the current state (a header
// and a few records per row: its name if it is not resolved, its phase, its
// doubts) through a temp file and a rename. The results file is untouched.
func (w *Writer) Compact() error {
	return w.wait(request{kind: kindCompact})
}

// Close flushes, closes both files and releases the lock. It returns the
// sticky error if anything queued could not be made durable. Later calls
// return the same result.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.wake.Signal()
		w.mu.Unlock()
		<-w.done
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		errs := []error{err}
		if cerr := w.journal.Close(); cerr != nil && err == nil {
			errs = append(errs, fmt.Errorf("close checkpoint %s: %w", w.path, cerr))
		}
		if cerr := w.results.Close(); cerr != nil && err == nil {
			errs = append(errs, fmt.Errorf("close results file %s: %w", w.results.Name(), cerr))
		}
		if cerr := w.lock.Close(); cerr != nil {
			errs = append(errs, fmt.Errorf("unlock checkpoint %s: %w", w.path, cerr))
		}
		w.closeErr = errors.Join(errs...)
	})
	return w.closeErr
}

func (w *Writer) enqueue(req request) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// After the results file failed, records that need no result line are still accepted: each
	// operation id saved is a duplicate, billed request avoided on resume.
	if w.err != nil && (w.journalBroken || !journalOnly(req.kind)) {
		return w.err
	}
	if w.closing {
		return ErrClosed
	}
	w.queue = append(w.queue, req)
	w.wake.Signal()
	return nil
}

// wait enqueues req and blocks until the commit that carries it is done.
func (w *Writer) wait(req request) error {
	req.done = make(chan error, 1)
	if err := w.enqueue(req); err != nil {
		return err
	}
	return <-req.done
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closing {
			w.wake.Wait()
		}
		batch := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()
		if len(batch) == 0 {
			return // closing and drained: enqueue refuses new requests
		}
		for rest := batch; len(rest) > 0; {
			i := 0
			for i < len(rest) && rest[i].kind != kindCompact && rest[i].kind != kindFinalizeQ {
				i++
			}
			// Only the last part of a batch may take in requests queued since: they come
			// after it, but before nothing else already taken.
			err := w.commit(rest[:i], i == len(rest))
			for _, part := range [...][]request{rest[:i], w.late} {
				for _, r := range part {
					if r.done != nil {
						if journalOnly(r.kind) && !w.journalFailed {
							r.done <- nil // durable, whatever befell the results file
						} else {
							r.done <- err
						}
					}
				}
			}
			clear(w.late)
			w.late = w.late[:0]
			if i < len(rest) {
				// Compact and Finalize run alone, after everything queued
				// before them is durable.
				if err == nil {
					if rest[i].kind == kindCompact {
						err = w.compact()
					} else {
						err = w.finalize(rest[i].failed)
					}
				}
				rest[i].done <- err
				i++
			}
			rest = rest[i:]
		}
		clear(batch) // drop references to result lines
		w.spare = batch[:0]
	}
}

// unresolve notes that row's result line, if any, is superseded.
func (w *Writer) unresolve(row int) {
	if bit := uint64(1) << (row % 64); w.resolved[row/64]&bit != 0 {
		w.resolved[row/64] &^= bit
		w.superseded++
	}
}

// journalOnly reports whether a request kind needs only the journal.
func journalOnly(kind byte) bool {
	switch kind {
	case kindIntent, kindSubmitted, kindReopen, kindDoubt, kindNamed:
		return true
	}
	return false
}

// markJournalBroken lets enqueue refuse everything once the journal failed.
func (w *Writer) markJournalBroken() {
	w.mu.Lock()
	w.journalBroken = true
	w.mu.Unlock()
}

// fail makes err sticky and returns it.
func (w *Writer) fail(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *Writer) sticky() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// commit makes batch durable: result lines, fsync, journal records, fsync.
//
// While the results file syncs, operation ids keep arriving; each waits in the queue for the
// next commit, and a kill -9 meanwhile leaves its row in doubt. So when takeLate allows, the
// journal-only requests queued during that fsync (the longest such prefix of the queue, which
// keeps their order) join this commit's journal write, in w.late: no extra fsync, and the
// window from an answer to its S record's fsync shrinks (BENCHMARKS.md).
func (w *Writer) commit(batch []request, takeLate bool) error {
	if w.journalFailed {
		return w.sticky()
	}
	if !w.resultsFailed {
		w.rbuf = w.rbuf[:0]
		for i := range batch {
			if batch[i].kind == kindResolved {
				w.rbuf = append(w.rbuf, batch[i].line...)
			}
		}
		var err error
		if len(w.rbuf) > 0 {
			if _, err = w.results.Write(w.rbuf); err != nil {
				err = fmt.Errorf("write results file %s: %w", w.results.Name(), err)
			} else if err = w.results.Sync(); err != nil {
				err = fmt.Errorf("sync results file %s: %w", w.results.Name(), err)
			}
		}
		if err != nil {
			w.resultsFailed = true
			w.fail(err)
		}
	}
	if takeLate && len(w.rbuf) > 0 && !w.resultsFailed {
		w.takeLate()
	}
	// Even when the results file has failed, journal what is queued: each
	// operation id saved is a duplicate, billed request avoided on resume.
	w.jbuf = w.jbuf[:0]
	end, n := w.resultsEnd, int64(0)
	for i := range len(batch) + len(w.late) {
		r := w.at(batch, i)
		switch r.kind {
		case kindIntent:
			w.jbuf = appendIntent(w.jbuf, r.row, r.attempt)
			w.unresolve(r.row)
		case kindSubmitted:
			w.jbuf = appendSubmitted(w.jbuf, r.row, r.attempt, r.opID, r.at)
			w.unresolve(r.row)
		case kindResolved:
			if w.resultsFailed {
				continue
			}
			end += int64(len(r.line))
			w.jbuf = appendResolved(w.jbuf, r.row, r.failed, end)
			w.unresolve(r.row)
			w.resolved[r.row/64] |= 1 << (r.row % 64)
		case kindReopen:
			if r.reset {
				w.jbuf = appendRetry(w.jbuf, r.row)
			} else {
				w.jbuf = appendReopen(w.jbuf, r.row)
			}
			w.unresolve(r.row)
		case kindDoubt:
			w.jbuf = appendDoubt(w.jbuf, r.row)
		case kindNamed:
			w.jbuf = append(w.jbuf, r.line...) // the whole record, see Name
		default:
			continue
		}
		n++
	}
	w.resultsEnd = end
	w.needsFinalize.Store(w.superseded > 0)
	if n > 0 {
		if err := w.appendJournal(w.jbuf, n); err != nil {
			return err
		}
	}
	for i := range len(batch) + len(w.late) {
		if r := w.at(batch, i); r.durable != nil && (r.kind == kindSubmitted || !w.resultsFailed) {
			r.durable()
		}
	}
	return w.sticky()
}

// at returns request i of batch followed by w.late.
func (w *Writer) at(batch []request, i int) *request {
	if i < len(batch) {
		return &batch[i]
	}
	return &w.late[i-len(batch)]
}

// takeLate moves the journal-only requests at the head of the queue to w.late.
func (w *Writer) takeLate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := 0
	for k < len(w.queue) && journalOnly(w.queue[k].kind) {
		k++
	}
	if k == 0 {
		return
	}
	w.late = append(w.late, w.queue[:k]...)
	n := copy(w.queue, w.queue[k:])
	clear(w.queue[n:])
	w.queue = w.queue[:n]
}

// appendJournal writes n records to the journal and makes them durable; a failure is sticky and
// stops every later write.
func (w *Writer) appendJournal(records []byte, n int64) error {
	_, err := w.journal.Write(records)
	if err != nil {
		err = fmt.Errorf("write checkpoint %s: %w", w.path, err)
	} else if err = w.journal.Sync(); err != nil {
		err = fmt.Errorf("sync checkpoint %s: %w", w.path, err)
	}
	if err != nil {
		w.journalFailed = true
		w.markJournalBroken()
		return w.fail(err)
	}
	w.commits.Add(1)
	w.recordCount.Add(n)
	return nil
}
