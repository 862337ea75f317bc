package batch

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestKeyListWidens(t *testing.T) {
	t.Parallel()
	// The index outgrows its bits many times; every widening must keep each record's index and
	// the fingerprint bits that remain, so the groups are those of the fingerprints.
	l := &keyList{bits: 2}
	r := rand.New(rand.NewPCG(1, 2))
	const rows = 5000
	fps := make([]uint64, rows)
	first := map[uint64]int{}
	want := map[int]int{} // follower -> leader
	for i := range rows {
		fp := r.Uint64() | 1<<63
		if i > 0 && r.IntN(4) == 0 {
			fp = fps[r.IntN(i)]
		}
		fps[i] = fp
		if j, ok := first[fp]; ok {
			want[i] = j
		} else {
			first[fp] = i
		}
		l.add(fp, i)
	}
	if l.bits != 13 {
		t.Fatalf("%d bits for %d rows", l.bits, rows)
	}
	fs := l.duplicates()
	if len(fs) != len(want) || !slices.IsSortedFunc(fs, func(a, b follower) int { return int(a.index) - int(b.index) }) {
		t.Fatalf("%d followers, want %d, sorted by index", len(fs), len(want))
	}
	for _, f := range fs {
		if w, ok := want[int(f.index)]; !ok || w != int(f.leader) {
			t.Fatalf("row %d follows %d, want %d (%v)", f.index, f.leader, w, ok)
		}
	}
	if l.recs.s != nil {
		t.Fatal("the records were not freed")
	}
}

func TestU64s(t *testing.T) {
	t.Parallel()
	for _, reserve := range []int{0, 10, minMapped + 1} {
		var a u64s
		a.reserve(reserve)
		n := 3*minMapped + 7 // across the heap and mapped blocks, growing several times
		for i := range n {
			a.add(uint64(i) * 3)
		}
		if len(a.s) != n {
			t.Fatalf("reserve %d: %d values", reserve, len(a.s))
		}
		for i, v := range a.s {
			if v != uint64(i)*3 {
				t.Fatalf("reserve %d: value %d = %d", reserve, i, v)
			}
		}
		slices.Sort(a.s)
		a.free()
		a.free()
		if a.s != nil || a.mapped {
			t.Fatal("not empty after free")
		}
	}
}
