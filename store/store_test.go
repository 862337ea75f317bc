package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// newRun creates a checkpoint with rows rows in a fresh directory and returns
// its paths.
func newRun(t *testing.T, rows int, preamble string) (w *store.Writer, ckpt, results string) {
	t.Helper()
	return newRunWith(t, store.Hooks{}, rows, preamble)
}

// newRunWith is newRun with hooks.
func newRunWith(t *testing.T, hk store.Hooks, rows int, preamble string) (w *store.Writer, ckpt, results string) {
	t.Helper()
	dir := t.TempDir()
	ckpt, results = filepath.Join(dir, "run.ckpt"), filepath.Join(dir, "results.csv")
	w, err := store.CreateWith(hk, ckpt, header(rows, results), []byte(preamble), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, ckpt, results
}

func header(rows int, results string) store.Header {
	return store.Header{
		Created: t0, Input: "in.csv", InputSHA256: "abc", InputSize: 42, Rows: rows,
		Results: results, ResultsFormat: "csv", Settings: json.RawMessage(`{"model":"yandexgpt-lite"}`),
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, path string) *store.State {
	t.Helper()
	st, err := store.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func diffRows(t *testing.T, got, want []store.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d rows, want %d", len(got), len(want))
	}
	for i := range got {
		w := want[i]
		if w.Phase == store.PhaseResolved {
			// A resolved row's operation is not kept in memory (its result line is what counts).
			w.OpID, w.SubmittedAt = "", 0
		}
		if got[i] != w {
			t.Errorf("row %d: got %+v, want %+v", i, got[i], w)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 6, "id,answer\n")
	at := time.UnixMilli(1700000000123)
	must(t, w.Intent(0, 1))
	must(t, w.Submitted(0, 1, "d7qqr3frkl81js0udlr9", at))
	must(t, w.Result(0, false, []byte("0,\"two\nlines\"\n")))
	must(t, w.Intent(1, 1))
	must(t, w.Submitted(1, 1, "op1", at))
	must(t, w.Intent(2, 1))
	must(t, w.Intent(3, 2))
	must(t, w.Submitted(3, 2, "op3", at))
	must(t, w.Result(3, true, []byte("3,error\n")))
	must(t, w.Reopen(3))
	must(t, w.Result(4, true, []byte("4,bad input\n")))
	must(t, w.Close())

	want := []store.Row{
		{Phase: store.PhaseResolved, Attempt: 1, OpID: "d7qqr3frkl81js0udlr9", SubmittedAt: at.UnixMilli()},
		{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op1", SubmittedAt: at.UnixMilli()},
		{Phase: store.PhaseInFlight, Attempt: 1},
		{Phase: store.PhaseNew, Attempt: 2},
		{Phase: store.PhaseResolved, Failed: true},
		{},
	}
	wantResults := "id,answer\n0,\"two\nlines\"\n3,error\n4,bad input\n"
	st := load(t, ckpt)
	diffRows(t, store.Rows(st), want)
	if h := st.Header; h.Version != store.Version || !h.Created.Equal(t0) || h.Rows != 6 || h.Results != results ||
		h.InputSHA256 != "abc" || h.InputSize != 42 || string(h.Settings) != `{"model":"yandexgpt-lite"}` {
		t.Errorf("header = %+v", h)
	}
	if st.ResultsEnd != int64(len(wantResults)) || st.DroppedBytes != 0 || len(st.Problems) != 0 {
		t.Errorf("ResultsEnd %d DroppedBytes %d Problems %q", st.ResultsEnd, st.DroppedBytes, st.Problems)
	}
	if got := readFile(t, results); got != wantResults {
		t.Errorf("results = %q, want %q", got, wantResults)
	}
	if c, want := st.Counts(), (store.Counts{Rows: 6, New: 2, InFlight: 1, Submitted: 1, Succeeded: 1, Failed: 1}); c != want {
		t.Errorf("counts = %+v, want %+v", c, want)
	}

	// Resume and append.
	w2, st2, err := store.Open(ckpt)
	must(t, err)
	diffRows(t, store.Rows(st2), want)
	if len(st2.Problems) != 0 {
		t.Errorf("problems: %q", st2.Problems)
	}
	must(t, w2.Result(1, false, []byte("1,ok\n")))
	must(t, w2.Close())
	want[1].Phase = store.PhaseResolved
	st = load(t, ckpt)
	diffRows(t, store.Rows(st), want)
	if got := readFile(t, results); got != wantResults+"1,ok\n" {
		t.Errorf("results = %q", got)
	}
	if st.ResultsEnd != int64(len(wantResults)+5) {
		t.Errorf("ResultsEnd = %d", st.ResultsEnd)
	}
}

// TestGolden pins the on-disk format: a change that breaks reading existing
// checkpoints fails here. v4.ckpt is what Create and the Writer write now
// (with a blob of groups in G records); v3.ckpt, v2.ckpt and v1.ckpt, written
// by the same calls before version 4 (without the groups; without Name before
// version 2), must still load (see TestVersion1).
func TestGolden(t *testing.T) {
	golden, err := filepath.Abs("testdata/journal/v4.ckpt")
	must(t, err)
	t.Chdir(t.TempDir())
	h := header(4, "results.csv")
	w, err := store.Create("run.ckpt", h, []byte("id,answer\n"), false, store.Groups(goldenGroups))
	must(t, err)
	must(t, w.Name(0, named("r0")))
	must(t, w.Intent(0, 1))
	must(t, w.Submitted(0, 1, "d7qqr3frkl81js0udlr9", time.UnixMilli(1735787045000)))
	must(t, w.Result(0, false, []byte("0,hello\n")))
	must(t, w.Name(1, named("row 1")))
	must(t, w.Intent(1, 1))
	must(t, w.Result(1, true, []byte("1,rejected\n")))
	must(t, w.Reopen(1))
	must(t, w.Name(2, named(oddID)))
	must(t, w.Intent(2, 3))
	must(t, w.Doubt(2))
	must(t, w.Close())
	got := readFile(t, "run.ckpt")
	if *update {
		must(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	if want := readFile(t, golden); got != want {
		t.Errorf("journal differs from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
	st := load(t, golden)
	if st.Header.Version != store.Version {
		t.Errorf("version %d", st.Header.Version)
	}
	diffRows(t, store.Rows(st), goldenRows)
	if !bytes.Equal(st.Groups(), goldenGroups) {
		t.Errorf("Groups() = %q, want %q", st.Groups(), goldenGroups)
	}
	// Rows 0 and 1 were resolved after they were named.
	diffNamed(t, st.Named, map[int]store.Named{2: named(oddID)})
	if st.Doubts != 1 {
		t.Errorf("Doubts = %d", st.Doubts)
	}
	if st.ResultsEnd != int64(len("id,answer\n0,hello\n")) {
		t.Errorf("ResultsEnd = %d", st.ResultsEnd)
	}
}

// goldenGroups is the blob of groups the version-4 goldens keep: opaque to the store, any bytes.
var goldenGroups = []byte("groups \x00\xff of duplicate rows")

// goldenRows is the state of the golden journals v1.ckpt and v2.ckpt.
var goldenRows = []store.Row{
	{Phase: store.PhaseResolved, Attempt: 1, OpID: "d7qqr3frkl81js0udlr9", SubmittedAt: 1735787045000},
	{Phase: store.PhaseNew, Attempt: 1},
	// I then D: the try in flight is counted as a possible duplicate, and the D closes it.
	{Phase: store.PhaseNew, Attempt: 3, Doubts: 1},
	{},
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	const workers, perWorker = 32, 40
	w, _, _ := newRun(t, workers*perWorker, "")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Go(func() {
			for i := range perWorker {
				row := g*perWorker + i
				if err := w.Intent(row, 1); err != nil {
					errs <- err
					return
				}
				if err := w.Submitted(row, 1, fmt.Sprint("op", row), t0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	must(t, w.Flush())
	commits, records := w.Stats()
	t.Logf("intents: %d commits for %d records", commits, records)
	if records != 2*workers*perWorker {
		t.Fatalf("records = %d, want %d", records, 2*workers*perWorker)
	}
	if commits > records/4 {
		t.Errorf("%d commits for %d records: no group commit", commits, records)
	}

	// A burst of queued records costs a handful of commits.
	for row := range 1000 {
		must(t, w.Result(row, false, []byte("x\n")))
	}
	must(t, w.Flush())
	c2, r2 := w.Stats()
	t.Logf("burst: %d commits for %d records", c2-commits, r2-records)
	if r2-records != 1000 || c2-commits > 50 {
		t.Errorf("burst: %d commits for %d records", c2-commits, r2-records)
	}
}

// buildJournal writes a small journal whose last record is a result; it
// returns the file's bytes and the results file's.
func buildJournal(t *testing.T) (ckpt, results string, data []byte, res []byte) {
	t.Helper()
	w, ckpt, results := newRun(t, 5, "h\n")
	for row := range 4 {
		must(t, w.Intent(row, 1))
		must(t, w.Submitted(row, 1, fmt.Sprint("op", row), t0))
		must(t, w.Flush())
	}
	must(t, w.Result(0, false, []byte("r0\n")))
	must(t, w.Result(2, true, []byte("r2\n")))
	must(t, w.Close())
	b, err := os.ReadFile(ckpt)
	must(t, err)
	r, err := os.ReadFile(results)
	must(t, err)
	return ckpt, results, b, r
}

func lastRecordStart(data []byte) int {
	return bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
}

func TestTornTail(t *testing.T) {
	t.Parallel()
	ckpt, results, data, res := buildJournal(t)
	last := lastRecordStart(data)
	must(t, os.WriteFile(ckpt, data[:last], 0o600))
	prefix := load(t, ckpt)
	full, err := store.LoadReader(bytes.NewReader(data))
	must(t, err)
	if slices.Equal(store.Rows(prefix), store.Rows(full)) {
		t.Fatal("the last record changes nothing: bad test")
	}

	check := func(t *testing.T, content []byte, dropped int) {
		t.Helper()
		must(t, os.WriteFile(ckpt, content, 0o600))
		must(t, os.WriteFile(results, res, 0o600))
		st := load(t, ckpt)
		diffRows(t, store.Rows(st), store.Rows(prefix))
		if st.DroppedBytes != int64(dropped) || st.ResultsEnd != prefix.ResultsEnd || len(st.Problems) != 0 {
			t.Errorf("DroppedBytes %d (want %d) ResultsEnd %d (want %d) Problems %q",
				st.DroppedBytes, dropped, st.ResultsEnd, prefix.ResultsEnd, st.Problems)
		}
		if got := readFile(t, ckpt); got != string(content) {
			t.Fatal("Load wrote to the checkpoint")
		}
		w, st2, err := store.Open(ckpt)
		must(t, err)
		must(t, w.Close())
		diffRows(t, store.Rows(st2), store.Rows(prefix))
		if st2.DroppedBytes != int64(dropped) {
			t.Errorf("Open: DroppedBytes %d, want %d", st2.DroppedBytes, dropped)
		}
		if got := readFile(t, ckpt); got != string(data[:last]) {
			t.Errorf("Open left %d bytes, want %d", len(got), last)
		}
		if got := readFile(t, results); int64(len(got)) != prefix.ResultsEnd {
			t.Errorf("Open left %d results bytes, want %d", len(got), prefix.ResultsEnd)
		}
	}
	for cut := last + 1; cut < len(data); cut++ {
		t.Run(fmt.Sprint("cut", cut), func(t *testing.T) { check(t, data[:cut], cut-last) })
	}
	// A complete last line with a bad checksum is torn as well.
	for i := last; i < len(data)-1; i++ {
		bad := slices.Clone(data)
		bad[i] ^= 0x20
		t.Run(fmt.Sprint("flip", i), func(t *testing.T) { check(t, bad, len(data)-last) })
	}
	// Several unreadable lines at the end: dropped, and said so.
	t.Run("garbage", func(t *testing.T) {
		garbage := append(slices.Clone(data[:last]), "x\n\x00\x00\x00\nI 1 1 00000000\nI 1"...)
		must(t, os.WriteFile(ckpt, garbage, 0o600))
		st := load(t, ckpt)
		diffRows(t, store.Rows(st), store.Rows(prefix))
		if st.DroppedBytes != int64(len(garbage)-last) || len(st.Problems) != 1 {
			t.Errorf("DroppedBytes %d Problems %q", st.DroppedBytes, st.Problems)
		}
	})
}

func TestCorruptMiddle(t *testing.T) {
	t.Parallel()
	ckpt, _, data, _ := buildJournal(t)
	full := load(t, ckpt)
	// The third record from the end: "S 3 1 op3 ..." precedes R 0 and R 2.
	end := lastRecordStart(data)
	end = lastRecordStart(data[:end])
	start := lastRecordStart(data[:end])
	if !bytes.HasPrefix(data[start:], []byte("S 3 ")) {
		t.Fatalf("unexpected record %q", data[start:end])
	}
	for i := start; i < end; i++ {
		for _, b := range []byte{data[i] ^ 1, '\n', 0} {
			if b == data[i] {
				continue
			}
			bad := slices.Clone(data)
			bad[i] = b
			st, err := store.LoadReader(bytes.NewReader(bad))
			if err != nil {
				t.Fatalf("byte %d=%q: %v", i, b, err)
			}
			if len(st.Problems) == 0 || !strings.Contains(st.Problems[0], "line ") {
				t.Errorf("byte %d=%q: problems %q", i, b, st.Problems)
			}
			want := slices.Clone(store.Rows(full))
			want[3] = store.Row{Phase: store.PhaseInFlight, Attempt: 1} // keeps its earlier phase
			if i == end-1 && b != '\n' {
				// Merged with the next line: still submitted, as its S record says.
				want[0] = store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op0", SubmittedAt: 1735787045000}
			}
			diffRows(t, store.Rows(st), want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	h := header(3, "/nonexistent/results")
	h.Version = store.Version
	future := h
	future.Version = store.BatchVersion + 1 // 5 is the batch backend's
	good := string(store.HeaderRecord(h, nil))
	tests := []struct {
		name, data string
		want       error
		msg        string
	}{
		{"empty", "", store.ErrNoHeader, "empty"},
		{"garbage", "hello world\n", store.ErrNoHeader, ""},
		{"torn header", good[:len(good)-1], store.ErrNoHeader, "no newline"},
		{"bad header checksum", strings.Replace(good, "in.csv", "in.csX", 1), store.ErrNoHeader, "checksum"},
		{"no header", string(store.Record("I 0 1")) + good, store.ErrNoHeader, "not a header"},
		{"bad json", string(store.Record("H {\"version\":")), store.ErrNoHeader, "header"},
		{"version 6", string(store.HeaderRecord(future, nil)), store.ErrVersion, "version 6"},
		{"version 0", string(store.Record(`H {"rows":3}`)), store.ErrVersion, "version 0"},
		{"version -1", string(store.Record(`H {"version":-1,"rows":3}`)), store.ErrVersion, "version -1"},
		{"too many rows", string(store.Record(`H {"version":1,"rows":1000000000000}`)), store.ErrNoHeader, "rows"},
		{"negative rows", string(store.Record(`H {"version":1,"rows":-1}`)), store.ErrNoHeader, "rows"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			must(t, os.WriteFile(path, []byte(tt.data), 0o600))
			_, err := store.Load(path)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), path) {
				t.Errorf("Load: %v, want %v containing %q and the path", err, tt.want, tt.msg)
			}
			_, _, err = store.Open(path)
			if !errors.Is(err, tt.want) {
				t.Errorf("Open: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := store.Load(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSkippedRecords(t *testing.T) {
	t.Parallel()
	h := header(3, "/nonexistent/results")
	h.Version = store.Version
	var b bytes.Buffer
	b.Write(store.HeaderRecord(h, nil))
	for _, p := range []string{
		"I 0 1",
		"I 3 1",            // row out of range
		"I 1 0",            // attempt 0
		"S 1 1 op 5 extra", // trailing field
		"X 1",              // unknown kind
		"H {}",             // second header
		"R 1 2 10",         // failed is 0|1
		"S 1 1 op -5",
		"I 2 70000", // attempt beyond uint16
	} {
		b.Write(store.Record(p))
	}
	st, err := store.LoadReader(&b)
	must(t, err)
	diffRows(t, store.Rows(st), []store.Row{{Phase: store.PhaseInFlight, Attempt: 1}, {Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op", SubmittedAt: -5}, {}})
	// The last line is bad and at the end: a torn tail, not a problem.
	if len(st.Problems) != 6 || st.DroppedBytes == 0 {
		t.Errorf("DroppedBytes %d problems %q", st.DroppedBytes, st.Problems)
	}
	for i, p := range st.Problems {
		if want := fmt.Sprintf("line %d:", i+3); !strings.Contains(p, want) {
			t.Errorf("problem %q does not name %q", p, want)
		}
	}
}

func TestLongLines(t *testing.T) {
	defer store.SetMaxRecord(2 << 20)()
	dir := t.TempDir()
	h := header(2, filepath.Join(dir, "results"))
	h.Settings = json.RawMessage(`{"prompt":"` + strings.Repeat("x", 1<<20+1000) + `"}`) // longer than the read buffer
	w, err := store.Create(filepath.Join(dir, "c"), h, nil, false)
	must(t, err)
	must(t, w.Intent(0, 1))
	must(t, w.Close())
	f, err := os.OpenFile(filepath.Join(dir, "c"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write(append(bytes.Repeat([]byte("y"), 3<<20), '\n')) // longer than any record may be
	must(t, err)
	_, err = f.Write(store.Record("I 1 1"))
	must(t, err)
	must(t, f.Close())
	st := load(t, filepath.Join(dir, "c"))
	if len(st.Header.Settings) != len(h.Settings) {
		t.Errorf("settings: %d bytes, want %d", len(st.Header.Settings), len(h.Settings))
	}
	diffRows(t, store.Rows(st), []store.Row{{Phase: store.PhaseInFlight, Attempt: 1}, {Phase: store.PhaseInFlight, Attempt: 1}})
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "line 3: record too long") {
		t.Errorf("problems %q", st.Problems)
	}
}

// TestCloseWhileBusy: whatever was accepted before Close is durable after it.
func TestCloseWhileBusy(t *testing.T) {
	t.Parallel()
	const workers, perWorker = 8, 500
	w, ckpt, _ := newRun(t, workers*perWorker, "")
	accepted := make([][]int, workers)
	started := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			started <- struct{}{}
			for i := range perWorker {
				row := g*perWorker + i
				if err := w.Submitted(row, 1, "op", t0); err != nil {
					if !errors.Is(err, store.ErrClosed) {
						t.Errorf("Submitted: %v", err)
					}
					return
				}
				accepted[g] = append(accepted[g], row)
			}
		})
	}
	for range workers {
		<-started
	}
	must(t, w.Close())
	wg.Wait()
	st := load(t, ckpt)
	n := 0
	for _, rows := range accepted {
		for _, row := range rows {
			n++
			if st.Row(row).Phase != store.PhaseSubmitted {
				t.Fatalf("row %d accepted before Close but lost", row)
			}
		}
	}
	t.Logf("%d of %d accepted before Close", n, workers*perWorker)
}

// Reopen keeps a row's attempts; Retry (resume --retry-failed) resets them, and the reset
// survives a reload before the row is sent again.
func TestRetryResetsAttempts(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 3, "id,text\n")
	for row := range 2 {
		must(t, w.Intent(row, 4))
		must(t, w.Result(row, true, []byte(fmt.Sprintf("r%d,failed\n", row))))
	}
	must(t, w.Reopen(0))
	must(t, w.Retry(1))
	must(t, w.Flush())
	st := load(t, ckpt)
	if r := st.Row(0); r.Phase != store.PhaseNew || r.Attempt != 4 {
		t.Errorf("reopened row: %+v, want new with its 4 attempts", r)
	}
	if r := st.Row(1); r.Phase != store.PhaseNew || r.Attempt != 0 {
		t.Errorf("retried row: %+v, want new with 0 attempts", r)
	}
	data, err := os.ReadFile(ckpt)
	must(t, err)
	if !bytes.Contains(data, []byte("\nU 1 0 ")) {
		t.Errorf("no U record with a reset in:\n%s", data)
	}
}

// LoadHeader reads what Load reads first, and refuses what Load refuses for want of a header.
func TestLoadHeader(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 3, "id,answer\n")
	must(t, w.Intent(0, 1))
	must(t, w.Close())
	dir := t.TempDir()
	notOne := filepath.Join(dir, "notes.txt")
	must(t, os.WriteFile(notOne, []byte("not a checkpoint\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	must(t, os.WriteFile(empty, nil, 0o600))
	st, err := store.Load(ckpt)
	must(t, err)
	for _, tc := range []struct {
		name, path string
		want       error
	}{
		{"a checkpoint", ckpt, nil},
		{"another file", notOne, store.ErrNoHeader},
		{"an empty file", empty, store.ErrNoHeader},
		{"no file", filepath.Join(dir, "none"), fs.ErrNotExist},
	} {
		h, err := store.LoadHeader(tc.path)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == nil && !reflect.DeepEqual(h, st.Header) {
			t.Errorf("%s: header %+v, Load's %+v", tc.name, h, st.Header)
		}
	}
}
