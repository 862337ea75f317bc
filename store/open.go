package store

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"
)

// Open locks the checkpoint at path, loads it and repairs both files for
// appending: a torn journal tail is truncated, the results file is cut back
// to the journaled end, and rows whose result lines are missing from it go
// back to PhaseSubmitted (PhaseNew if they never got an operation id). An
// interrupted Finalize is completed or rolled back, and leftover temp files
// are removed. The repairs are listed in the returned State's Problems.
func Open(path string, opts ...Option) (*Writer, *State, error) {
	return openWith(path, withOptions(opts))
}

func openWith(path string, hk *hooks) (*Writer, *State, error) {
	// No lock file is left beside a checkpoint that is not there.
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	lk, err := lock(path)
	if err != nil {
		return nil, nil, err
	}
	w, st, err := open(path, lk, hk)
	if err != nil {
		lk.Close()
		return nil, nil, err
	}
	return w, st, nil
}

// loadForOpen loads the journal j for Open: lean first (without where each resolved row's line
// is, 8 bytes a row, 80 MB of allocations at ten million rows), and in full when Open needs
// those lines: to settle an interrupted finalize, to move back rows whose lines the results file
// lost, or because a row's line was superseded (a row reopened or answered again, lines of
// unknown length), which only the lines can account for. A run interrupted and resumed as usual
// needs none of them.
func loadForOpen(j *os.File) (*State, error) {
	st, err := loadWith(io.NewSectionReader(j, 0, math.MaxInt64), loadOptions{lean: true, summaries: j})
	if err != nil || !st.needsLines() {
		return st, err
	}
	return load(io.NewSectionReader(j, 0, math.MaxInt64))
}

// needsLines reports whether Open needs the lines of a state loaded lean (see loadForOpen).
func (s *State) needsLines() bool {
	if s.lostLine || s.hasFinal || s.SupersededBytes() > 0 {
		return true
	}
	fi, err := os.Stat(s.Header.Results)
	return err != nil || fi.Size() < s.ResultsEnd
}

func open(path string, lk *flock.Flock, hk *hooks) (_ *Writer, _ *State, err error) {
	j, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			j.Close()
		}
	}()
	st, err := loadForOpen(j)
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
		// The results file was replaced, the journal not yet: do it now, from the journal
		// loaded again for a snapshot (settled the same way).
		full, err := loadForSnapshot(path)
		if err == nil {
			err = full.settleFinalize()
		}
		if err == nil {
			err = writeFileAtomic(hk, path, func(out io.Writer) error { return snapshotOf(out, full, path) })
		}
		if err != nil {
			return nil, nil, fmt.Errorf("open checkpoint %s: complete finalize: %w", path, err)
		}
		j.Close()
		if j, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
			return nil, nil, fmt.Errorf("open checkpoint: %w", err)
		}
	}
	// The names and operations of rows whose result lines are gone, which
	// repairResults moves back: the loader dropped them when the rows were
	// resolved.
	kept := func(rows []uint64) (*State, error) {
		return loadKeeping(io.NewSectionReader(j, 0, math.MaxInt64), rows)
	}
	res, fix, err := repairResults(st, kept)
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
	return newWriter(path, lk, j, res, st, st.Len(), hk), st, nil
}
