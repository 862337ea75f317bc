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
// back to where they can be fetched again, with their names and operations
// (from kept, which reads the journal again keeping those of a set of rows:
// st does not keep a resolved row's operation or name).
func repairResults(st *State, kept func(rows []uint64) (*State, error)) (_ *os.File, fix []byte, err error) {
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
		gone []uint64 // rows whose lines are gone
		old  = &State{}
	)
	// The rows whose lines to check: none in a state loaded lean, which loadForOpen keeps for a
	// results file that has every line; the last of them ends at ResultsEnd.
	rows, end := st.Len(), pre
	if st.pos == nil {
		if valid < st.ResultsEnd { // it shrank since
			return nil, nil, fmt.Errorf("results file %s changed while the checkpoint was opened", name)
		}
		rows, end = 0, st.ResultsEnd
	}
	for i := range rows {
		if st.Phase(i) == PhaseResolved && st.end(i) > valid {
			if gone == nil {
				gone = make([]uint64, (st.Len()+63)/64)
			}
			gone[i/64] |= 1 << (i % 64)
		}
	}
	if gone != nil {
		if old, err = kept(gone); err != nil {
			return nil, nil, fmt.Errorf("read the rows whose lines are gone: %w", err)
		}
	}
	moved := 0
	var idBuf []byte
	for i := range rows {
		if st.Phase(i) != PhaseResolved {
			continue
		}
		if e := st.end(i); e <= valid {
			end = max(end, e)
			continue
		}
		// Its line is gone; the operation id, if any, is still good, and so
		// is its name.
		moved++
		attempt := int(st.attempt(i))
		st.setNew(i)
		if n, ok := old.Named[i]; ok {
			if st.Named == nil {
				st.Named = make(map[int]Named)
			}
			st.Named[i] = n
			idBuf = appendJSONString(idBuf[:0], n.ID)
			fix = appendNamed(fix, i, &n.Key, n.Model, idBuf)
		}
		if op, ok := old.op(i); ok {
			st.flags[i] = uint8(PhaseSubmitted)
			st.setOp(i, op.opID, op.at)
			fix = appendSubmitted(fix, i, attempt, op.opID, op.at)
		} else {
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
