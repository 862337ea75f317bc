package store_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batchgpt/batchgpt/store"
)

// FuzzLoad feeds arbitrary bytes after a valid header: Load must never
// panic, and what it returns must be self-consistent.
func FuzzLoad(f *testing.F) {
	h := header(4, "/nonexistent/results")
	h.Version = store.Version
	hdr := store.HeaderRecord(h, []byte("pre\n"))
	for _, seed := range [][]byte{
		nil,
		store.Record("I 0 1"),
		append(store.Record("S 1 2 d7qqr3frkl81js0udlr9 1700000000000"), store.Record("R 1 0 40")...),
		append(store.Record("R 3 1 9"), store.Record("U 3")...),
		[]byte("I 0 1 00000000\n"),
		[]byte("I 0 1"),
		[]byte("\n\n\n"),
		[]byte("S 1 1 op 99999999999999999999999 12345678\n"),
		bytes.Repeat([]byte{0}, 100),
		append(store.Record("I 2 1"), "H {}\x00\xff"...),
		append(store.Record("D 2"), store.Record("D 2")...),
		append(store.Record("R 1 0 9"), append(store.Record("P 4"), store.Record("R 2 0 7")...)...),
		append(store.Record("R 0 0 6"), store.Record("F 6 0badcafe 1")...),
		store.Record("F 99 xyz 0"),
		store.Record("P -1"),
		store.Record("D 4"),
		store.Record("N 0 " + keyHex + " " + testModel + ` "row 0"`),
		append(store.Record("N 1 "+keyHex+` gpt://m "a \"b\n\u00e9 東"`), store.Record("S 1 1 op 5")...),
		append(store.Record("N 2 "+keyHex+" m \"x\""), append(store.Record("R 2 0 9"), store.Record("N 2 "+keyHex+" m \"y\"")...)...),
		append(store.Record("N 3 "+keyHex+" m \"x\""), append(store.Record("R 3 0 9"), append(store.Record("U 3"), store.Record("N 3 "+keyHex+" m \"z\"")...)...)...),
		store.Record("N 0 " + strings.ToUpper(keyHex) + " m \"x\""),
		store.Record("N 0 " + keyHex + " m \"x\" trailing"),
		store.Record("N 0 " + keyHex + " m x"),
		store.Record("N 0 " + keyHex + " m \"\\ud800\""),
		store.Record("N 4 " + keyHex + " m \"x\""),
		[]byte("N 0 " + keyHex + " m \"torn"),
		store.Record("L 2 " + linesPayload(1, 0, 20, 1, "op", 5, 2, 0, 9, 0, "", 0)),
		append(store.Record("S 3 1 op 7"), store.Record("L 1 "+linesPayload(3, -2, 9, 2, "op", 7))...),
		store.Record("L 1 " + linesPayload(9, 0, 20, 1, "", 0)),
		store.Record("T 1735787045 3"),
		store.Record("T -1 0"),
		append(store.Record("T 5 1"), store.Record("S 0 1 op 5999")...),
		append(store.Record("G Z3JvdXBz"), store.Record("G AP8")...),
		store.Record("G"),
		store.Record("G !!"),
		store.Record(`B {"step":"creating","labels":{"batchgpt_run":"x"}}`),
		append(store.Record(`B {"step":"created","dataset":"fds1"}`), store.Record("R 0 0 9")...),
		store.Record(`B {"unterminated"`),
		store.Record("B "),
		[]byte(`B {"torn":1`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tail []byte) {
		data := append(bytes.Clone(hdr), tail...)
		st, err := store.LoadReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("valid header, then %q: %v", tail, err)
		}
		if st.Len() != 4 || st.DroppedBytes < 0 || st.DroppedBytes > int64(len(tail)) || st.ResultsEnd < 4 {
			t.Fatalf("inconsistent state: rows %d dropped %d resultsEnd %d", st.Len(), st.DroppedBytes, st.ResultsEnd)
		}
		for _, s := range st.Steps {
			if !json.Valid(s) || bytes.IndexByte(s, '\n') >= 0 {
				t.Fatalf("step %q is not one line of JSON", s)
			}
		}
		doubts := 0
		for _, r := range store.Rows(st) {
			doubts += int(r.Doubts)
		}
		if doubts > st.Doubts || st.SupersededBytes() < 0 {
			t.Fatalf("rows have %d doubts, state %d; superseded %d", doubts, st.Doubts, st.SupersededBytes())
		}
		for i, r := range store.Rows(st) {
			if r.Phase > store.PhaseResolved || (r.Phase == store.PhaseSubmitted && r.OpID == "") ||
				(r.Phase == store.PhaseInFlight || r.Phase == store.PhaseSubmitted) && r.Attempt == 0 {
				t.Fatalf("row %d: %+v", i, r)
			}
		}
		for row, n := range st.Named {
			if row < 0 || row >= st.Len() || st.Row(row).Phase == store.PhaseResolved ||
				n.ID == "" || !utf8.ValidString(n.ID) || n.Model == "" || strings.ContainsAny(n.Model, " \n") {
				t.Fatalf("row %d (%+v) named %+v", row, st.Row(row), n)
			}
		}
		// Loading the good prefix gives the same rows and names and drops nothing.
		good := data[:len(data)-int(st.DroppedBytes)]
		st2, err := store.LoadReader(bytes.NewReader(good))
		if err != nil || st2.DroppedBytes != 0 {
			t.Fatalf("good prefix: %v, dropped %d", err, st2.DroppedBytes)
		}
		for i := range st.Len() {
			if st.Row(i) != st2.Row(i) {
				t.Fatalf("row %d: %+v vs prefix %+v", i, st.Row(i), st2.Row(i))
			}
		}
		if len(st.Named)+len(st2.Named) > 0 && !maps.Equal(st.Named, st2.Named) {
			t.Fatalf("names %+v vs prefix %+v", st.Named, st2.Named)
		}
		// A compaction's lean state writes the snapshot a full one does.
		full, lean, err := store.Snapshots(data)
		if err != nil || !bytes.Equal(full, lean) {
			t.Fatalf("snapshots: %v\nfull:\n%s\nlean:\n%s", err, full, lean)
		}
	})
}

// linesPayload encodes L record entries, each given as row, start - cursor, length<<1|failed,
// attempt, operation id, submission time (unix ms), as the journal does (see store/lines.go).
func linesPayload(args ...any) string {
	var raw []byte
	zz := func(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }
	prevRow, prevAt := int64(0), int64(0)
	for len(args) >= 6 {
		row, skip, fl, attempt, op, at := args[0].(int), args[1].(int), args[2].(int), args[3].(int), args[4].(string), args[5].(int)
		raw = binary.AppendUvarint(raw, zz(int64(row)-prevRow))
		raw = binary.AppendUvarint(raw, zz(int64(skip)))
		raw = binary.AppendUvarint(raw, uint64(fl))
		raw = binary.AppendUvarint(raw, uint64(attempt))
		raw = binary.AppendUvarint(raw, uint64(len(op)))
		raw = append(raw, op...)
		raw = binary.AppendUvarint(raw, zz(int64(at)-prevAt))
		prevRow, prevAt = int64(row), int64(at)
		args = args[6:]
	}
	return base64.RawStdEncoding.EncodeToString(raw)
}

// writeBigJournal writes a checkpoint of rows rows whose first done rows have each an I, S and R
// record, as a run leaves it, with results; it returns its path and where the results end (80
// bytes a line after a 10-byte preamble).
func writeBigJournal(tb testing.TB, rows, done int, results string) (string, int) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "big.ckpt")
	h := header(rows, results)
	h.Version = store.Version
	var b bytes.Buffer
	b.Write(store.HeaderRecord(h, []byte("id,answer\n")))
	end := 10
	for row := range done {
		b.Write(store.Record(fmt.Sprintf("I %d 1", row)))
		b.Write(store.Record(fmt.Sprintf("S %d 1 d7qqr3frkl%010d 1735787045%03d", row, row, row%1000)))
		end += 80
		b.Write(store.Record("R " + strconv.Itoa(row) + " 0 " + strconv.Itoa(end)))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, end
}

// BenchmarkLoad loads a 1,000,000-row journal as a run leaves it (an I, S and R record per row)
// and as a compaction leaves it (L records and their K record), so that the loads are compared
// in one command.
func BenchmarkLoad(b *testing.B) {
	const rows = 1_000_000
	plain, _ := writeBigJournal(b, rows, rows, "/nonexistent/results")
	snap := filepath.Join(b.TempDir(), "snapshot.ckpt")
	var buf bytes.Buffer
	if err := store.WriteSnapshot(plain, &buf); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(snap, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, path string
		load       func(string) (*store.State, error)
	}{
		{"journal", plain, store.Load},
		{"snapshot", snap, store.Load},
		// as Open loads it when no line needs moving: lean, decoding each L record or taking the
		// K record that sums them up
		{"snapshot-lean", snap, func(p string) (*store.State, error) { return store.LoadLeanWith(p, false) }},
		{"snapshot-lean-K", snap, func(p string) (*store.State, error) { return store.LoadLeanWith(p, true) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fi, err := os.Stat(bc.path)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(fi.Size())
			for b.Loop() {
				st, err := bc.load(bc.path)
				if err != nil {
					b.Fatal(err)
				}
				if c := st.Counts(); c.Succeeded != rows {
					b.Fatalf("counts %+v", c)
				}
			}
			b.ReportMetric(float64(fi.Size())/rows, "B/row") // after b.Loop, which clears metrics
		})
	}
}

// BenchmarkFinalize finalizes a 1,000,000-row run as a run leaves it:
// result lines in roughly input order (shuffled within windows of 250 rows,
// as concurrent requests complete), and one row in ten retried at the end.
func BenchmarkFinalize(b *testing.B) {
	const rows, window = 1_000_000, 250
	dir := b.TempDir()
	ckpt, results := filepath.Join(dir, "run.ckpt"), filepath.Join(dir, "results.csv")
	h := header(rows, results)
	h.Version = store.Version
	var j, r bytes.Buffer
	j.Write(store.HeaderRecord(h, []byte("id,answer\n")))
	r.WriteString("id,answer\n")
	result := func(row int, line string) {
		r.WriteString(line)
		j.Write(store.Record("R " + strconv.Itoa(row) + " 0 " + strconv.Itoa(r.Len())))
	}
	for k := range rows {
		row := k - k%window + (k%window*37)%window
		j.Write(store.Record(fmt.Sprintf("S %d 1 d7qqr3frkl%010d 1735787045000", row, row)))
		result(row, fmt.Sprintf("%d,the answer to row %d is a line of about eighty bytes of text\n", row, row))
	}
	for row := 0; row < rows; row += 10 {
		j.Write(store.Record("U " + strconv.Itoa(row)))
		result(row, strconv.Itoa(row)+",retried\n")
	}
	for _, inputOrder := range []bool{false, true} {
		b.Run(fmt.Sprintf("input=%v", inputOrder), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if err := os.WriteFile(ckpt, j.Bytes(), 0o600); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(results, r.Bytes(), 0o600); err != nil {
					b.Fatal(err)
				}
				w, _, err := store.Open(ckpt)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := w.Finalize(inputOrder); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkOpen opens the snapshot of a run of BATCHGPT_BENCH_ROWS rows (default 2,000,000)
// stopped with a tenth, half or nearly all of them done, as a resume does: with the snapshot's K
// record (the time should follow the rows left, not the rows done) and without it, as a snapshot
// of an earlier batchgpt (every L entry decoded), so that the two are compared in one command.
func BenchmarkOpen(b *testing.B) {
	rows := 2_000_000
	if v, err := strconv.Atoi(os.Getenv("BATCHGPT_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	for _, done := range []int{rows / 10, rows / 2, rows - rows/100} {
		dir := b.TempDir()
		ckpt, results := filepath.Join(dir, "run.ckpt"), filepath.Join(dir, "results.csv")
		plain, end := writeBigJournal(b, rows, done, results)
		var j bytes.Buffer
		if err := store.WriteSnapshot(plain, &j); err != nil {
			b.Fatal(err)
		}
		os.Remove(plain)
		snap := bytes.Clone(j.Bytes())
		k := bytes.Index(snap, []byte("\nK ")) + 1
		if k == 0 {
			b.Fatal("no K record in the snapshot")
		}
		older := append(bytes.Clone(snap[:k]), snap[k+bytes.IndexByte(snap[k:], '\n')+1:]...)
		// The results file as long as the journal says (sparse), or Open would load in full.
		f, err := os.Create(results)
		if err == nil {
			err = f.Truncate(int64(end))
		}
		if err == nil {
			err = f.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, bc := range []struct {
			name    string
			journal []byte
			wantK   int
		}{{"K", snap, 1}, {"decoded", older, 0}} {
			b.Run(fmt.Sprintf("done=%d/%s", done, bc.name), func(b *testing.B) {
				if err := os.WriteFile(ckpt, bc.journal, 0o600); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					w, st, err := store.Open(ckpt)
					if err != nil {
						b.Fatal(err)
					}
					if c := st.Counts(); c.Succeeded != done || !store.Lean(st) || store.Summaries(st) != bc.wantK {
						b.Fatalf("counts %+v, lean %v, %d K records", c, store.Lean(st), store.Summaries(st))
					}
					if err := w.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(bc.journal))/float64(done), "B/row-done")
			})
		}
	}
}
