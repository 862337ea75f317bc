package store_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// The input's chunk table lives in the header: every rewrite of the journal keeps it, and a
// header without one writes none.
func TestHeaderKeepsInputChunks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ckpt, results := filepath.Join(dir, "run.ckpt"), filepath.Join(dir, "results.csv")
	h := header(2, results)
	h.InputChunks = []store.InputChunk{
		{Row: 0, Line: 1, Offset: 0, SHA256: "aa"},
		{Row: 0, Line: 2, Offset: 10, SHA256: "bb"},
		{Row: 1, Line: 3, Offset: 20, SHA256: "cc"},
	}
	w, err := store.Create(ckpt, h, []byte("id,answer\n"), false)
	must(t, err)
	check := func(when string) {
		t.Helper()
		st, err := store.Load(ckpt)
		must(t, err)
		if !reflect.DeepEqual(st.Header.InputChunks, h.InputChunks) {
			t.Fatalf("%s: chunks %+v, want %+v", when, st.Header.InputChunks, h.InputChunks)
		}
	}
	must(t, w.Flush())
	check("created")
	must(t, w.SetSettings(json.RawMessage(`{"limits":{"max_cost":1}}`)))
	check("settings replaced")
	must(t, w.Result(0, false, []byte("a,x\n")))
	must(t, w.Result(1, false, []byte("b,y\n")))
	must(t, w.Finalize(true))
	must(t, w.Close())
	check("finalized")

	_, plain, _ := newRun(t, 1, "")
	data, err := os.ReadFile(plain)
	must(t, err)
	if first, _, _ := bytes.Cut(data, []byte("\n")); bytes.Contains(first, []byte("input_chunks")) {
		t.Fatalf("a header without chunks: %s", first)
	}
}
