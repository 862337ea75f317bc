package batch_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// groupsOf lists d's groups as leader -> followers' positions.
func groupsOf(d *batch.Duplicates) map[int][]batch.Pos {
	out := map[int][]batch.Pos{}
	d.Groups(func(leader int, fs []batch.Pos) bool {
		out[leader] = fs
		return true
	})
	return out
}

// TestDuplicatesRoundTrip: what a checkpoint keeps of the groups decodes to the same groups,
// positions included, so that a resume reads the followers where the run found them.
func TestDuplicatesRoundTrip(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("\n")
	for i := range 500 {
		fmt.Fprintf(&b, "{\"id\":\"r%d\",\"prompt\":\"question %d\"}\n", i, i%37)
		if i%11 == 0 {
			b.WriteString("\n")
		}
	}
	path := writeInput(t, "in.jsonl", b.String())
	sum, dups, err := batch.ValidateDedup(path, defaults, 0, "scope")
	if err != nil {
		t.Fatal(err)
	}
	if dups.Count() != 500-37 {
		t.Fatalf("%d followers, want %d", dups.Count(), 500-37)
	}
	blob, err := dups.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if per := float64(len(blob)) / float64(dups.Count()); per > 12 {
		t.Errorf("%.1f bytes a follower", per)
	}
	got, err := batch.DecodeDuplicates(blob, sum.Rows)
	if err != nil {
		t.Fatal(err)
	}
	if got.Count() != dups.Count() || !reflect.DeepEqual(groupsOf(got), groupsOf(dups)) {
		t.Fatalf("decoded groups differ: %d followers, want %d", got.Count(), dups.Count())
	}
	if _, err := batch.DecodeDuplicates(blob, sum.Rows-1); err == nil {
		t.Error("groups of 500 rows decoded for an input of 499")
	}
	for cut := range len(blob) - 1 {
		if _, err := batch.DecodeDuplicates(blob[:cut+1], sum.Rows); err == nil {
			t.Fatalf("blob cut to %d of %d bytes decoded", cut+1, len(blob))
		}
	}
	if none, err := (*batch.Duplicates)(nil).MarshalBinary(); err != nil || none != nil {
		t.Errorf("nil Duplicates: %q, %v", none, err)
	}
	if d, err := batch.DecodeDuplicates(nil, 10); err != nil || d.Count() != 0 {
		t.Errorf("empty blob: %v, %v", d, err)
	}
}

func TestDecodeDuplicatesRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"format", []byte{2, 1, 0, 1, 1, 0}},
		{"follower before its leader", []byte{1, 1, 3, 0, 1, 0}},
		{"follower out of range", []byte{1, 1, 0, 10, 1, 0}},
		{"no line", []byte{1, 1, 0, 1, 0, 0}},
		{"out of order", []byte{1, 2, 0, 2, 1, 0, 0, 1, 1, 0}},
		{"trailing bytes", []byte{1, 1, 0, 1, 1, 0, 7}},
		{"count past the bytes", []byte{1, 9, 0, 1, 1, 0}},
	} {
		if _, err := batch.DecodeDuplicates(tc.blob, 10); err == nil {
			t.Errorf("%s: decoded", tc.name)
		}
	}
}

func FuzzDecodeDuplicates(f *testing.F) {
	f.Add([]byte{1, 2, 0, 1, 1, 0, 0, 1, 2, 9}, 10)
	f.Add([]byte{1, 1, 3, 0, 1, 0}, 10)
	f.Fuzz(func(t *testing.T, blob []byte, rows int) {
		if rows < 0 || rows > 1<<20 {
			return
		}
		d, err := batch.DecodeDuplicates(blob, rows)
		if err != nil {
			return
		}
		// Whatever decodes is a set of groups of that input that encodes back the same.
		d.Groups(func(leader int, fs []batch.Pos) bool {
			for _, p := range fs {
				if p.Index <= leader || p.Index >= rows || p.Line < 1 || p.Offset < 0 {
					t.Fatalf("leader %d follower %+v in %d rows", leader, p, rows)
				}
			}
			return true
		})
		again, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if d2, err := batch.DecodeDuplicates(again, rows); err != nil || !reflect.DeepEqual(groupsOf(d2), groupsOf(d)) {
			t.Fatalf("re-encoded groups differ: %v", err)
		}
	})
}

// TestChunkRereader: rows read again by position are verified against the chunk table, chunk by
// chunk: a row in a chunk whose bytes changed is refused, one in an unchanged chunk is read.
func TestChunkRereader(t *testing.T) {
	t.Parallel()
	for _, in := range chunkInputs()[:3] {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			path, rows, sum, off := chunked(t, in)
			changed := sum.Chunks[3]
			rr, err := batch.OpenChunkRereader(path, in.opt, sum.Size, sum.Chunks)
			if err != nil {
				t.Fatal(err)
			}
			defer rr.Close()
			pos := func(r batch.Row) batch.Pos { return batch.Pos{Index: r.Index, Line: r.Line, Offset: r.Offset} }
			before := rows[changed.Row-1] // in chunk 2
			if got, err := rr.Row(pos(before)); err != nil || !reflect.DeepEqual(got, before) {
				t.Fatalf("row %d before the change: %v", before.Index, err)
			}
			if err := os.WriteFile(path, []byte(changeAt(t, in.content, off)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = rr.Row(pos(rows[changed.Row]))
			var ce *batch.ChangedError
			if !errors.As(err, &ce) || ce.Chunk != 3 {
				t.Fatalf("a row of the changed chunk: %v, want chunk 3 changed", err)
			}
			last := rows[len(rows)-1]
			if got, err := rr.Row(pos(last)); err != nil || !reflect.DeepEqual(got, last) {
				t.Fatalf("the last row, in an unchanged chunk: %v", err)
			}
			if _, err := rr.Row(batch.Pos{Index: 0, Line: 1, Offset: sum.Size}); err == nil {
				t.Fatal("a row past the end was read")
			}
		})
	}
}
