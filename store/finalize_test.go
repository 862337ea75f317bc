package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

func TestDoubt(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 4, "p\n")
	must(t, w.Intent(0, 1))
	must(t, w.Doubt(0))
	must(t, w.Intent(0, 2))
	must(t, w.Doubt(0))
	must(t, w.Submitted(0, 2, "op0", t0))
	must(t, w.Doubt(1))
	must(t, w.Reopen(1))
	must(t, w.Intent(2, 1))
	must(t, w.Doubt(2))
	must(t, w.Result(2, true, []byte("r2\n")))
	must(t, w.Reopen(2))
	must(t, w.Result(0, false, []byte("r0\n")))
	if err := w.Doubt(4); err == nil {
		t.Error("Doubt(4) of 4 rows: no error")
	}
	must(t, w.Flush())
	want := []store.Row{
		{Phase: store.PhaseResolved, Attempt: 2, OpID: "op0", SubmittedAt: t0.UnixMilli(), Doubts: 2},
		{Doubts: 1},
		{Attempt: 1, Doubts: 1},
		{},
	}
	wantCounts := store.Counts{Rows: 4, New: 3, Succeeded: 1}
	check := func(t *testing.T, st *store.State) {
		t.Helper()
		diffRows(t, store.Rows(st), want)
		if st.Doubts != 4 || st.Counts() != wantCounts || len(st.Problems) != 0 {
			t.Errorf("Doubts %d, counts %+v, problems %q", st.Doubts, st.Counts(), st.Problems)
		}
	}
	t.Run("load", func(t *testing.T) { check(t, load(t, ckpt)) })
	t.Run("compact", func(t *testing.T) {
		must(t, w.Compact())
		check(t, load(t, ckpt))
	})
	t.Run("open", func(t *testing.T) {
		must(t, w.Close())
		w2, st, err := store.Open(ckpt)
		must(t, err)
		check(t, st)
		// Doubts survive a finalize's snapshot too.
		must(t, w2.Result(1, false, []byte("r1\n")))
		must(t, w2.Result(2, false, []byte("r2 again\n")))
		must(t, w2.Result(3, false, []byte("r3\n")))
		must(t, w2.Finalize(true))
		must(t, w2.Close())
		st = load(t, ckpt)
		for i, d := range []uint16{2, 1, 1, 0} {
			if st.Row(i).Doubts != d {
				t.Errorf("after Finalize: row %d: %d doubts, want %d", i, st.Row(i).Doubts, d)
			}
		}
		if st.Doubts != 4 {
			t.Errorf("after Finalize: Doubts %d", st.Doubts)
		}
	})
}

// op is one Writer call of a finalize scenario.
type op struct {
	kind byte // 'R' result, 'U' reopen
	row  int
	line string
}

// play runs ops on w and returns latest updated with the latest line of
// each row (a new map if latest is nil).
func play(t *testing.T, w *store.Writer, latest map[int]string, ops []op) map[int]string {
	t.Helper()
	if latest == nil {
		latest = map[int]string{}
	}
	for _, o := range ops {
		switch o.kind {
		case 'R':
			must(t, w.Result(o.row, strings.HasPrefix(o.line, "fail"), []byte(o.line)))
			latest[o.row] = o.line
		case 'U':
			must(t, w.Reopen(o.row))
			delete(latest, o.row)
		}
	}
	must(t, w.Flush())
	return latest
}

// checkSpans checks that the rows in latest are resolved, their lines in the
// results file their latest ones, and that the other rows are not resolved.
func checkSpans(t *testing.T, st *store.State, results string, latest map[int]string) {
	t.Helper()
	data := readFile(t, results)
	if int64(len(data)) < st.ResultsEnd {
		t.Errorf("results file has %d bytes, ResultsEnd %d", len(data), st.ResultsEnd)
	}
	for row := range st.Len() {
		want, ok := latest[row]
		if resolved := st.Row(row).Phase == store.PhaseResolved; resolved != ok {
			t.Errorf("row %d: %v, want resolved=%v", row, st.Row(row).Phase, ok)
			continue
		}
		if !ok {
			continue
		}
		start, end := store.Span(st, row)
		if start >= end || end > int64(len(data)) {
			t.Errorf("row %d: span [%d,%d) in %d bytes", row, start, end, len(data))
		} else if got := data[start:end]; got != want {
			t.Errorf("row %d: line %q, want %q", row, abbrev(got), abbrev(want))
		}
	}
}

// The scenario shared by the finalize tests: four rows, resolved out of
// order, two of them retried, so that superseded lines lie in the middle.
var retried = []op{
	{'R', 2, "2,\"first\ntry\"\n"},
	{'R', 0, "fail 0\n"},
	{'R', 3, "3,ok\n"},
	{'U', 0, ""},
	{'U', 2, ""},
	{'R', 1, "1,ok\n"},
	{'R', 0, "0,\"retried\"\n"},
	{'R', 2, "2,second\n"},
}

type finalizeCase struct {
	name       string
	preamble   string
	ops        []op
	inputOrder bool
	want       string // results file after Finalize, after the preamble
}

func TestFinalize(t *testing.T) {
	t.Parallel()
	tests := []finalizeCase{
		{"file order", "id,answer\n", retried, false, "3,ok\n1,ok\n0,\"retried\"\n2,second\n"},
		{"input order", "id,answer\n", retried, true, "0,\"retried\"\n1,ok\n2,second\n3,ok\n"},
		{"no preamble", "", retried, true, "0,\"retried\"\n1,ok\n2,second\n3,ok\n"},
		{"preamble of lines", "# run\nid,answer\n", retried, false, "3,ok\n1,ok\n0,\"retried\"\n2,second\n"},
		{"nothing superseded", "h\n", []op{{'R', 3, "3\n"}, {'R', 1, "1\n"}, {'R', 0, "0\n"}, {'R', 2, "2\n"}}, true, "0\n1\n2\n3\n"},
		{"already in order", "h\n", []op{{'R', 0, "0\n"}, {'R', 1, "1\n"}, {'R', 2, "2\n"}, {'R', 3, "3\n"}}, false, "0\n1\n2\n3\n"},
		{"superseded at the end", "h\n", []op{{'R', 0, "0\n"}, {'R', 1, "1\n"}, {'R', 2, "2\n"}, {'R', 3, "3\n"}, {'U', 3, ""}, {'R', 3, "3b\n"}, {'U', 3, ""}, {'R', 3, "3c\n"}}, false, "0\n1\n2\n3c\n"},
		{"long line", "h\n", []op{{'R', 1, "1\n"}, {'R', 0, strings.Repeat("x", 100) + "\n"}, {'R', 3, "3\n"}, {'R', 2, "2\n"}}, true, strings.Repeat("x", 100) + "\n1\n2\n3\n"},
	}
	// Small copy batches: lines longer than a batch, reads split at gaps.
	sizes := []struct{ batch, gap int64 }{{8 << 20, 4 << 10}, {20, 0}, {7, 3}}
	for _, tt := range tests {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/batch=%d,gap=%d", tt.name, size.batch, size.gap), func(t *testing.T) {
				testFinalize(t, tt, size.batch, size.gap)
			})
		}
	}
}

func testFinalize(t *testing.T, tt finalizeCase, batch, gap int64) {
	w, ckpt, results := newRun(t, 4, tt.preamble)
	w.SetCopySizes(batch, gap)
	latest := play(t, w, nil, tt.ops)
	before := readFile(t, results)
	superseded := len(before) > len(tt.preamble+tt.want)
	if w.NeedsFinalize() != superseded {
		t.Errorf("NeedsFinalize = %v, want %v", w.NeedsFinalize(), superseded)
	}
	must(t, w.Finalize(tt.inputOrder))
	if got := readFile(t, results); got != tt.preamble+tt.want {
		t.Fatalf("results file:\n%q\nwant\n%q", abbrev(got), abbrev(tt.preamble+tt.want))
	}
	if w.NeedsFinalize() {
		t.Error("NeedsFinalize after Finalize")
	}
	st := load(t, ckpt)
	checkSpans(t, st, results, latest)
	if st.SupersededBytes() != 0 || len(st.Problems) != 0 {
		t.Errorf("after Finalize: superseded %d, problems %q", st.SupersededBytes(), st.Problems)
	}

	// The writer goes on with the new files.
	latest = play(t, w, latest, []op{{'U', 1, ""}, {'R', 1, "1,again\n"}})
	if !w.NeedsFinalize() {
		t.Error("NeedsFinalize false after a row was resolved again")
	}
	must(t, w.Close())
	w2, st, err := store.Open(ckpt)
	must(t, err)
	w2.SetCopySizes(batch, gap)
	if len(st.Problems) != 0 || !w2.NeedsFinalize() || st.SupersededBytes() == 0 {
		t.Errorf("reopened: problems %q NeedsFinalize %v superseded %d", st.Problems, w2.NeedsFinalize(), st.SupersededBytes())
	}
	checkSpans(t, st, results, latest)
	must(t, w2.Finalize(true))
	must(t, w2.Close())
	st = load(t, ckpt)
	checkSpans(t, st, results, latest)
	want := tt.preamble
	for row := range 4 {
		want += latest[row]
	}
	if got := readFile(t, results); got != want {
		t.Errorf("second Finalize: %q, want %q", abbrev(got), abbrev(want))
	}
	noTemps(t, filepath.Dir(ckpt))
}

// abbrev shortens s for a failure message.
func abbrev(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%s...(%d bytes)...%s", s[:80], len(s), s[len(s)-80:])
	}
	return s
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestFinalizeUnresolved(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 3, "h\n")
	play(t, w, nil, []op{{'R', 0, "0\n"}, {'R', 2, "2\n"}, {'R', 1, "1\n"}, {'U', 0, ""}})
	must(t, w.Intent(0, 1))
	before, beforeJ := readFile(t, results), readFile(t, ckpt)
	err := w.Finalize(true)
	if !errors.Is(err, store.ErrUnresolved) || !strings.Contains(err.Error(), "row 0") {
		t.Fatalf("Finalize with row 0 in flight: %v", err)
	}
	if readFile(t, results) != before || readFile(t, ckpt) != beforeJ {
		t.Error("a refused Finalize changed the files")
	}
	// Not sticky.
	play(t, w, nil, []op{{'R', 0, "0b\n"}})
	must(t, w.Finalize(false))
	if got := readFile(t, results); got != "h\n2\n1\n0b\n" {
		t.Errorf("results %q", got)
	}
}

// TestFinalizeAfterRepair: the lines of rows fetched again after Open cut
// the results file are found where they are.
func TestFinalizeAfterRepair(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 4, "h\n")
	play(t, w, nil, []op{{'R', 0, "0\n"}, {'R', 1, "1\n"}, {'R', 2, "2\n"}, {'R', 3, "3,long line\n"}, {'U', 3, ""}})
	must(t, w.Close())
	// Cut the results file in row 1's line: rows 1 and 2 go back to new.
	must(t, os.WriteFile(results, []byte("h\n0\n1"), 0o600))
	w, st, err := store.Open(ckpt)
	must(t, err)
	if c := st.Counts(); c.Succeeded != 1 || len(st.Problems) != 1 {
		t.Fatalf("counts %+v problems %q", c, st.Problems)
	}
	latest := play(t, w, map[int]string{0: "0\n"}, []op{{'R', 2, "2b\n"}, {'R', 3, "3b\n"}, {'R', 1, "1b\n"}})
	must(t, w.Close())
	w, st, err = store.Open(ckpt)
	must(t, err)
	checkSpans(t, st, results, latest)
	must(t, w.Compact())
	checkSpans(t, load(t, ckpt), results, latest)
	must(t, w.Finalize(true))
	must(t, w.Close())
	if got := readFile(t, results); got != "h\n0\n1b\n2b\n3b\n" {
		t.Errorf("results %q", got)
	}
}

// TestCompactKeepsSpans: a snapshot keeps every line where it is, across
// superseded lines, and where the next one goes.
func TestCompactKeepsSpans(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 4, "h\n")
	// Superseded lines in the middle ("3") and at the end ("0").
	latest := play(t, w, nil, []op{{'R', 3, "3\n"}, {'R', 1, "1\n"}, {'U', 3, ""}, {'R', 3, "3b\n"}, {'R', 0, "0\n"}, {'U', 0, ""}})
	must(t, w.Compact())
	checkSpans(t, load(t, ckpt), results, latest)
	play(t, w, latest, []op{{'R', 2, "2\n"}, {'R', 0, "0b\n"}})
	must(t, w.Close())
	st := load(t, ckpt)
	checkSpans(t, st, results, latest)
	if got, want := st.SupersededBytes(), int64(len("3\n0\n")); got != want {
		t.Errorf("SupersededBytes = %d, want %d", got, want)
	}
}

func TestFinalizeCrash(t *testing.T) {
	t.Parallel()
	const pre = "id,answer\n"
	final := map[bool]string{
		false: pre + "3,ok\n1,ok\n0,\"retried\"\n2,second\n",
		true:  pre + "0,\"retried\"\n1,ok\n2,second\n3,ok\n",
	}
	steps := []struct {
		name     string
		step     int
		replaced bool   // the results file is the new one
		problem  string // after Open
	}{
		{"results temp", store.StepResultsTemp, false, ""},
		{"journal temp", store.StepJournalTemp, false, ""},
		{"intent", store.StepIntent, false, "rolled back"},
		{"results rename", store.StepResultsRename, true, ""},
		{"journal rename", store.StepJournalRename, true, ""},
	}
	crash := errors.New("simulated crash")
	for _, inputOrder := range []bool{false, true} {
		for _, s := range steps {
			t.Run(fmt.Sprintf("%s/input=%v", s.name, inputOrder), func(t *testing.T) {
				w, ckpt, results := newRun(t, 4, pre)
				latest := play(t, w, nil, retried)
				old := readFile(t, results)
				restore := w.SetFinalizeHook(func(step int) error {
					if step == s.step {
						return crash
					}
					return nil
				})
				err := w.Finalize(inputOrder)
				restore()
				if !errors.Is(err, crash) {
					t.Fatalf("Finalize: %v", err)
				}
				if err := w.Flush(); !errors.Is(err, crash) {
					t.Errorf("the writer goes on after a crash: %v", err)
				}
				w.Close() // the process is gone: it only releases the files

				want := old
				if s.replaced {
					want = final[inputOrder]
				}
				if got := readFile(t, results); got != want {
					t.Fatalf("results file as left:\n%q\nwant\n%q", got, want)
				}
				journal := readFile(t, ckpt)
				st := load(t, ckpt)
				checkSpans(t, st, results, latest)
				if readFile(t, ckpt) != journal {
					t.Error("Load wrote to the checkpoint")
				}

				w, st, err = store.Open(ckpt)
				must(t, err)
				if store.Lean(st) { // the spans are in the full state of the journal Open left
					full := load(t, ckpt)
					sameAsFull(t, st, full)
					checkSpans(t, full, results, latest)
				} else {
					checkSpans(t, st, results, latest)
				}
				if got := readFile(t, results); got != want || int64(len(got)) != st.ResultsEnd {
					t.Errorf("results file after Open:\n%q\nwant\n%q", got, want)
				}
				if s.problem == "" && len(st.Problems) != 0 || s.problem != "" && (len(st.Problems) != 1 || !strings.Contains(st.Problems[0], s.problem)) {
					t.Errorf("problems %q, want %q", st.Problems, s.problem)
				}
				if s.replaced && strings.Contains(readFile(t, ckpt), "\nF ") {
					t.Error("Open did not complete the journal")
				}
				noTemps(t, filepath.Dir(ckpt))
				must(t, w.Close())

				// Once is enough: the next Open is clean.
				w, st, err = store.Open(ckpt)
				must(t, err)
				if len(st.Problems) != 0 {
					t.Errorf("second Open: problems %q", st.Problems)
				}
				must(t, w.Finalize(inputOrder))
				must(t, w.Close())
				if got := readFile(t, results); got != final[inputOrder] {
					t.Errorf("later Finalize:\n%q\nwant\n%q", got, final[inputOrder])
				}
				checkSpans(t, load(t, ckpt), results, latest)
			})
		}
	}
}

// TestFinalizeTornIntent: a crash while the F record was being written
// leaves a torn tail; the old files stand.
func TestFinalizeTornIntent(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 4, "h\n")
	latest := play(t, w, nil, retried)
	oldJournal, oldResults := readFile(t, ckpt), readFile(t, results)
	restore := w.SetFinalizeHook(func(step int) error {
		if step == store.StepIntent {
			return errors.New("crash")
		}
		return nil
	})
	w.Finalize(true)
	restore()
	w.Close()
	withF := readFile(t, ckpt)
	if len(withF) <= len(oldJournal) || !strings.HasPrefix(withF[len(oldJournal):], "F ") {
		t.Fatalf("no F record at the end of the journal: %q", withF[len(oldJournal):])
	}
	for cut := len(oldJournal) + 1; cut < len(withF); cut++ {
		must(t, os.WriteFile(ckpt, []byte(withF[:cut]), 0o600))
		w, st, err := store.Open(ckpt)
		must(t, err)
		if st.DroppedBytes != int64(cut-len(oldJournal)) || len(st.Problems) != 0 {
			t.Errorf("cut %d: dropped %d problems %q", cut, st.DroppedBytes, st.Problems)
		}
		checkSpans(t, st, results, latest)
		must(t, w.Close())
		if readFile(t, ckpt) != oldJournal || readFile(t, results) != oldResults {
			t.Fatalf("cut %d: Open did not restore the old files", cut)
		}
	}
}

// TestFinalizeBigOrder: many rows in a scrambled file order, with retries,
// in both orders.
func TestFinalizeBigOrder(t *testing.T) {
	t.Parallel()
	const rows = 3000
	w, ckpt, results := newRun(t, rows, "h\n")
	latest := map[int]string{}
	// Rows arrive in a scrambled order; every third is retried.
	for k := range rows {
		row := (k * 7919) % rows
		line := fmt.Sprintf("%d,%s\n", row, strings.Repeat("y", row%50))
		must(t, w.Result(row, false, []byte(line)))
		latest[row] = line
	}
	for row := 0; row < rows; row += 3 {
		must(t, w.Reopen(row))
		line := fmt.Sprintf("%d,again\n", row)
		must(t, w.Result(row, false, []byte(line)))
		latest[row] = line
	}
	must(t, w.Flush())
	for _, inputOrder := range []bool{false, true} {
		must(t, w.Finalize(inputOrder))
		st := load(t, ckpt)
		checkSpans(t, st, results, latest)
		lines := strings.SplitAfter(readFile(t, results), "\n")
		if len(lines) != rows+2 || lines[rows+1] != "" { // preamble, rows, ""
			t.Fatalf("%d lines", len(lines))
		}
		if inputOrder {
			for row := range rows {
				if lines[row+1] != latest[row] {
					t.Fatalf("line %d: %q, want %q", row+1, lines[row+1], latest[row])
				}
			}
		}
	}
	must(t, w.Close())
}

// TestGoldenSnapshot pins the snapshot format (N, P, D and T records, L
// records in results file order, G records after the header) and the F
// record. The -v4 files are written now; their version-1 to version-3
// counterparts, written by the same calls before (without groups before
// version 4, without Name before version 2), must still load to the same rows
// (see TestVersion1).
func TestGoldenSnapshot(t *testing.T) {
	tests := []struct {
		name   string
		finish func(t *testing.T, w *store.Writer)
	}{
		{"snapshot-v4.ckpt", func(t *testing.T, w *store.Writer) { must(t, w.Compact()) }},
		{"finalize-intent-v4.ckpt", func(t *testing.T, w *store.Writer) {
			must(t, w.Result(1, false, []byte("1,ok\n")))
			must(t, w.Result(0, false, []byte("0,again\n")))
			defer w.SetFinalizeHook(func(step int) error {
				if step == store.StepIntent {
					return errors.New("crash")
				}
				return nil
			})()
			if err := w.Finalize(true); err == nil || errors.Is(err, store.ErrUnresolved) {
				t.Fatalf("Finalize: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			golden, err := filepath.Abs(filepath.Join("testdata/journal", tt.name))
			must(t, err)
			t.Chdir(t.TempDir())
			w, err := store.Create("run.ckpt", header(3, "results.csv"), []byte("id,answer\n"), false, store.Groups(goldenGroups))
			must(t, err)
			must(t, w.Name(0, named("zero")))
			must(t, w.Intent(0, 1))
			must(t, w.Doubt(0))
			must(t, w.Submitted(0, 2, "d7qqr3frkl81js0udlr9", t0))
			must(t, w.Name(1, named(oddID))) // named, not yet submitted
			play(t, w, nil, []op{{'R', 2, "2,first\n"}, {'R', 0, "0,hello\n"}, {'U', 2, ""}, {'R', 2, "2,second\n"}, {'U', 0, ""}})
			must(t, w.Name(0, named("zero again"))) // reopened after its resolution
			tt.finish(t, w)
			w.Close()
			got := readFile(t, "run.ckpt")
			if *update {
				must(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			if want := readFile(t, golden); got != want {
				t.Errorf("journal differs from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// TestFinalizeSymlink: the file a symlink points to is replaced, the link
// stays.
func TestFinalizeSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target, link, ckpt := filepath.Join(dir, "real.csv"), filepath.Join(dir, "link.csv"), filepath.Join(dir, "c")
	must(t, os.WriteFile(target, nil, 0o640))
	must(t, os.Symlink(target, link))
	w, err := store.Create(ckpt, header(2, link), []byte("h\n"), true)
	must(t, err)
	defer w.Close()
	play(t, w, nil, []op{{'R', 1, "1\n"}, {'R', 0, "0\n"}})
	must(t, w.Finalize(true))
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link: %v %v", fi, err)
	}
	if got := readFile(t, target); got != "h\n0\n1\n" {
		t.Errorf("target %q", got)
	}
	// Create tightened the mode; a mode the user chose afterwards stays.
	must(t, os.Chmod(target, 0o640))
	play(t, w, nil, []op{{'U', 0, ""}, {'R', 0, "0b\n"}})
	must(t, w.Finalize(false))
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after Finalize: %v %v", fi, err)
	}
}
