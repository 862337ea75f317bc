package job

import (
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// TestNameIndex: the latest name of each row is found by its id; an id whose row was named again
// under another id is not; ids with equal hashes are told apart by the id itself.
func TestNameIndex(t *testing.T) {
	key := func(i int) [32]byte { return [32]byte{byte(i), byte(i >> 8), 0xee} }
	type name struct {
		row   int
		id    string
		key   int
		model string
	}
	type want struct {
		id    string
		key   int
		model string
		ok    bool
	}
	for _, tc := range []struct {
		desc     string
		names    []name
		sameHash bool // every id hashes alike
		lookups  []want
	}{
		{"one name a row", []name{{0, "a", 1, "m1"}, {1, "b", 2, "m2"}, {2, "c", 3, "m1"}},
			false, []want{{"a", 1, "m1", true}, {"b", 2, "m2", true}, {"c", 3, "m1", true}, {"d", 0, "", false}}},
		{"a row named again: the latest counts", []name{{0, "a", 1, "m1"}, {1, "b", 2, "m1"}, {0, "a", 7, "m2"}},
			false, []want{{"a", 7, "m2", true}, {"b", 2, "m1", true}}},
		{"a row named again under another id", []name{{0, "old", 1, "m1"}, {0, "new", 2, "m1"}},
			false, []want{{"new", 2, "m1", true}, {"old", 0, "", false}}},
		{"equal hashes", []name{{0, "a", 1, "m1"}, {1, "b", 2, "m1"}, {2, "c", 3, "m1"}},
			true, []want{{"a", 1, "m1", true}, {"b", 2, "m1", true}, {"c", 3, "m1", true}, {"d", 0, "", false}}},
		{"none", nil, false, []want{{"a", 0, "", false}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			x := newNameIndex()
			if tc.sameHash {
				x.hash = func(string) uint64 { return 42 }
			}
			for _, n := range tc.names {
				if err := x.add(n.row, store.Named{ID: n.id, Key: key(n.key), Model: n.model}); err != nil {
					t.Fatal(err)
				}
			}
			x.build()
			for _, w := range tc.lookups {
				k, m, ok := x.lookup(w.id)
				var wk [32]byte
				if w.ok {
					wk = key(w.key)
				}
				if ok != w.ok || k != wk || m != w.model {
					t.Errorf("lookup(%q) = %x %q %v; want %x %q %v", w.id, k, m, ok, wk, w.model, w.ok)
				}
			}
			rows := map[int]bool{}
			for _, n := range tc.names {
				rows[n.row] = true
			}
			if x.len() != len(rows) {
				t.Errorf("%d entries kept, want one for each of the %d rows", x.len(), len(rows))
			}
		})
	}
}
