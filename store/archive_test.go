package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// TestArchive moves a run to dated names: the archived checkpoint names the archived results
// file and keeps every row and open row's name; the old names are free; a held lock refuses;
// EachNamed returns the names of resolved rows too.
func TestArchive(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 3, "id,answer\n")
	must(t, w.Name(0, named("first")))
	must(t, w.Intent(0, 1))
	must(t, w.Submitted(0, 1, "op0", t0))
	must(t, w.Result(0, false, []byte("0,done\n")))
	must(t, w.Name(1, named("second")))
	must(t, w.Intent(1, 1))
	must(t, w.Submitted(1, 1, "op1", t0))
	must(t, w.Flush())

	dir := filepath.Dir(ckpt)
	newCkpt, newResults := filepath.Join(dir, "run.2025-01-02.ckpt"), filepath.Join(dir, "results.2025-01-02.csv")
	if err := store.Archive(ckpt, newCkpt, newResults); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("archive of a checkpoint in use: %v, want ErrLocked", err)
	}
	must(t, w.Close())
	// The journal names resolved rows too; a snapshot keeps only the open rows' names.
	names := map[int]store.Named{}
	err := store.EachNamed(ckpt, func(row int, n store.Named) error { names[row] = n; return nil })
	if err != nil || names[0].ID != "first" || names[1].ID != "second" || len(names) != 2 {
		t.Fatalf("EachNamed = %+v, %v", names, err)
	}
	must(t, store.Archive(ckpt, newCkpt, newResults))
	for _, p := range []string{ckpt, results} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there after Archive: %v", p, err)
		}
	}
	st := load(t, newCkpt)
	if st.Header.Results != newResults || st.Row(0).Phase != store.PhaseResolved || st.Row(1).OpID != "op1" ||
		st.Named[1].ID != "second" || len(st.Problems) > 0 {
		t.Fatalf("archived state: header %+v rows %+v named %+v problems %q", st.Header, store.Rows(st), st.Named, st.Problems)
	}
	if got := readFile(t, newResults); got != "id,answer\n0,done\n" {
		t.Fatalf("archived results %q", got)
	}
	// The archived run is a checkpoint like any other: it opens without repairs.
	w2, st2, err := store.Open(newCkpt)
	if err != nil || len(st2.Problems) > 0 {
		t.Fatalf("open archived: %v %q", err, st2.Problems)
	}
	must(t, w2.Close())
}
