package store_test

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// SetSettings changes the header's settings and nothing else: every record after it is kept as it
// was, the N records of resolved rows too (a snapshot would drop them), and the writer goes on
// appending to the new file.
func TestSetSettings(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 4, "id,answer\n")
	other := store.Named{ID: "b", Key: [32]byte{2}, Model: "gpt://b1gexample/yandexgpt/latest"}
	must(t, w.Name(0, named("a")))
	must(t, w.Intent(0, 1))
	must(t, w.Submitted(0, 1, "op0", t0))
	must(t, w.Result(0, false, []byte("a,answer\n")))
	must(t, w.Name(1, other))
	must(t, w.Intent(1, 1))
	must(t, w.Doubt(1))
	must(t, w.Flush())
	before, err := os.ReadFile(ckpt)
	must(t, err)

	settings := json.RawMessage(`{"model":"yandexgpt-lite","limits":{"max_cost":2.5}}`)
	must(t, w.SetSettings(settings))
	must(t, w.Intent(2, 1)) // appended to the rewritten journal
	must(t, w.Close())

	after, err := os.ReadFile(ckpt)
	must(t, err)
	_, restBefore, _ := bytes.Cut(before, []byte("\n"))
	_, restAfter, _ := bytes.Cut(after, []byte("\n"))
	if !bytes.HasPrefix(restAfter, restBefore) {
		t.Errorf("records after the header changed:\nbefore %q\nafter  %q", restBefore, restAfter)
	}
	st, err := store.Load(ckpt)
	must(t, err)
	if string(st.Header.Settings) != string(settings) {
		t.Errorf("settings %s, want %s", st.Header.Settings, settings)
	}
	if st.Header.Version != store.Version || st.Header.Rows != 4 || st.Header.Results == "" {
		t.Errorf("header changed beyond its settings: %+v", st.Header)
	}
	if st.Row(2).Phase != store.PhaseInFlight || st.Row(0).Phase != store.PhaseResolved || st.Doubts != 1 {
		t.Errorf("rows after the rewrite: %+v, doubts %d", store.Rows(st), st.Doubts)
	}
	// The model of the resolved row 0 is still known.
	if got, want := st.Models(), []string{testModel, other.Model}; !slices.Equal(got, want) {
		t.Errorf("Models() = %q, want %q", got, want)
	}
	if len(st.Problems) > 0 {
		t.Errorf("problems: %q", st.Problems)
	}

	w2, _, err := store.Open(ckpt) // the results file is where the journal says
	must(t, err)
	must(t, w2.SetSettings(json.RawMessage(`{}`)))
	must(t, w2.Close())
	if err := (&store.Writer{}).SetSettings(json.RawMessage(`{`)); err == nil {
		t.Error("SetSettings accepted invalid JSON")
	}
}
