package store

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

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
func writeFileAtomic(path string, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := createTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
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
