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

// createTemp is a seam: tests make it return a file that cannot be written,
// to simulate a full disk.
var createTemp = os.CreateTemp

// file is what the writer needs of its two files. wrapFile is a seam that
// lets tests inject write and fsync failures.
type file interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

var wrapFile = func(f *os.File) file { return f }

// writeFileAtomic replaces path with data: same-directory temp file, write,
// fsync, rename, fsync the directory. A crash leaves the old file or the new
// one, never a mix.
func writeFileAtomic(path string, fill func(w io.Writer) error) error {
	tmp, err := writeTemp(path, 0o600, fill)
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
func writeTemp(path string, perm fs.FileMode, fill func(w io.Writer) error) (_ string, err error) {
	f, err := createTemp(filepath.Dir(path), filepath.Base(path)+tempInfix+"*")
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
