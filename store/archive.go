package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Archive moves the checkpoint at path and its results file to newPath and newResults, so that
// a new run can take their names (a nightly job re-exports the same input file). The archived
// checkpoint is a snapshot whose header names newResults, so `status` and `resume` still work
// on it. It takes the checkpoint's lock: a process running it makes Archive fail with ErrLocked.
//
// Each step is safe to repeat after a crash: the results file is linked to newResults, the
// snapshot is written to newPath (atomically), path is removed — the commit point: from then on
// the run lives at newPath — and last the results file's old name.
func Archive(path, newPath, newResults string) (err error) {
	lk, err := lock(path)
	if err != nil {
		return err
	}
	defer lk.Close()
	st, err := loadForSnapshot(path)
	if err == nil {
		err = st.settleFinalize()
	}
	if err != nil {
		return fmt.Errorf("archive checkpoint %s: %w", path, err)
	}
	old := st.Header.Results
	if err := os.Link(old, newResults); err != nil && !sameFile(old, newResults) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("archive results file %s: %w", old, err)
	}
	if err := syncDir(filepath.Dir(newResults)); err != nil {
		return fmt.Errorf("archive results file: %w", err)
	}
	st.Header.Results = newResults
	if err := writeFileAtomic(nil, newPath, func(out io.Writer) error { return snapshotOf(out, st, path) }); err != nil {
		return fmt.Errorf("archive checkpoint %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("archive checkpoint: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("archive checkpoint: %w", err)
	}
	if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("archive results file: %w", err)
	}
	return syncDir(filepath.Dir(old))
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
