package batch

// u64s is a growable array of uint64 for the per-row structures of a pass over an input (the id
// hashes, the request fingerprints): one flat block, kept out of the Go heap where the system
// allows it (see allocU64). Out of the heap it neither raises the collector's goal (the heap may
// grow by a share of its live size before a collection: tens of megabytes more at ten million
// rows) nor costs a scan, and it goes back to the system the moment it is freed. Pages that are
// never written are never resident, so room reserved from an estimate costs nothing until used.
type u64s struct {
	s      []uint64
	mapped bool // s came from allocU64 and must be given back with freeU64
}

// minMapped is the smallest block worth a mapping of its own; smaller ones live in the heap.
const minMapped = 1 << 16 // 512 KiB

// add appends v, growing the block by a quarter when it is full: growth copies the whole block,
// and each copy briefly needs old and new side by side, so reserve is meant to be called first.
func (a *u64s) add(v uint64) {
	if len(a.s) == cap(a.s) {
		a.reserve(max(cap(a.s)+cap(a.s)/4, 1024))
	}
	a.s = append(a.s, v)
}

// reserve makes room for n values in all.
func (a *u64s) reserve(n int) {
	if n <= cap(a.s) {
		return
	}
	var s []uint64
	mapped := false
	if n >= minMapped {
		s, mapped = allocU64(n)
	}
	if s == nil {
		s = make([]uint64, 0, n)
	}
	s = append(s[:0], a.s...)
	a.free()
	a.s, a.mapped = s, mapped
}

// free gives the block back; a is empty afterwards.
func (a *u64s) free() {
	if a.mapped {
		freeU64(a.s)
	}
	a.s, a.mapped = nil, false
}
