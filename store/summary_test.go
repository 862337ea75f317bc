package store_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// summarySnapshot returns the snapshot of a journal of rows rows: most resolved in runs (some
// failed, some sent twice, some answered by the cache), a few open in every phase. Its resolved
// rows are in L records and a K record sums them up.
func summarySnapshot(t testing.TB, rows int) []byte {
	t.Helper()
	h := header(rows, "/nonexistent/results")
	h.Version = store.Version
	var j bytes.Buffer
	j.Write(store.HeaderRecord(h, []byte("id,answer\n")))
	end := len("id,answer\n")
	for row := range rows {
		op := fmt.Sprintf("d7q%017d", row)
		switch {
		case row%40 == 39:
			continue // never sent
		case row%40 == 38:
			j.Write(store.Record(fmt.Sprintf("I %d 1", row))) // in flight
			continue
		case row%40 == 37:
			j.Write(store.Record(fmt.Sprintf("S %d 1 %s 1735787045000", row, op))) // pending
			continue
		case row >= 100 && row < 120:
			end += 20 // answered by the cache: no operation
			j.Write(store.Record(fmt.Sprintf("R %d 0 %d", row, end)))
			continue
		case row >= 60 && row < 70:
			j.Write(store.Record(fmt.Sprintf("S %d 1 %s 1735787045000", row, op)))
			j.Write(store.Record(fmt.Sprintf("D %d", row)))
			j.Write(store.Record(fmt.Sprintf("S %d 2 %s 1735787046000", row, op)))
		default:
			j.Write(store.Record(fmt.Sprintf("S %d 1 %s 1735787045000", row, op)))
		}
		end += 30
		failed := 0
		if row >= 20 && row < 25 {
			failed = 1
		}
		j.Write(store.Record(fmt.Sprintf("R %d %d %d", row, failed, end)))
	}
	full, lean, err := store.Snapshots(j.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(full, lean) {
		t.Fatalf("snapshots differ:\n%s\nlean:\n%s", full, lean)
	}
	if !bytes.Contains(full, []byte("\nK ")) {
		t.Fatalf("no K record in the snapshot:\n%s", full)
	}
	return full
}

// sameLean checks that a, loaded lean with K records, is b, loaded lean decoding every L record.
func sameLean(t *testing.T, a, b *store.State) {
	t.Helper()
	sameAsFull(t, a, b)
	if va, vb := store.LeanView(a), store.LeanView(b); va != vb {
		t.Errorf("lean states differ:\n%s\n%s", va, vb)
	}
}

// TestSummaryReplaysLines: Open's lean load takes a snapshot's K record in place of its L
// records, and ends with the state decoding them gives; without the K record (a snapshot of an
// older batchgpt), or with a block it does not match, it decodes them.
func TestSummaryReplaysLines(t *testing.T) {
	t.Parallel()
	snap := summarySnapshot(t, 300)
	k := bytes.Index(snap, []byte("\nK ")) + 1
	kEnd := k + bytes.IndexByte(snap[k:], '\n') + 1
	firstL := bytes.Index(snap, []byte("\nL ")) + 1
	after := append(bytes.Clone(snap), store.Record("U 5")...) // a resolved row reopened after the snapshot
	after = append(after, store.Record("R 301 0 99999")...)    // a bad record (row out of range)
	after = append(after, store.Record("R 7 0 99999")...)      // and one answered again
	for _, tc := range []struct {
		name       string
		data       []byte
		wantK      int
		superseded bool // a line superseded since: a lean state knows no more, and Open loads in full
	}{
		{"snapshot", snap, 1, false},
		{"records appended since", after, 1, true},
		{"no K record", append(bytes.Clone(snap[:k]), snap[kEnd:]...), 0, false},
		{"K record damaged", append(append(bytes.Clone(snap[:k]), strings.Replace(string(snap[k:kEnd]), " ", "  ", 1)...), snap[kEnd:]...), 0, false},
		{"an L record damaged", append(append(bytes.Clone(snap[:firstL+4]), 'x'), snap[firstL+5:]...), 0, false},
		{"an L record missing", append(bytes.Clone(snap[:firstL]), snap[firstL+bytes.IndexByte(snap[firstL:], '\n')+1:]...), 0, false},
		{"torn in the K record", snap[:kEnd-3], 0, false},
		{"torn in an L record", snap[:firstL+7], 0, false},
		{"K record alone", append(bytes.Clone(snap[:firstL]), snap[k:]...), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			summed, decoded, err1, err2 := store.LoadLeanTwice(tc.data)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			sameLean(t, summed, decoded)
			if n := store.Summaries(summed); n != tc.wantK {
				t.Errorf("%d K records taken, want %d", n, tc.wantK)
			}
			if tc.wantK == 0 && store.Summaries(decoded) != 0 {
				t.Error("a load without K records took one")
			}
			full, err := store.LoadReader(bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if tc.superseded {
				diffRows(t, store.Rows(summed), store.Rows(full))
				return
			}
			sameAsFull(t, summed, full)
		})
	}
}

// FuzzSummary cuts a snapshot with a K record and puts arbitrary bytes in the gap: Open's lean
// load, which takes K records in place of L records, must end with the state decoding every L
// record gives, problems and all.
func FuzzSummary(f *testing.F) {
	snap := summarySnapshot(f, 200)
	k := bytes.Index(snap, []byte("\nK ")) + 1
	firstL := bytes.Index(snap, []byte("\nL ")) + 1
	for _, seed := range []struct {
		i, j int
		junk string
	}{
		{0, 0, ""},
		{len(snap), len(snap), string(store.Record("U 3"))},
		{k, k, string(store.Record("L 1 " + linesPayload(39, 0, 20, 1, "", 0)))},
		{k, k, string(store.Record("P 5"))},
		{firstL, firstL, string(store.Record("R 39 1 7000"))},
		{firstL + 3, firstL + 9, "garbage"},
		{k + 2, k + 4, "9"},
		{k - 1, k, ""},
	} {
		f.Add(uint32(seed.i), uint32(seed.j), []byte(seed.junk))
	}
	f.Fuzz(func(t *testing.T, a, b uint32, junk []byte) {
		i, j := int(a%uint32(len(snap)+1)), int(b%uint32(len(snap)+1))
		if i > j {
			i, j = j, i
		}
		data := append(append(bytes.Clone(snap[:i]), junk...), snap[j:]...)
		summed, decoded, err1, err2 := store.LoadLeanTwice(data)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors %v and %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		sameLean(t, summed, decoded)
	})
}
