package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// runOps drives w through a run of rows rows as the job does: names, intents, operation ids,
// results, with doubts, resubmissions, reopened rows (superseded lines) and rows left open. The
// same seed gives the same calls.
func runOps(t *testing.T, w *store.Writer, rows int, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 1))
	at := t0
	for row := range rows {
		at = at.Add(time.Duration(rnd.IntN(400)) * time.Millisecond)
		must(t, w.Name(row, named(fmt.Sprintf("row %d", row))))
		attempt := 1
		must(t, w.Intent(row, attempt))
		if rnd.IntN(10) == 0 { // a doubtful try, then another
			must(t, w.Doubt(row))
			attempt++
			must(t, w.Intent(row, attempt))
		}
		if rnd.IntN(50) == 0 {
			continue // left in flight
		}
		must(t, w.Submitted(row, attempt, fmt.Sprintf("d7q%017d", row), at))
		if rnd.IntN(50) == 0 {
			continue // left pending
		}
		line := fmt.Sprintf("%d,%s\n", row, strings.Repeat("x", rnd.IntN(300)))
		must(t, w.Result(row, rnd.IntN(7) == 0, []byte(line)))
		if rnd.IntN(20) == 0 { // reopened and answered again: its first line is superseded
			must(t, w.Reopen(row))
			must(t, w.Result(row, false, []byte(fmt.Sprintf("%d,again\n", row))))
		}
	}
	must(t, w.Flush())
}

// twoRuns journals the same operations (runOps with seed) twice: with compactions from
// compactMin bytes on, at least minCompactions of them, and without any. It returns both
// checkpoints and results files, closed.
func twoRuns(t *testing.T, rows int, compactMin int64, seed uint64, minCompactions int) (ckptA, resA, ckptB, resB string) {
	t.Helper()
	compacting, ckptA, resA := newRunWith(t, store.Hooks{CompactMin: compactMin}, rows, "id,answer\n")
	plain, ckptB, resB := newRunWith(t, store.Hooks{CompactMin: 1 << 40}, rows, "id,answer\n")
	runOps(t, compacting, rows, seed)
	runOps(t, plain, rows, seed)
	must(t, compacting.Close())
	must(t, plain.Close())
	if n := compacting.Compactions(); n < minCompactions {
		t.Fatalf("%d compactions, want %d or more", n, minCompactions)
	}
	if n := plain.Compactions(); n != 0 {
		t.Fatalf("%d compactions without a threshold", n)
	}
	return ckptA, resA, ckptB, resB
}

// TestAutoCompaction: a writer that compacts its journal as it grows ends with the state of one
// that never does, in a fraction of the journal.
func TestAutoCompaction(t *testing.T) {
	t.Parallel()
	const rows = 1500
	ckptA, resA, ckptB, resB := twoRuns(t, rows, 8<<10, 7, 3)

	a, b := load(t, ckptA), load(t, ckptB)
	sameState(t, a, b)
	if readFile(t, resA) != readFile(t, resB) {
		t.Error("results files differ")
	}
	ja, jb := readFile(t, ckptA), readFile(t, ckptB)
	if !strings.Contains(ja, "\nL ") || a.Header.Version != store.Version {
		t.Errorf("no L record in the compacted journal (version %d)", a.Header.Version)
	}
	// A snapshot is a fraction of the plain journal, and the compacted journal is a snapshot and
	// what was appended since, less than the snapshot again (when the last compaction fell
	// depends on the sizes of those before it).
	var snap bytes.Buffer
	must(t, store.WriteSnapshot(ckptA, &snap))
	if snap.Len()*3 > len(jb) || len(ja)*2 > len(jb) {
		t.Errorf("compacted journal %d bytes, its snapshot %d, plain %d", len(ja), snap.Len(), len(jb))
	}
	t.Logf("journal: %d bytes compacted, %d plain, a snapshot %d (%.1f vs %.1f vs %.1f B/row)", len(ja), len(jb),
		snap.Len(), float64(len(ja))/rows, float64(len(jb))/rows, float64(snap.Len())/rows)

	// A compacted journal opens, finalizes and reopens like the plain one.
	for _, ckpt := range []string{ckptA, ckptB} {
		w, _, err := store.Open(ckpt)
		must(t, err)
		if err := w.Finalize(true); err == nil || !strings.Contains(err.Error(), "not") {
			t.Fatalf("Finalize with open rows: %v", err)
		}
		must(t, w.Close())
	}
}

// sameState fails unless a and b replay to the same rows, names, results end, doubts and
// submissions of the last hour.
func sameState(t *testing.T, a, b *store.State) {
	t.Helper()
	sameAsFull(t, a, b)
	if !slices.Equal(a.LineEnds(), b.LineEnds()) {
		t.Error("line ends differ")
	}
	if len(a.SubmittedSince(t0.Add(-time.Hour))) == 0 {
		t.Error("no submission in the last hour")
	}
	if len(a.Problems) > 0 {
		t.Errorf("problems %q", a.Problems)
	}
}

// sameAsFull checks that state a (one that Open loaded lean, say) says what b (the full load of
// the same journal) says, lines aside.
func sameAsFull(t *testing.T, a, b *store.State) {
	t.Helper()
	diffRows(t, store.Rows(a), store.Rows(b))
	if !maps.Equal(a.Named, b.Named) {
		t.Errorf("names differ: %d vs %d", len(a.Named), len(b.Named))
	}
	if a.ResultsEnd != b.ResultsEnd || a.Doubts != b.Doubts || a.SupersededBytes() != b.SupersededBytes() {
		t.Errorf("ResultsEnd %d/%d, Doubts %d/%d, superseded %d/%d", a.ResultsEnd, b.ResultsEnd,
			a.Doubts, b.Doubts, a.SupersededBytes(), b.SupersededBytes())
	}
	since := t0.Add(-time.Hour)
	if sa, sb := a.SubmittedSince(since), b.SubmittedSince(since); !slices.Equal(sa, sb) {
		t.Errorf("submissions per second differ: %d vs %d seconds", len(sa), len(sb))
	}
	if !slices.Equal(a.Problems, b.Problems) || a.DroppedBytes != b.DroppedBytes {
		t.Errorf("problems %q (%d bytes dropped) vs %q (%d)", a.Problems, a.DroppedBytes, b.Problems, b.DroppedBytes)
	}
}

// TestCompactedRepairKeepsOperations: rows resolved in a snapshot's L records whose result lines
// are lost go back to their operations, to be fetched again rather than submitted and billed
// again.
func TestCompactedRepairKeepsOperations(t *testing.T) {
	t.Parallel()
	const rows = 300
	w, ckpt, results := newRunWith(t, store.Hooks{CompactMin: 1 << 40}, rows, "id,answer\n")
	for row := range rows {
		must(t, w.Intent(row, 1))
		must(t, w.Submitted(row, 1, fmt.Sprintf("op%d", row), t0.Add(time.Duration(row)*time.Second)))
		must(t, w.Result(row, false, []byte(fmt.Sprintf("%d,answer\n", row))))
	}
	must(t, w.Compact())
	must(t, w.Close())
	if j := readFile(t, ckpt); strings.Contains(j, "\nS ") || !strings.Contains(j, "\nL ") {
		t.Fatalf("the snapshot should hold L records only:\n%.300s", j)
	}
	data := []byte(readFile(t, results))
	cut := bytes.Index(data, []byte("\n150,")) + 1
	must(t, os.WriteFile(results, data[:cut], 0o600))

	w, st, err := store.Open(ckpt)
	must(t, err)
	defer w.Close()
	for row := range rows {
		r := st.Row(row)
		if row < 150 {
			if r.Phase != store.PhaseResolved {
				t.Errorf("row %d: %+v, want resolved", row, r)
			}
			continue
		}
		want := store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: fmt.Sprintf("op%d", row),
			SubmittedAt: t0.Add(time.Duration(row) * time.Second).UnixMilli()}
		if r != want {
			t.Errorf("row %d: %+v, want %+v", row, r, want)
		}
	}
}

// TestCompactionKeepsTheHourWindow: the submissions of the last hour survive a snapshot, counted
// per second, with those made after it.
func TestCompactionKeepsTheHourWindow(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 5, "id,answer\n")
	base := time.Unix(1_700_000_000, 0)
	for row, off := range []time.Duration{0, 200 * time.Millisecond, 1500 * time.Millisecond, 2 * time.Hour} {
		must(t, w.Intent(row, 1))
		must(t, w.Submitted(row, 1, fmt.Sprint("op", row), base.Add(off)))
		must(t, w.Result(row, false, []byte(fmt.Sprintf("%d,a\n", row))))
	}
	must(t, w.Compact())
	must(t, w.Intent(4, 1))
	must(t, w.Submitted(4, 1, "op4", base.Add(2*time.Hour+100*time.Millisecond)))
	must(t, w.Close())
	st := load(t, ckpt)
	got := st.SubmittedSince(base.Add(-time.Minute))
	// The first three are more than an hour before the latest: a snapshot keeps only the last
	// hour before its latest submission.
	want := []store.SecondCount{{Second: 1_700_007_200, N: 2}}
	if !slices.Equal(got, want) {
		t.Errorf("SubmittedSince: %+v, want %+v", got, want)
	}
}

// TestLeanSnapshot: the snapshot a compaction writes from its lean state (no row's line kept) is
// the one written from the full state, byte for byte, for the journals of every version, a run's
// journal with superseded lines and open rows, and that journal compacted more than once and
// appended to since (L records after L records).
func TestLeanSnapshot(t *testing.T) {
	t.Parallel()
	const rows = 600
	ckptA, _, ckptB, _ := twoRuns(t, rows, 4<<10, 11, 2)
	goldens, err := filepath.Glob("testdata/journal/*.ckpt")
	must(t, err)
	for _, path := range append(goldens, ckptA, ckptB) {
		full, lean, err := store.Snapshots([]byte(readFile(t, path)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !bytes.Equal(full, lean) {
			t.Errorf("%s: the lean snapshot differs (%d bytes, full %d)", path, len(lean), len(full))
		}
		if !bytes.Contains(full, []byte("\nL ")) && strings.Contains(readFile(t, path), "\nR ") {
			t.Errorf("%s: no L record in its snapshot", path)
		}
	}
}

// A row answered more often than a byte counts (its resolutions go on in a map) is written once,
// at its last answer, by the lean snapshot as by the full one; the rows beside it are unchanged.
func TestSnapshotOfARowAnsweredOften(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRunWith(t, store.Hooks{CompactMin: 1 << 40}, 3, "id,answer\n")
	for n := range 300 {
		for _, row := range []int{0, 1} {
			if row == 1 && n > 0 {
				continue // answered once
			}
			must(t, w.Intent(row, 1))
			must(t, w.Submitted(row, 1, fmt.Sprintf("d7q%05d%012d", n, row), t0))
			must(t, w.Result(row, false, []byte(fmt.Sprintf("%d,answer %d\n", row, n))))
			if row == 0 && n < 299 {
				must(t, w.Retry(row))
			}
		}
	}
	must(t, w.Close())
	full, lean, err := store.Snapshots([]byte(readFile(t, ckpt)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(full, lean) {
		t.Fatalf("the lean snapshot differs:\n%s\nfull:\n%s", lean, full)
	}
	before, err := store.LoadReader(strings.NewReader(readFile(t, ckpt)))
	must(t, err)
	after, err := store.LoadReader(bytes.NewReader(full))
	must(t, err)
	for row := range 3 {
		s0, e0 := store.Span(before, row)
		s1, e1 := store.Span(after, row)
		if s0 != s1 || e0 != e1 || store.Rows(before)[row] != store.Rows(after)[row] {
			t.Errorf("row %d: [%d, %d) %+v in the journal, [%d, %d) %+v in its snapshot", row, s0, e0, store.Rows(before)[row], s1, e1, store.Rows(after)[row])
		}
	}
	if s, e := store.Span(after, 0); e-s != int64(len("0,answer 299\n")) {
		t.Errorf("row 0's line is [%d, %d), not its last answer's", s, e)
	}
}

// Open loads a journal lean, without its rows' lines, when it needs none of them: a run stopped
// and resumed as usual, compacted or not, with rows in flight, pending and in doubt; the state is
// the full load's, lines aside. A row reopened or answered again, an interrupted finalize or a
// results file shorter than the journal says makes it load the lines.
func TestOpenLoadsLean(t *testing.T) {
	t.Parallel()
	const rows = 400
	for _, tc := range []struct {
		name     string
		compact  int64
		change   func(t *testing.T, w *store.Writer, results string)
		wantLean bool
	}{
		{"a run stopped", 1 << 40, nil, true},
		{"a run compacted", 4 << 10, nil, true},
		{"results file with bytes past the journal", 1 << 40, func(t *testing.T, _ *store.Writer, results string) {
			appendFile(t, results, "0,a line never journaled\n")
		}, true},
		{"a row answered again", 1 << 40, func(t *testing.T, w *store.Writer, _ string) {
			must(t, w.Reopen(3))
			must(t, w.Result(3, false, []byte("3,again\n")))
		}, false},
		{"a failed row retried", 1 << 40, func(t *testing.T, w *store.Writer, _ string) {
			must(t, w.Retry(5))
		}, false},
		{"results file cut short", 1 << 40, func(t *testing.T, _ *store.Writer, results string) {
			fi, err := os.Stat(results)
			must(t, err)
			must(t, os.Truncate(results, fi.Size()-10))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w, ckpt, results := newRunWith(t, store.Hooks{CompactMin: tc.compact}, rows, "id,answer\n")
			for row := range rows {
				switch {
				case row%50 == 7:
					continue // never sent
				case row%50 == 9:
					must(t, w.Intent(row, 1)) // in flight
					continue
				case row%50 == 11:
					must(t, w.Intent(row, 1))
					must(t, w.Doubt(row))
					must(t, w.Intent(row, 2))
				default:
					must(t, w.Intent(row, 1))
				}
				must(t, w.Submitted(row, 1, fmt.Sprintf("d7q%017d", row), t0.Add(time.Duration(row)*time.Second)))
				if row%50 != 13 { // else pending
					must(t, w.Result(row, row%10 == 5, []byte(fmt.Sprintf("%d,answer %d\n", row, row))))
				}
			}
			if tc.change != nil {
				tc.change(t, w, results)
			}
			must(t, w.Close())
			if tc.compact < 1<<40 && w.Compactions() == 0 {
				t.Fatal("no compaction")
			}
			full := load(t, ckpt) // before Open repairs anything
			w, st, err := store.Open(ckpt)
			must(t, err)
			defer w.Close()
			if store.Lean(st) != tc.wantLean {
				t.Fatalf("loaded lean: %v, want %v", store.Lean(st), tc.wantLean)
			}
			if !tc.wantLean {
				return // the full load, as Open always did: its repairs are tested elsewhere
			}
			// A compacted journal's resolved rows come from the K record of its snapshot.
			if k := store.Summaries(st); (k > 0) != (tc.compact < 1<<40) {
				t.Errorf("%d K records taken", k)
			}
			if len(st.Problems) == 0 { // else the results file was cut back: ResultsEnd as the journal says
				sameAsFull(t, st, full)
			} else {
				diffRows(t, store.Rows(st), store.Rows(full))
			}
			if fi, err := os.Stat(results); err != nil || fi.Size() != st.ResultsEnd {
				t.Errorf("results file of %v bytes after Open (%v), ResultsEnd %d", fi.Size(), err, st.ResultsEnd)
			}
		})
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(s)
	must(t, errors.Join(err, f.Close()))
}
