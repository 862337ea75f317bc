package store

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// compact runs in the writer goroutine, after everything queued before the
// request is durable. It reloads the journal rather than keeping a second
// copy of the state in memory for a rarely used operation.
func (w *Writer) compact() error {
	if err := w.sticky(); err != nil {
		return err
	}
	f, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("compact checkpoint: %w", err)
	}
	st, err := load(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	hdr, err := json.Marshal(diskHeader{Header: st.Header, ResultsPreamble: st.preamble})
	if err != nil {
		return fmt.Errorf("compact checkpoint: header: %w", err)
	}
	err = writeFileAtomic(w.path, func(out io.Writer) error {
		bw := bufio.NewWriterSize(out, 1<<20)
		buf := appendHeaderRecord(nil, hdr)
		for i := range st.Rows {
			buf = appendSnapshot(buf, i, &st.Rows[i], st.ends[i])
			if len(buf) >= 64<<10 {
				if _, err := bw.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		// The old journal is intact and still open: nothing is lost.
		return fmt.Errorf("compact checkpoint %s: %w", w.path, err)
	}
	j, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		// Appending to the old, renamed-over file would lose records.
		w.journalFailed = true
		return w.fail(fmt.Errorf("compact checkpoint: reopen: %w", err))
	}
	w.journal.Close()
	w.journal = wrapFile(j)
	return nil
}

// appendSnapshot appends the fewest records that replay to r.
func appendSnapshot(dst []byte, i int, r *Row, end int64) []byte {
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
		dst = appendResolved(dst, i, r.Failed, end)
	}
	return dst
}
