package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

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
