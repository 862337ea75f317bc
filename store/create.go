package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Create starts a new checkpoint at path for header h and a results file at
// h.Results beginning with resultsPreamble (e.g. a CSV header line). It
// refuses to overwrite an existing checkpoint or results file unless force.
// Header.Results is used as given, so callers should store an absolute path.
func Create(path string, h Header, resultsPreamble []byte, force bool, opts ...Option) (*Writer, error) {
	return create(path, h, resultsPreamble, force, withOptions(opts))
}

// Option changes how a Writer works.
type Option func(*hooks)

// CompactFrom makes the Writer compact its journal once it has doubled (or grown by 128 MiB) and
// is at least n bytes (64 MiB without it; tests make it small to compact often).
func CompactFrom(n int64) Option { return func(h *hooks) { h.compactMin = n } }

// CompactTail makes the Writer compact its journal once it has grown by n bytes since its last
// snapshot, if it has not doubled first (128 MiB without it; bench/compactmem compares).
func CompactTail(n int64) Option { return func(h *hooks) { h.compactTail = n } }

func withOptions(opts []Option) *hooks {
	if len(opts) == 0 {
		return nil
	}
	h := &hooks{}
	for _, o := range opts {
		o(h)
	}
	return h
}

func create(path string, h Header, resultsPreamble []byte, force bool, hk *hooks) (_ *Writer, err error) {
	if h.Version == 0 {
		h.Version = Version
	}
	switch {
	case h.Version != Version && h.Version != BatchVersion:
		return nil, fmt.Errorf("create checkpoint: %w %d", ErrVersion, h.Version)
	case h.Rows < 0 || h.Rows > MaxRows:
		return nil, fmt.Errorf("create checkpoint: rows %d out of range [0,%d]", h.Rows, MaxRows)
	case h.Results == "":
		return nil, errors.New("create checkpoint: no results file")
	}
	if h.Created.IsZero() {
		h.Created = time.Now().UTC()
	}
	hdr, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: resultsPreamble})
	if err != nil {
		return nil, fmt.Errorf("create checkpoint: header: %w", err)
	}
	if len(hdr) > maxRecord-32 {
		return nil, errors.New("create checkpoint: header too large")
	}

	lk, err := lock(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lk.Close()
		}
	}()
	if !force {
		for _, p := range []struct{ what, name, hint string }{
			{"checkpoint", path, "use resume to continue that run, or --force to start over"},
			{"results file", h.Results, "use --force to overwrite it"},
		} {
			if _, err := os.Lstat(p.name); err == nil {
				return nil, fmt.Errorf("create checkpoint: %s %s %w: %s", p.what, p.name, ErrExists, p.hint)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("create checkpoint: %w", err)
			}
		}
	}

	err = writeFileAtomic(hk, path, func(w io.Writer) error {
		_, err := w.Write(appendGroups(appendHeaderRecord(nil, hdr), hk.groupsOf()))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create checkpoint %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(path) // no half-created run
		}
	}()
	res, err := createResults(h.Results, resultsPreamble, force)
	if err != nil {
		return nil, fmt.Errorf("create checkpoint: %w", err)
	}
	j, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		res.Close()
		return nil, fmt.Errorf("create checkpoint: %w", err)
	}
	// No per-row state: every row of a new checkpoint is new, and a million rows of zeroes
	// would only be garbage.
	st := &State{Header: h, preamble: resultsPreamble, groups: hk.groupsOf(),
		ResultsEnd: int64(len(resultsPreamble)), cursor: int64(len(resultsPreamble))}
	return newWriter(path, lk, j, res, st, h.Rows, hk), nil
}

// createResults creates (or with force truncates) the results file and
// writes its preamble durably.
func createResults(name string, preamble []byte, force bool) (_ *os.File, err error) {
	flag := os.O_WRONLY | os.O_APPEND | os.O_CREATE | os.O_EXCL
	if force {
		flag = os.O_WRONLY | os.O_APPEND | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create results file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// An existing file keeps its mode on O_TRUNC; tighten it, but never
	// chmod a device such as /dev/null.
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("create results file: %w", err)
		}
	}
	if len(preamble) > 0 {
		if _, err := f.Write(preamble); err != nil {
			return nil, fmt.Errorf("write results file %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("sync results file %s: %w", name, err)
		}
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return nil, fmt.Errorf("create results file: %w", err)
	}
	return f, nil
}

// groupsOf returns the blob of the Groups option, if any.
func (h *hooks) groupsOf() []byte {
	if h == nil {
		return nil
	}
	return h.groups
}
