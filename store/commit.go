package store

import "fmt"

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
			for i < len(rest) && !alone(rest[i].kind) {
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
				// Compact, Finalize and SetSettings run alone, after
				// everything queued before them is durable.
				if err == nil {
					switch rest[i].kind {
					case kindCompact:
						err = w.compact()
					case kindSettingsQ:
						err = w.setSettings(rest[i].line)
					default:
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
		if w.journalSize > w.compactAt {
			w.autoCompact()
		}
	}
}

// alone reports whether a request kind rewrites a whole file, and so runs on
// its own, after everything queued before it is durable.
func alone(kind byte) bool {
	return kind == kindCompact || kind == kindFinalizeQ || kind == kindSettingsQ
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
	case kindIntent, kindSubmitted, kindReopen, kindDoubt, kindNamed, kindStep:
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
		case kindStep:
			w.jbuf = appendStep(w.jbuf, r.line)
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
	w.journalSize += int64(len(records))
	w.commits.Add(1)
	w.recordCount.Add(n)
	return nil
}
