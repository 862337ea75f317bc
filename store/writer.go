package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
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
// call returns it. A call that returned nil was durable, or (Name,
// SubmittedThen, ResultThen, Reopen, Retry, Doubt) is queued and becomes
// durable with the next successful commit, which Flush waits for and reports.
// After a results-file failure the records already queued that need no result
// line are still journaled.
type Writer struct {
	path        string
	rows        int
	lock        *flock.Flock
	journal     file
	results     file
	preamble    []byte // to rewrite the header on Compact
	header      Header
	hooks       hooks // for tests
	closeOnce   sync.Once
	closeErr    error
	done        chan struct{} // closed when the writer goroutine exits
	commits     atomic.Int64  // journal fsyncs and records: the tests check the group commit
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
	journalSize   int64 // bytes in the journal
	compactAt     int64 // the journal size that triggers a compaction
	compactions   atomic.Int64
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

func newWriter(path string, lk *flock.Flock, journal, results *os.File, st *State, rows int, hk *hooks) *Writer {
	w := &Writer{
		path:       path,
		rows:       rows,
		lock:       lk,
		journal:    hk.wrap(journal),
		results:    hk.wrap(results),
		preamble:   st.preamble,
		header:     st.Header,
		done:       make(chan struct{}),
		resultsEnd: st.ResultsEnd,
		resolved:   make([]uint64, (rows+63)/64),
		superseded: st.SupersededBytes(),
	}
	for i := range st.Len() {
		if st.Phase(i) == PhaseResolved {
			w.resolved[i/64] |= 1 << (i % 64)
		}
	}
	if hk != nil {
		w.hooks = *hk
	}
	if fi, err := journal.Stat(); err == nil {
		w.journalSize = fi.Size()
	}
	w.scheduleCompaction()
	w.needsFinalize.Store(w.superseded > 0)
	w.wake.L = &w.mu
	go w.run()
	return w
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

// SubmittedThen queues the operation id the API returned for row. It returns
// the sticky error, if any; Flush waits until the record is durable. A non-nil
// durable is called on the writer's goroutine once the S record is durable
// (never if it does not become so); it must be quick and must not call the
// Writer.
func (w *Writer) SubmittedThen(row, attempt int, opID string, at time.Time, durable func()) error {
	if err := w.checkAttempt(row, attempt); err != nil {
		return err
	}
	if !validOpID(opID) {
		return fmt.Errorf("checkpoint: row %d: invalid operation id %q", row, opID)
	}
	return w.enqueue(request{kind: kindSubmitted, row: row, attempt: attempt, opID: opID, at: at.UnixMilli(), durable: durable})
}

// Name queues the N record of row (like SubmittedThen: it returns the sticky error, if any; it is
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

// ResultThen queues row's result line (which must end in '\n'; it may contain
// others, e.g. a quoted CSV field) and then the record that resolves the row.
// The line is copied. A non-nil durable is called on the writer's goroutine
// once the row's result line and its R record are durable (never if they do
// not become so); it must be quick and must not call the Writer.
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

// Step journals one step of the batch backend, raw (a JSON value, compacted here onto one line),
// and returns once its B record is durable: the step a crash leaves in doubt must be on disk
// before the call it announces. Only a checkpoint created with BatchVersion takes steps, so that
// an older batchgpt refuses it (see BatchVersion).
func (w *Writer) Step(raw []byte) error {
	if w.header.Version != BatchVersion {
		return fmt.Errorf("checkpoint %s: batch steps need a version-%d checkpoint, this one is version %d", w.path, BatchVersion, w.header.Version)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Errorf("checkpoint %s: batch step is not valid JSON: %w", w.path, err)
	}
	if b.Len() > maxRecord-32 {
		return fmt.Errorf("checkpoint %s: batch step of %d bytes is too long", w.path, b.Len())
	}
	return w.wait(request{kind: kindStep, line: b.Bytes()})
}

// Flush returns once everything queued before it is durable, or the error
// that prevented it.
func (w *Writer) Flush() error {
	return w.wait(request{kind: kindFlush})
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

// Compactions counts the compactions the writer made on its own.
func (w *Writer) Compactions() int { return int(w.compactions.Load()) }
