package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sync"
)

// Key identifies a request: the SHA-256 of the request body exactly as it is sent, together with
// a scope that names where it is sent. The body is canonical already (fixed field order, compact
// JSON, the run's defaults applied), so two rows that would send the same request have the same
// key whatever their id, file or line. A JSON schema keeps its own property order: it can decide
// the order in which the model writes the fields, so a reordered schema is another request.
type Key [32]byte

// keyVersion changes whenever the way a key is computed does, so that old cache entries are
// simply never hit again instead of answering a different request.
const keyVersion = "batchgpt-request-v1"

// RequestKey returns the key of body sent to scope (e.g. the API endpoint).
func RequestKey(scope string, body []byte) Key {
	h := sha256.New()
	h.Write([]byte(keyVersion))
	h.Write([]byte{0})
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write(body)
	var k Key
	h.Sum(k[:0])
	return k
}

// String returns the key in hex.

// Pos locates a row in its input file, so that it can be read again.
type Pos struct {
	Index  int   // 0-based data row number
	Line   int   // 1-based line where the row starts
	Offset int64 // byte offset of the row's first byte
}

// keyRow is one valid row's key fingerprint while duplicates are being found.
type keyRow struct {
	hash   uint64 // the first 8 bytes of the row's Key
	index  int32
	line   int32
	offset int64
}

// follower is a row whose request is (by fingerprint) the same as an earlier row's, its leader.
type follower struct {
	leader int32
	index  int32
	line   int32
	offset int64
}

// Duplicates lists the rows of an input whose request is the same as an earlier row's. The
// earliest row of each group is its leader; the others follow it. Groups are found by a 64-bit
// fingerprint of the key, so a follower's full key must be compared with its leader's before
// the leader's answer is used for it (see [Rereader]): a fingerprint collision then simply makes
// the row independent.
//
// It takes about 24 bytes per follower; while the input is read, 24 bytes per row.
type Duplicates struct {
	followers []follower // sorted by leader, then index
}

// findDuplicates groups rows by fingerprint. It reorders keys.
func findDuplicates(keys []keyRow) *Duplicates {
	slices.SortFunc(keys, func(a, b keyRow) int {
		if a.hash != b.hash {
			if a.hash < b.hash {
				return -1
			}
			return 1
		}
		return int(a.index) - int(b.index)
	})
	d := &Duplicates{}
	for i := 0; i < len(keys); {
		j := i + 1
		for j < len(keys) && keys[j].hash == keys[i].hash {
			d.followers = append(d.followers, follower{leader: keys[i].index, index: keys[j].index, line: keys[j].line, offset: keys[j].offset})
			j++
		}
		i = j
	}
	slices.SortFunc(d.followers, func(a, b follower) int {
		if a.leader != b.leader {
			return int(a.leader) - int(b.leader)
		}
		return int(a.index) - int(b.index)
	})
	return d
}

// Count returns the number of follower rows.
func (d *Duplicates) Count() int {
	if d == nil {
		return 0
	}
	return len(d.followers)
}

// Groups calls fn for each leader with its followers, in leader order. Stopping early is
// possible by returning false.
func (d *Duplicates) Groups(fn func(leader int, followers []Pos) bool) {
	if d == nil {
		return
	}
	for i := 0; i < len(d.followers); {
		j := i
		var ps []Pos
		for j < len(d.followers) && d.followers[j].leader == d.followers[i].leader {
			f := d.followers[j]
			ps = append(ps, Pos{Index: int(f.index), Line: int(f.line), Offset: f.offset})
			j++
		}
		if !fn(int(d.followers[i].leader), ps) {
			return
		}
		i = j
	}
}

// Followers returns the rows that follow leader, in input order (nil if none).
func (d *Duplicates) Followers(leader int) []Pos {
	if d == nil {
		return nil
	}
	i, _ := slices.BinarySearchFunc(d.followers, int32(leader), func(f follower, l int32) int { return int(f.leader) - int(l) })
	var ps []Pos
	for ; i < len(d.followers) && int(d.followers[i].leader) == leader; i++ {
		f := d.followers[i]
		ps = append(ps, Pos{Index: int(f.index), Line: int(f.line), Offset: f.offset})
	}
	return ps
}

// fingerprint is the part of a key that groups rows. A variable so that a test can force
// collisions.
var fingerprint = func(k Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// ValidateDedup is [Validate] that also finds the rows whose request (under scope, see
// [RequestKey]) is the same as an earlier row's. It costs one request encoding and hash per row.
func ValidateDedup(path string, opt Options, maxErrors int, scope string) (Summary, *Duplicates, error) {
	return dedup(path, opt, maxErrors, true, scope)
}

// ScanDedup finds the duplicates of an input validated before, as ValidateDedup does, but without
// its costliest check, the set of ids: for a caller that compares the Summary's SHA-256 with that
// of the input it validated (a resumed run), so that the file is known to be the same.
func ScanDedup(path string, opt Options, scope string) (Summary, *Duplicates, error) {
	return dedup(path, opt, 1, false, scope)
}

func dedup(path string, opt Options, maxErrors int, checkIDs bool, scope string) (Summary, *Duplicates, error) {
	var keys []keyRow
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	var buf bytes.Buffer
	sum, err := validate(path, opt, maxErrors, checkIDs, func(c *config, pos rowPos, spec *rowSpec) error {
		if len(keys) == sizingRows && size > pos.offset && pos.offset > 0 {
			// Size the list for the whole file from its first rows, once: growing it by
			// doubling would leave up to twice its size in garbage at the peak of validation.
			want := int(float64(len(keys)) * float64(size) / float64(pos.offset) * 1.05)
			keys = slices.Grow(keys, min(want, MaxRowsHint)-len(keys))
		}
		body, err := c.encode(spec, &buf)
		if err != nil {
			return fmt.Errorf("line %d: %w", pos.line, err)
		}
		keys = append(keys, keyRow{hash: fingerprint(RequestKey(scope, body)),
			index: int32(pos.index), line: int32(pos.line), offset: pos.offset})
		return nil
	})
	if err != nil {
		return sum, nil, err
	}
	return sum, findDuplicates(keys), nil
}

// sizingRows is how many rows ValidateDedup reads before it sizes its list for the whole file.
const sizingRows = 4096

// MaxRowsHint bounds how many rows ValidateDedup makes room for at once.
const MaxRowsHint = 1 << 27

// Rereader reads single rows of an input file again by position, e.g. the followers of a
// leader when its answer arrives. It keeps the file open; it is safe for concurrent use.
type Rereader struct {
	mu  sync.Mutex
	r   *Reader
	buf bytes.Buffer
}

// OpenRereader opens path for reading rows by position.
func OpenRereader(path string, opt Options) (*Rereader, error) {
	r, err := Open(path, opt)
	if err != nil {
		return nil, err
	}
	return &Rereader{r: r}, nil
}

// Row reads the row at p again.
func (rr *Rereader) Row(p Pos) (Row, error) {
	if p.Offset < 0 || p.Index < 0 || p.Line < 1 {
		return Row{}, fmt.Errorf("read %s: invalid row position (offset %d, index %d, line %d)", rr.r.path, p.Offset, p.Index, p.Line)
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	pos := rowPos{index: p.Index, line: p.Line, offset: p.Offset}
	spec, errs, err := rr.r.sc.reread(pos)
	if err != nil {
		return Row{}, fmt.Errorf("read %s at offset %d: %w", rr.r.path, p.Offset, err)
	}
	return rr.r.c.row(pos, spec, errs, &rr.buf)
}

// Close closes the file.
func (rr *Rereader) Close() error { return rr.r.Close() }
