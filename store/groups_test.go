package store_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// TestGroupsSurvive: the blob given to Create comes back from every load, whatever rewrote the
// journal since: a compaction (the writer's own, or Compact), a settings change, a Finalize, an
// Open after a torn tail. A blob larger than one record is cut into several.
func TestGroupsSurvive(t *testing.T) {
	t.Chdir(t.TempDir())
	blob := make([]byte, 60<<10) // two records
	r := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	check := func(what string) {
		t.Helper()
		st := load(t, "run.ckpt")
		if !bytes.Equal(st.Groups(), blob) {
			t.Fatalf("after %s: Groups() has %d bytes, want the %d given to Create", what, len(st.Groups()), len(blob))
		}
	}
	const rows = 8000 // the journal grows past twice its start (the groups) and is compacted
	w, err := store.Create("run.ckpt", header(rows, "results.csv"), []byte("id,answer\n"), false,
		store.Groups(blob), store.CompactFrom(4<<10))
	must(t, err)
	if n := bytes.Count([]byte(readFile(t, "run.ckpt")), []byte("\nG ")); n != 2 {
		t.Errorf("%d G records for %d bytes, want 2", n, len(blob))
	}
	check("Create")
	for i := range rows / 2 { // enough to compact a few times on the way
		must(t, w.Intent(i, 1))
		must(t, w.Result(i, false, []byte("x,answer\n")))
	}
	must(t, w.Flush())
	if !bytes.Contains([]byte(readFile(t, "run.ckpt")), []byte("\nL ")) {
		t.Fatal("the journal was never compacted (no L record)")
	}
	check("automatic compactions")
	must(t, w.Compact())
	check("Compact")
	must(t, w.SetSettings([]byte(`{"model":"other"}`)))
	check("SetSettings")
	must(t, w.Close())

	f, err := os.OpenFile("run.ckpt", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("I 7999 1 torn")
	must(t, err)
	must(t, f.Close())
	w, st, err := store.Open("run.ckpt")
	must(t, err)
	if !bytes.Equal(st.Groups(), blob) {
		t.Fatal("Open lost the groups")
	}
	for i := rows / 2; i < rows; i++ {
		must(t, w.Intent(i, 1))
		must(t, w.Result(i, false, []byte("x,answer\n")))
	}
	must(t, w.Finalize(true))
	must(t, w.Close())
	check("Finalize")
}
