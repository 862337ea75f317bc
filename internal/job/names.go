package job

import (
	"cmp"
	"hash/maphash"
	"slices"

	"github.com/batchgpt/batchgpt/store"
)

// nameIndex finds the latest name (request key and model) an earlier run journaled for a row,
// by the row's id, for backfillCache. A map of store.Named by row and another by id took 228
// bytes a name; this keeps 64 bytes and the id's, in two flat slices, so that the names a
// ten-million-row journal holds since its last snapshot (hundreds of thousands) fit in tens of
// megabytes.
type nameIndex struct {
	hash    func(id string) uint64
	entries []nameEntry // by hash of the id once built
	ids     []byte      // the ids of all entries, one after another
	models  []string    // few: the entries keep an index
	last    int         // of the model of the previous entry
}

type nameEntry struct {
	key   [32]byte
	hash  uint64
	idAt  int64
	idLen uint32
	row   uint32 // store.MaxRows fits
	model uint32
}

// readNames builds the index of the checkpoint at path from its N records.
func readNames(path string) (*nameIndex, error) {
	x := newNameIndex()
	if err := store.EachNamed(path, x.add); err != nil {
		return nil, err
	}
	x.build()
	return x, nil
}

func newNameIndex() *nameIndex {
	seed := maphash.MakeSeed()
	return &nameIndex{hash: func(id string) uint64 { return maphash.String(seed, id) }}
}

func (x *nameIndex) add(row int, n store.Named) error {
	m := x.last
	if m >= len(x.models) || x.models[m] != n.Model {
		if m = slices.Index(x.models, n.Model); m < 0 {
			m = len(x.models)
			x.models = append(x.models, n.Model)
		}
		x.last = m
	}
	x.entries = append(x.entries, nameEntry{key: n.Key, hash: x.hash(n.ID),
		idAt: int64(len(x.ids)), idLen: uint32(len(n.ID)), row: uint32(row), model: uint32(m)})
	x.ids = append(x.ids, n.ID...)
	return nil
}

// build keeps the latest name of each row (a row reopened and submitted again is named again)
// and orders the entries for lookup. The ids of dropped names stay in ids: few rows are named
// twice.
func (x *nameIndex) build() {
	// Stable: entries of a row stay in journal order, so the last of each run is its latest.
	slices.SortStableFunc(x.entries, func(a, b nameEntry) int { return cmp.Compare(a.row, b.row) })
	kept := x.entries[:0]
	for i, e := range x.entries {
		if i+1 < len(x.entries) && x.entries[i+1].row == e.row {
			continue
		}
		kept = append(kept, e)
	}
	x.entries = kept
	slices.SortFunc(x.entries, func(a, b nameEntry) int { return cmp.Compare(a.hash, b.hash) })
}

func (x *nameIndex) len() int { return len(x.entries) }

// lookup returns the latest name of the row with id id. Ids are compared in full, so two ids
// with the same hash are told apart.
func (x *nameIndex) lookup(id string) (key [32]byte, model string, ok bool) {
	h := x.hash(id)
	i, _ := slices.BinarySearchFunc(x.entries, h, func(e nameEntry, h uint64) int { return cmp.Compare(e.hash, h) })
	for ; i < len(x.entries) && x.entries[i].hash == h; i++ {
		e := &x.entries[i]
		if string(x.ids[e.idAt:e.idAt+int64(e.idLen)]) == id {
			return e.key, x.models[e.model], true
		}
	}
	return key, "", false
}
