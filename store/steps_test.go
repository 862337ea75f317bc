package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// newBatchRun creates a checkpoint of the batch backend (store.BatchVersion), with G records.
func newBatchRun(t *testing.T, rows int) (w *store.Writer, ckpt string) {
	t.Helper()
	dir := t.TempDir()
	ckpt = filepath.Join(dir, "run.ckpt")
	h := header(rows, filepath.Join(dir, "results.jsonl"))
	h.Version = store.BatchVersion
	w, err := store.Create(ckpt, h, nil, false, store.Groups([]byte("the groups")))
	must(t, err)
	t.Cleanup(func() { w.Close() })
	return w, ckpt
}

func stepsOf(st *store.State) []string {
	var out []string
	for _, s := range st.Steps {
		out = append(out, string(s))
	}
	return out
}

// TestStepsRoundTrip: B records come back in order, compacted onto one line each, and are
// durable when Step returns (read by another reader while the writer is open).
func TestStepsRoundTrip(t *testing.T) {
	t.Parallel()
	w, ckpt := newBatchRun(t, 3)
	steps := []string{`{"step":"creating","labels":{"batchgpt_run":"r1"}}`, "{\n \"step\": \"created\",\n \"id\": \"fds1\"\n}", `{"text":"a\nb"}`}
	for _, s := range steps {
		must(t, w.Step([]byte(s)))
	}
	must(t, w.Result(1, false, []byte("one\n")))
	must(t, w.Step([]byte(`{"step":"after"}`)))
	want := []string{`{"step":"creating","labels":{"batchgpt_run":"r1"}}`, `{"step":"created","id":"fds1"}`, `{"text":"a\nb"}`, `{"step":"after"}`}
	st := load(t, ckpt) // the writer is still open: Step returned once durable
	if got := stepsOf(st); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("steps %q, want %q", got, want)
	}
	if st.Header.Version != store.BatchVersion || st.Phase(1) != store.PhaseResolved {
		t.Fatalf("version %d, row 1 %v", st.Header.Version, st.Phase(1))
	}
	if err := w.Step([]byte(`{"torn"`)); err == nil {
		t.Fatal("Step took invalid JSON")
	}
}

// TestStepNeedsBatchVersion: an asynchronous (store.Version) checkpoint refuses B records, so
// that it stays readable by the batchgpt versions that read that version.
func TestStepNeedsBatchVersion(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 2, "")
	if err := w.Step([]byte(`{}`)); err == nil {
		t.Fatal("a version-3 checkpoint took a batch step")
	}
	must(t, w.Close())
	if v := load(t, ckpt).Header.Version; v != store.Version {
		t.Fatalf("async checkpoint is version %d, want %d", v, store.Version)
	}
}

// TestStepsTornTail: a B record cut short by a crash is the end of the log; the ones before it
// stay.
func TestStepsTornTail(t *testing.T) {
	t.Parallel()
	w, ckpt := newBatchRun(t, 2)
	must(t, w.Step([]byte(`{"n":1}`)))
	must(t, w.Step([]byte(`{"n":2}`)))
	must(t, w.Close())
	data, err := os.ReadFile(ckpt)
	must(t, err)
	last := strings.LastIndex(strings.TrimSuffix(string(data), "\n"), "\n") + 1
	for cut := last + 1; cut < len(data); cut++ {
		must(t, os.WriteFile(ckpt, data[:cut], 0o600))
		st := load(t, ckpt)
		if got := stepsOf(st); len(got) != 1 || got[0] != `{"n":1}` || st.DroppedBytes != int64(cut-last) {
			t.Fatalf("cut at %d: steps %q, dropped %d", cut, got, st.DroppedBytes)
		}
	}
	// Open truncates the torn record, and the next step follows the good one.
	must(t, os.WriteFile(ckpt, data[:len(data)-3], 0o600))
	w2, st, err := store.Open(ckpt)
	must(t, err)
	if len(st.Steps) != 1 {
		t.Fatalf("open: %d steps", len(st.Steps))
	}
	must(t, w2.Step([]byte(`{"n":3}`)))
	must(t, w2.Close())
	if got := stepsOf(load(t, ckpt)); strings.Join(got, ",") != `{"n":1},{"n":3}` {
		t.Fatalf("after reopen: %q", got)
	}
}

// TestStepsSurviveRewrites: compaction, Finalize and SetSettings rewrite the journal; each keeps
// every step in order and the version that makes an older batchgpt refuse the checkpoint.
func TestStepsSurviveRewrites(t *testing.T) {
	t.Parallel()
	w, ckpt := newBatchRun(t, 40)
	var want []string
	for i := range 40 {
		if i%7 == 0 {
			s := fmt.Sprintf(`{"i":%d}`, i)
			must(t, w.Step([]byte(s)))
			want = append(want, s)
		}
		must(t, w.Result(i, i%5 == 0, []byte(fmt.Sprintf("line %d\n", i))))
	}
	check := func(what string) {
		t.Helper()
		st := load(t, ckpt)
		if got := stepsOf(st); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("after %s: steps %q, want %q", what, got, want)
		}
		if st.Header.Version != store.BatchVersion || string(st.Groups()) != "the groups" {
			t.Fatalf("after %s: version %d, groups %q", what, st.Header.Version, st.Groups())
		}
		if c := st.Counts(); c.Succeeded+c.Failed != 40 {
			t.Fatalf("after %s: counts %+v", what, c)
		}
	}
	must(t, w.Compact())
	check("compaction")
	must(t, w.SetSettings(json.RawMessage(`{"backend":"batch"}`)))
	check("SetSettings")
	must(t, w.Finalize(true))
	check("Finalize")
	must(t, w.Step([]byte(`{"i":"last"}`)))
	want = append(want, `{"i":"last"}`)
	must(t, w.Close())
	check("close")
}

// TestVersionBeyondBatch: a version this batchgpt does not know is refused, as a reader of
// store.Version refuses store.BatchVersion.
func TestVersionBeyondBatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "run.ckpt")
	h := header(1, filepath.Join(dir, "r.jsonl"))
	h.Version = store.BatchVersion + 1
	must(t, os.WriteFile(ckpt, store.HeaderRecord(h, nil), 0o600))
	if _, err := store.Load(ckpt); !errors.Is(err, store.ErrVersion) {
		t.Fatalf("version %d: %v", h.Version, err)
	}
}
