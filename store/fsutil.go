package store

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"
)

// file is what the writer needs of its two files.
type file interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

// hooks are the seams through which tests simulate a full disk, a failing
// write or fsync, or a crash in the middle of Finalize, and make Finalize copy
// in small pieces. They belong to one Writer (or one call), never to the
// package, so tests that use them can run in parallel. A nil *hooks, or a
// zero field, means the real thing.
type hooks struct {
	createTemp  func(dir, pattern string) (*os.File, error) // temp files (os.CreateTemp)
	wrapFile    func(*os.File) file                         // the Writer's journal and results file
	afterStep   func(step int) error                        // after each step of Finalize
	copy        copySizes                                   // Finalize's copy (defaultCopySizes)
	compactMin  int64                                       // the smallest journal compacted (defaultCompactMin)
	compactTail int64                                       // the journal's growth that triggers a compaction at most (defaultCompactTail)
	groups      []byte                                      // Create's G records (Groups)
}

func (h *hooks) tempFile(dir, pattern string) (*os.File, error) {
	if h == nil || h.createTemp == nil {
		return os.CreateTemp(dir, pattern)
	}
	return h.createTemp(dir, pattern)
}

func (h *hooks) wrap(f *os.File) file {
	if h == nil || h.wrapFile == nil {
		return f
	}
	return h.wrapFile(f)
}

func (h *hooks) minCompact() int64 {
	if h == nil || h.compactMin == 0 {
		return defaultCompactMin
	}
	return h.compactMin
}

func (h *hooks) maxTail() int64 {
	if h == nil || h.compactTail == 0 {
		return defaultCompactTail
	}
	return h.compactTail
}

func (h *hooks) copySize() copySizes {
	if h == nil || h.copy == (copySizes{}) {
		return defaultCopySizes
	}
	return h.copy
}

// writeFileAtomic replaces path with data: same-directory temp file, write,
// fsync, rename, fsync the directory. A crash leaves the old file or the new
// one, never a mix.
func writeFileAtomic(hk *hooks, path string, fill func(w io.Writer) error) error {
	tmp, err := writeTemp(hk, path, 0o600, fill)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeTemp writes a durable (fsynced) temp file with permissions perm next
// to path, to be renamed over it, and returns its name. removeTemps finds it.
func writeTemp(hk *hooks, path string, perm fs.FileMode, fill func(w io.Writer) error) (_ string, err error) {
	f, err := hk.tempFile(filepath.Dir(path), filepath.Base(path)+tempInfix+"*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(perm); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

const tempInfix = ".tmp-"

// removeTemps removes the temp files writeTemp left next to path when the
// process died before renaming them. Failures are harmless: a leftover temp
// file is never read.
func removeTemps(path string) {
	dir, prefix := filepath.Dir(path), filepath.Base(path)+tempInfix
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// syncDir makes a rename or a file creation in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return d.Close()
}

// lock takes the checkpoint's exclusive lock without waiting. flock(2) locks
// belong to an open file description, so a second lock from this process
// fails as well.
func lock(path string) (*flock.Flock, error) {
	lk := flock.New(path+".lock", flock.SetPermissions(0o600))
	ok, err := lk.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock checkpoint %s: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: another batchgpt process is using %s", ErrLocked, path)
	}
	return lk, nil
}
