package store_test

import (
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// TestDoubtClosesTry: a D record counts a possible duplicate and closes the try it counts (in
// flight, or an operation given up on), so a crash right after it leaves the row new: the next
// process sends it again without counting the same try a second time. Compaction keeps that.
func TestDoubtClosesTry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		steps func(w *store.Writer) error
		want  store.Row
	}{
		{"in flight, counted, crash before the next intent", func(w *store.Writer) error {
			return firstErr(w.Intent(0, 1), w.Doubt(0))
		}, store.Row{Attempt: 1, Doubts: 1}},
		{"in flight, counted, sent again", func(w *store.Writer) error {
			return firstErr(w.Intent(0, 1), w.Doubt(0), w.Intent(0, 2))
		}, store.Row{Phase: store.PhaseInFlight, Attempt: 2, Doubts: 1}},
		{"two doubtful tries of one attempt, then an operation", func(w *store.Writer) error {
			return firstErr(w.Intent(0, 1), w.Doubt(0), w.Intent(0, 1), w.Doubt(0), w.Intent(0, 1), w.Submitted(0, 1, "op", t0))
		}, store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op", SubmittedAt: t0.UnixMilli(), Doubts: 2}},
		{"operation given up on (vanished), crash before it is sent again", func(w *store.Writer) error {
			return firstErr(w.Intent(0, 1), w.Submitted(0, 1, "op", t0), w.Doubt(0))
		}, store.Row{Attempt: 1, Doubts: 1}},
		{"resolved: only counted", func(w *store.Writer) error {
			return firstErr(w.Intent(0, 1), w.Result(0, true, []byte("r\n")), w.Doubt(0))
		}, store.Row{Phase: store.PhaseResolved, Failed: true, Attempt: 1, Doubts: 1}},
		{"new: only counted", func(w *store.Writer) error {
			return w.Doubt(0)
		}, store.Row{Doubts: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, ckpt, _ := newRun(t, 1, "")
			must(t, tc.steps(w))
			must(t, w.Flush())
			st := load(t, ckpt)
			diffRows(t, store.Rows(st), []store.Row{tc.want})
			if st.Doubts != int(tc.want.Doubts) {
				t.Errorf("Doubts = %d, want %d", st.Doubts, tc.want.Doubts)
			}
			must(t, w.Compact())
			diffRows(t, store.Rows(load(t, ckpt)), []store.Row{tc.want})
		})
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
