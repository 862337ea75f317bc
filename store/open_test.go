package store_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// resolvedRun makes a checkpoint with rows 0..3 resolved (row 3 without an
// operation id) and row 4 submitted.
func resolvedRun(t *testing.T) (ckpt, results string) {
	t.Helper()
	w, ckpt, results := newRun(t, 6, "id,answer\n")
	for row := range 3 {
		must(t, w.Intent(row, 1))
		must(t, w.Submitted(row, 1, "op"+string(rune('a'+row)), t0))
		must(t, w.Result(row, false, []byte("line\n")))
	}
	must(t, w.Result(3, true, []byte("bad row\n")))
	must(t, w.Intent(4, 1))
	must(t, w.Submitted(4, 1, "ope", t0))
	must(t, w.Close())
	return ckpt, results
}

func TestResultsRepair(t *testing.T) {
	t.Parallel()
	const full = "id,answer\nline\nline\nline\nbad row\n"
	sub := func(op string) store.Row {
		return store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: op, SubmittedAt: t0.UnixMilli()}
	}
	res := func(op string) store.Row {
		r := sub(op)
		r.Phase = store.PhaseResolved
		return r
	}
	failed := store.Row{Phase: store.PhaseResolved, Failed: true}
	tests := []struct {
		name     string
		results  *string // nil: delete the file
		want     []store.Row
		wantFile string
		problem  string
	}{
		{"intact", ptr(full), []store.Row{res("opa"), res("opb"), res("opc"), failed, sub("ope"), {}}, full, ""},
		{"unjournaled line", ptr(full + "line\npartial li"), []store.Row{res("opa"), res("opb"), res("opc"), failed, sub("ope"), {}}, full, "removed 15 bytes"},
		{"cut mid line", ptr(full[:22]), []store.Row{res("opa"), res("opb"), sub("opc"), {}, sub("ope"), {}}, full[:20], "2 resolved rows"},
		{"cut at line end", ptr(full[:25]), []store.Row{res("opa"), res("opb"), res("opc"), {}, sub("ope"), {}}, full[:25], "shorter"},
		{"only preamble", ptr(full[:10]), []store.Row{sub("opa"), sub("opb"), sub("opc"), {}, sub("ope"), {}}, full[:10], "4 resolved rows"},
		{"preamble cut", ptr("id,"), []store.Row{sub("opa"), sub("opb"), sub("opc"), {}, sub("ope"), {}}, full[:10], "shorter"},
		{"empty", ptr(""), []store.Row{sub("opa"), sub("opb"), sub("opc"), {}, sub("ope"), {}}, full[:10], "shorter"},
		{"deleted", nil, []store.Row{sub("opa"), sub("opb"), sub("opc"), {}, sub("ope"), {}}, full[:10], "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ckpt, results := resolvedRun(t)
			if got := readFile(t, results); got != full {
				t.Fatalf("results = %q", got)
			}
			if tt.results == nil {
				must(t, os.Remove(results))
			} else {
				must(t, os.WriteFile(results, []byte(*tt.results), 0o600))
			}
			w, st, err := store.Open(ckpt)
			must(t, err)
			diffRows(t, store.Rows(st), tt.want)
			if got := readFile(t, results); got != tt.wantFile {
				t.Errorf("results = %q, want %q", got, tt.wantFile)
			}
			if st.ResultsEnd != int64(len(tt.wantFile)) {
				t.Errorf("ResultsEnd = %d, want %d", st.ResultsEnd, len(tt.wantFile))
			}
			if tt.problem == "" && len(st.Problems) != 0 || tt.problem != "" && (len(st.Problems) != 1 || !strings.Contains(st.Problems[0], tt.problem)) {
				t.Errorf("problems %q, want one containing %q", st.Problems, tt.problem)
			}
			// The repair is journaled: new results appended beyond the old
			// ends must not resurrect the moved rows.
			must(t, w.Result(5, false, []byte("a much longer line than before to pass the old ends\n")))
			must(t, w.Close())
			st = load(t, ckpt)
			want := append(tt.want[:5:5], store.Row{Phase: store.PhaseResolved})
			diffRows(t, store.Rows(st), want)
			if fi, err := os.Stat(results); err != nil || fi.Size() != st.ResultsEnd || fi.Mode().Perm() != 0o600 {
				t.Errorf("results file %v %v, ResultsEnd %d", fi, err, st.ResultsEnd)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestLockAndExists(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 2, "")
	for _, f := range []func() error{
		func() error { _, _, err := store.Open(ckpt); return err },
		func() error { _, err := store.Create(ckpt, header(2, results), nil, true); return err },
	} {
		err := f()
		if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "another batchgpt process is using "+ckpt) {
			t.Errorf("got %v, want ErrLocked naming the checkpoint", err)
		}
	}
	if _, err := store.Load(ckpt); err != nil {
		t.Errorf("Load while locked: %v", err)
	}
	must(t, w.Close())

	_, err := store.Create(ckpt, header(2, results), nil, false)
	if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "resume") {
		t.Errorf("Create over a checkpoint: %v", err)
	}
	other := filepath.Join(filepath.Dir(ckpt), "other.ckpt")
	_, err = store.Create(other, header(2, results), nil, false)
	if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), results) {
		t.Errorf("Create over a results file: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused Create left a checkpoint: %v", err)
	}

	// The lock is free again, and force starts over.
	w2, _, err := store.Open(ckpt)
	must(t, err)
	must(t, w2.Intent(1, 1))
	must(t, w2.Close())
	must(t, os.Chmod(results, 0o644))
	must(t, os.WriteFile(results, []byte("old stuff\n"), 0o644))
	w3, err := store.Create(ckpt, header(3, results), []byte("p\n"), true)
	must(t, err)
	must(t, w3.Close())
	st := load(t, ckpt)
	if st.Len() != 3 || st.Row(1).Phase != store.PhaseNew || readFile(t, results) != "p\n" {
		t.Errorf("force did not start over: %+v %q", store.Rows(st), readFile(t, results))
	}
	for _, p := range []string{ckpt, results, ckpt + ".lock"} {
		fi, err := os.Stat(p)
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	ents, err := os.ReadDir(filepath.Dir(ckpt))
	must(t, err)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "c")
	bad := []store.Header{
		{Rows: -1, Results: filepath.Join(dir, "r")},
		{Rows: store.MaxRows + 1, Results: filepath.Join(dir, "r")},
		{Rows: 1},
		{Version: 1, Rows: 1, Results: filepath.Join(dir, "r")}, // read, never written
		{Version: store.BatchVersion + 1, Rows: 1, Results: filepath.Join(dir, "r")},
		{Rows: 1, Results: filepath.Join(dir, "r"), Settings: []byte("{not json")},
	}
	for _, h := range bad {
		if w, err := store.Create(ckpt, h, nil, false); err == nil {
			w.Close()
			t.Errorf("Create(%+v) succeeded", h)
		}
	}
	if _, err := os.Stat(ckpt); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Create left a checkpoint")
	}
}

func TestWriterValidation(t *testing.T) {
	t.Parallel()
	w, _, _ := newRun(t, 3, "")
	for name, err := range map[string]error{
		"row -1":       w.Intent(-1, 1),
		"row 3":        w.Intent(3, 1),
		"attempt 0":    w.Intent(0, 0),
		"attempt big":  w.Submitted(0, 70000, "op", t0),
		"empty op":     w.Submitted(0, 1, "", t0),
		"op space":     w.Submitted(0, 1, "a b", t0),
		"op newline":   w.Submitted(0, 1, "a\nb", t0),
		"no newline":   w.Result(0, false, []byte("x")),
		"empty line":   w.Result(0, false, nil),
		"reopen row 9": w.Reopen(9),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Bad calls are not sticky.
	must(t, w.Intent(2, 1))
	must(t, w.Close())
	must(t, w.Close()) // idempotent
	for _, err := range []error{w.Name(0, named("x")), w.Intent(0, 1), w.Submitted(0, 1, "x", t0), w.Result(0, false, []byte("\n")), w.Reopen(0), w.Flush()} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
	}
}

func TestCompact(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 5, "p\n")
	for round := 1; round <= 3; round++ {
		for row := range 4 {
			must(t, w.Intent(row, round))
			must(t, w.Submitted(row, round, "op", time.UnixMilli(int64(round))))
		}
	}
	must(t, w.Result(0, false, []byte("r\n")))
	must(t, w.Result(1, true, []byte("r\n")))
	must(t, w.Reopen(1))
	must(t, w.Intent(2, 4))
	must(t, w.Flush())
	before := load(t, ckpt)
	size := len(readFile(t, ckpt))
	must(t, w.Compact())
	after := load(t, ckpt)
	diffRows(t, store.Rows(after), store.Rows(before))
	if after.ResultsEnd != before.ResultsEnd || len(readFile(t, ckpt)) >= size {
		t.Errorf("ResultsEnd %d want %d; size %d, was %d", after.ResultsEnd, before.ResultsEnd, len(readFile(t, ckpt)), size)
	}
	// The writer appends to the new file.
	must(t, w.Result(3, false, []byte("r3\n")))
	must(t, w.Close())
	w2, st, err := store.Open(ckpt)
	must(t, err)
	defer w2.Close()
	want := store.Rows(before)
	want[3].Phase = store.PhaseResolved
	diffRows(t, store.Rows(st), want)
	if len(st.Problems) != 0 || st.ResultsEnd != int64(len("p\nr\nr\nr3\n")) {
		t.Errorf("problems %q ResultsEnd %d", st.Problems, st.ResultsEnd)
	}
}
