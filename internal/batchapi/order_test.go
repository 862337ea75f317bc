package batchapi

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestSortFiles(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"10.parquet", "2.parquet", "1.parquet"}, []string{"1.parquet", "2.parquet", "10.parquet"}},
		{[]string{"main", "b.parquet", "3.parquet", "a.parquet"}, []string{"3.parquet", "a.parquet", "b.parquet", "main"}},
		{[]string{"dir/12.parquet", "dir/9.parquet", "x/1"}, []string{"x/1", "dir/9.parquet", "dir/12.parquet"}},
		// Numbers beyond int64 compare by value; leading zeros do not count, then the key decides.
		{[]string{"99999999999999999999999.parquet", "100000000000000000000000.parquet", "007.parquet", "7.parquet"},
			[]string{"007.parquet", "7.parquet", "99999999999999999999999.parquet", "100000000000000000000000.parquet"}},
		// A stem with a sign or a dot is not numeric; an empty stem neither.
		{[]string{"-1.parquet", "1.5.parquet", "2.parquet", ".parquet"}, []string{"2.parquet", "-1.parquet", ".parquet", "1.5.parquet"}},
		{nil, nil},
	} {
		got := slices.Clone(tc.in)
		sortFiles(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("sortFiles(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzSortFiles checks the rule's properties on any keys: the result is a permutation of them,
// the same whatever their order, numeric stems come first in nondecreasing value, then the
// others by stem.
func FuzzSortFiles(f *testing.F) {
	f.Add("1.parquet,10.parquet,2.parquet,main", uint64(1))
	f.Add("a/3,b/03,c.x.y,,0", uint64(2))
	f.Fuzz(func(t *testing.T, joined string, seed uint64) {
		keys := strings.Split(joined, ",")
		a := slices.Clone(keys)
		sortFiles(a)
		b := slices.Clone(keys)
		rand.New(rand.NewPCG(seed, seed)).Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
		sortFiles(b)
		if !slices.Equal(a, b) {
			t.Fatalf("order depends on the input's: %q vs %q", a, b)
		}
		if !slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(keys))) {
			t.Fatalf("not a permutation: %q of %q", a, keys)
		}
		seenOther := false
		for i, k := range a {
			n, isNum := numeric(stem(k))
			if !isNum {
				seenOther = true
				if i > 0 {
					if _, prevNum := numeric(stem(a[i-1])); !prevNum && stem(a[i-1]) > stem(k) {
						t.Fatalf("%q before %q", a[i-1], k)
					}
				}
				continue
			}
			if seenOther {
				t.Fatalf("numeric %q after a non-numeric key in %q", k, a)
			}
			if i > 0 {
				if p, _ := numeric(stem(a[i-1])); p.cmp(n) > 0 {
					t.Fatalf("%q before %q", a[i-1], k)
				}
			}
		}
	})
}
