package batch

import (
	"fmt"
	"hash/maphash"
	"slices"
)

// idSet finds the rows whose id is that of an earlier row, in constant memory but for 8 bytes
// per row: a 64-bit hash of each id in a flat array (no map: a map's buckets and its doubling
// would cost several times that). At the end of the pass the array is sorted in place; if no
// hash occurs twice, no id does, and that is all (two of the ten million hashes of a valid input
// of ten million rows are equal in about one run in 370,000). Otherwise the hashes that repeat are the suspects, and
// the rows are read a second time (recheckRows): a row whose hash is a suspect is compared with
// the first row of that hash, re-read from the file, so that a hash collision never reports a
// false duplicate and the memory does not depend on the ids' lengths.
type idSet struct {
	seed   maphash.Seed
	hashes u64s
	// After suspects: the hashes that occur more than once, sorted, and for each of them the
	// first row seen with it in the second pass (line 0: none yet).
	sus    []uint64
	firsts []rowPos
	// exact holds the ids, and their first rows, whose hash is a suspect's but which differ from
	// that hash's first row: only hash collisions put ids there.
	exact map[string]rowPos
}

// idHash is a variable so that a test can force collisions.
var idHash = maphash.String

func newIDSet() *idSet { return &idSet{seed: maphash.MakeSeed()} }

// add notes a row's id.
func (s *idSet) add(id string) { s.hashes.add(idHash(s.seed, id)) }

// suspects sorts the hashes and reports whether any occurs twice; it keeps those only.
func (s *idSet) suspects() bool {
	h := s.hashes.s
	slices.Sort(h)
	n := 0 // hashes that repeat, moved to the front of h
	for i := 1; i < len(h); i++ {
		if h[i] == h[i-1] && (n == 0 || h[n-1] != h[i]) {
			h[n] = h[i]
			n++
		}
	}
	if n > 0 {
		s.sus = slices.Clone(h[:n])
		s.firsts = make([]rowPos, n)
	}
	s.hashes.free()
	return n > 0
}

// check is the second pass's: it returns where id was first seen if the row at pos repeats an id,
// re-reading the first row of its hash through sc.
func (s *idSet) check(sc scanner, id string, pos rowPos) (*rowPos, error) {
	g, ok := slices.BinarySearch(s.sus, idHash(s.seed, id))
	if !ok {
		return nil, nil
	}
	first := &s.firsts[g]
	if first.line == 0 {
		*first = pos
		return nil, nil
	}
	spec, _, err := sc.reread(*first)
	if err != nil {
		return nil, fmt.Errorf("re-read line %d: %w", first.line, err)
	}
	if spec.id == id {
		return first, nil
	}
	if prev, ok := s.exact[id]; ok {
		return &prev, nil
	}
	if s.exact == nil {
		s.exact = make(map[string]rowPos)
	}
	s.exact[id] = pos
	return nil, nil
}

// free gives the memory back.
func (s *idSet) free() {
	s.hashes.free()
	s.sus, s.firsts, s.exact = nil, nil, nil
}
