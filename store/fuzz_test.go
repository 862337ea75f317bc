package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

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
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tail []byte) {
		data := append(bytes.Clone(hdr), tail...)
		st, err := store.LoadReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("valid header, then %q: %v", tail, err)
		}
		if len(st.Rows) != 4 || st.DroppedBytes < 0 || st.DroppedBytes > int64(len(tail)) || st.ResultsEnd < 4 {
			t.Fatalf("inconsistent state: rows %d dropped %d resultsEnd %d", len(st.Rows), st.DroppedBytes, st.ResultsEnd)
		}
		for i, r := range st.Rows {
			if r.Phase > store.PhaseResolved || (r.Phase == store.PhaseSubmitted && r.OpID == "") ||
				(r.Phase == store.PhaseInFlight || r.Phase == store.PhaseSubmitted) && r.Attempt == 0 {
				t.Fatalf("row %d: %+v", i, r)
			}
		}
		// Loading the good prefix gives the same rows and drops nothing.
		good := data[:len(data)-int(st.DroppedBytes)]
		st2, err := store.LoadReader(bytes.NewReader(good))
		if err != nil || st2.DroppedBytes != 0 {
			t.Fatalf("good prefix: %v, dropped %d", err, st2.DroppedBytes)
		}
		for i := range st.Rows {
			if st.Rows[i] != st2.Rows[i] {
				t.Fatalf("row %d: %+v vs prefix %+v", i, st.Rows[i], st2.Rows[i])
			}
		}
	})
}

// writeBigJournal writes a checkpoint of rows rows, each with an I, S and R
// record, as a run leaves it.
func writeBigJournal(tb testing.TB, rows int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "big.ckpt")
	h := header(rows, "/nonexistent/results")
	h.Version = store.Version
	var b bytes.Buffer
	b.Write(store.HeaderRecord(h, []byte("id,answer\n")))
	end := 10
	for row := range rows {
		b.Write(store.Record(fmt.Sprintf("I %d 1", row)))
		b.Write(store.Record(fmt.Sprintf("S %d 1 d7qqr3frkl%010d 1735787045%03d", row, row, row%1000)))
		end += 80
		b.Write(store.Record("R " + strconv.Itoa(row) + " 0 " + strconv.Itoa(end)))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func BenchmarkLoad(b *testing.B) {
	const rows = 1_000_000
	path := writeBigJournal(b, rows)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		st, err := store.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		if c := st.Counts(); c.Succeeded != rows {
			b.Fatalf("counts %+v", c)
		}
	}
}
