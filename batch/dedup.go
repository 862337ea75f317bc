package batch

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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

// keyList holds one record per valid row while duplicates are found: the row's fingerprint in the
// high bits and its index in the low bits, so that sorting the records sorts the rows by
// fingerprint, then by index, in 8 bytes a row. The index takes as many bits as the rows need
// (20 up to a million rows, 24 up to sixteen million): the fingerprint keeps the other 40 or
// more, and two different requests share them (a group the full keys then tell apart, see
// [Duplicates]) about 45 times in ten million rows of different requests, 0.03 times in a million.
type keyList struct {
	recs u64s
	bits uint // of the index
}

func newKeyList() *keyList { return &keyList{bits: 20} }

func (l *keyList) mask() uint64 { return 1<<l.bits - 1 }

// add notes row index's fingerprint fp.
func (l *keyList) add(fp uint64, index int) {
	for uint64(index) > l.mask() {
		// One more bit for the index, one fewer for the fingerprint: its lowest goes.
		old := l.mask()
		l.bits++
		for i, r := range l.recs.s {
			l.recs.s[i] = r&^l.mask() | r&old
		}
	}
	l.recs.add(fp&^l.mask() | uint64(index))
}

// duplicates sorts the records in place and returns the rows that follow an earlier row with
// their leader, sorted by index, without their line and offset. It frees the records.
func (l *keyList) duplicates() []follower {
	recs, mask := l.recs.s, l.mask()
	defer l.recs.free()
	slices.Sort(recs)
	n := 0
	for i := 1; i < len(recs); i++ {
		if recs[i]&^mask == recs[i-1]&^mask {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	fs := make([]follower, 0, n) // counted first: no garbage from growing it
	for i := 0; i < len(recs); {
		j := i + 1
		for ; j < len(recs) && recs[j]&^mask == recs[i]&^mask; j++ {
			fs = append(fs, follower{leader: int32(recs[i] & mask), index: int32(recs[j] & mask)})
		}
		i = j
	}
	slices.SortFunc(fs, func(a, b follower) int { return int(a.index) - int(b.index) })
	return fs
}

// follower is a row whose request is (by fingerprint) the same as an earlier row's, its leader.
type follower struct {
	leader int32
	index  int32
	line   int32
	offset int64
}

// Duplicates lists the rows of an input whose request is the same as an earlier row's. The
// earliest row of each group is its leader; the others follow it. Groups are found by a
// fingerprint of the key (see keyList), so a follower's full key must be compared with its
// leader's before the leader's answer is used for it (see [Rereader]): a fingerprint collision
// then simply makes the row independent.
//
// It takes 24 bytes per follower; while the input is read, 8 bytes per row.
type Duplicates struct {
	followers []follower // sorted by leader, then index
}

// placeFollowers fills in the line and offset of the followers fs, sorted by index, reading the
// rows of path again without parsing them (their positions are all that is needed), up to the
// last follower; then it sorts fs by leader, then index.
func placeFollowers(c *config, path string, fs []follower) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer f.Close()
	sc, hdrErrs, err := newScanner(c, f, f)
	if err == nil && sc == nil {
		err = fmt.Errorf("the header has changed: %w", errors.Join(errs(hdrErrs)...))
	}
	for i := 0; i < len(fs) && err == nil; {
		var pos rowPos
		pos, err = sc.skip()
		if err == io.EOF {
			err = fmt.Errorf("no row %d: the input has changed", fs[i].index+1)
		}
		if err == nil && pos.index == int(fs[i].index) {
			fs[i].line, fs[i].offset = int32(pos.line), pos.offset
			i++
		}
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	slices.SortFunc(fs, func(a, b follower) int {
		if a.leader != b.leader {
			return int(a.leader) - int(b.leader)
		}
		return int(a.index) - int(b.index)
	})
	return nil
}

func errs(ies []*InputError) []error {
	out := make([]error, len(ies))
	for i, e := range ies {
		out[i] = e
	}
	return out
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
func ValidateDedup(path string, opt Options, maxErrors int, scope string, po ...PassOption) (Summary, *Duplicates, error) {
	return dedup(path, opt, maxErrors, true, scope, passOf(po))
}

// ScanDedup finds the duplicates of an input validated before, as ValidateDedup does, but without
// its costliest check, the set of ids: for a caller that compares the Summary's SHA-256 with that
// of the input it validated (a resumed run), so that the file is known to be the same.
func ScanDedup(path string, opt Options, scope string, po ...PassOption) (Summary, *Duplicates, error) {
	return dedup(path, opt, 1, false, scope, passOf(po))
}

func dedup(path string, opt Options, maxErrors int, checkIDs bool, scope string, pc passConfig) (Summary, *Duplicates, error) {
	keys := newKeyList()
	defer keys.recs.free()
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	var c *config
	var buf bytes.Buffer
	sum, err := validate(path, opt, maxErrors, checkIDs, func(cfg *config, pos rowPos, spec *rowSpec) error {
		c = cfg
		if len(keys.recs.s) == sizingRows {
			// Room for the whole file from its first rows, once: growing the list as it
			// fills would copy it, with old and new side by side at the peak of validation.
			keys.recs.reserve(rowsHint(sizingRows, pos.offset, size))
		}
		body, err := c.encode(spec, &buf)
		if err != nil {
			return fmt.Errorf("line %d: %w", pos.line, err)
		}
		keys.add(fingerprint(RequestKey(scope, body)), pos.index)
		return nil
	}, pc)
	if err != nil {
		return sum, nil, err
	}
	d := &Duplicates{followers: keys.duplicates()}
	if len(d.followers) > 0 {
		if err := placeFollowers(c, path, d.followers); err != nil {
			return sum, nil, err
		}
	}
	return sum, d, nil
}

// sizingRows is how many rows ValidateDedup reads before it sizes its list for the whole file.
const sizingRows = 4096

// MaxRowsHint bounds how many rows ValidateDedup makes room for at once.
const MaxRowsHint = 1 << 27

// Rereader reads single rows of an input file again by position, e.g. the followers of a
// leader when its answer arrives. It keeps the file open; it is safe for concurrent use.
type Rereader struct {
	mu       sync.Mutex
	r        *Reader
	buf      bytes.Buffer
	cf       *chunkFile // nil: not verified against a chunk table
	verified []bool     // of cf's chunks
}

// OpenChunkRereader is OpenRereader for an input validated before, whose size and chunk table
// were size and chunks (as OpenChunks takes them): the size and preamble are checked at once, and
// each chunk is hashed again the first time a row in it is read, so that Row returns a
// *ChangedError instead of a row whose bytes differ from the validated ones.
func OpenChunkRereader(path string, opt Options, size int64, chunks []Chunk) (*Rereader, error) {
	cf, err := openChunkFile(path, size, chunks)
	if err != nil {
		return nil, err
	}
	rr, err := OpenRereader(path, opt)
	if err != nil {
		cf.f.Close()
		return nil, err
	}
	rr.cf, rr.verified = cf, make([]bool, len(chunks))
	return rr, nil
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
	if rr.cf != nil {
		// The chunk holding the row: the last that starts at or before it (chunk 0, the
		// preamble, holds no row).
		k, _ := slices.BinarySearchFunc(rr.cf.chunks[1:], p.Offset+1, func(c Chunk, off int64) int { return cmp.Compare(c.Offset, off) })
		if k == 0 || p.Offset >= rr.cf.size {
			return Row{}, fmt.Errorf("read %s: no row at offset %d", rr.r.path, p.Offset)
		}
		if !rr.verified[k] {
			if err := rr.cf.verify(k); err != nil {
				return Row{}, err
			}
			rr.verified[k] = true
		}
	}
	pos := rowPos{index: p.Index, line: p.Line, offset: p.Offset}
	spec, errs, err := rr.r.sc.reread(pos)
	if err != nil {
		return Row{}, fmt.Errorf("read %s at offset %d: %w", rr.r.path, p.Offset, err)
	}
	return rr.r.c.row(pos, spec, errs, &rr.buf)
}

// Close closes the file.
func (rr *Rereader) Close() error {
	if rr.cf != nil {
		rr.cf.f.Close()
	}
	return rr.r.Close()
}

// groupsFormat is the first byte of an encoded Duplicates ([Duplicates.MarshalBinary]).
const groupsFormat = 1

// MarshalBinary encodes d (nil or empty: nil) so that a checkpoint can keep the groups and a
// resume need not read the whole input again to find them. About 10 bytes a follower.
func (d *Duplicates) MarshalBinary() ([]byte, error) {
	if d.Count() == 0 {
		return nil, nil
	}
	out := binary.AppendUvarint([]byte{groupsFormat}, uint64(len(d.followers)))
	prev := int32(0)
	for _, f := range d.followers {
		out = binary.AppendUvarint(out, uint64(f.leader-prev))
		out = binary.AppendUvarint(out, uint64(f.index-f.leader))
		out = binary.AppendUvarint(out, uint64(f.line))
		out = binary.AppendUvarint(out, uint64(f.offset))
		prev = f.leader
	}
	return out, nil
}

// DecodeDuplicates decodes what MarshalBinary encoded for an input of rows rows, checking that
// it describes groups of that input (leaders before their followers, sorted, in range).
func DecodeDuplicates(b []byte, rows int) (*Duplicates, error) {
	if len(b) == 0 {
		return &Duplicates{}, nil
	}
	if b[0] != groupsFormat {
		return nil, fmt.Errorf("duplicate groups: unknown format %d", b[0])
	}
	b = b[1:]
	next := func() (uint64, error) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, errors.New("duplicate groups: truncated")
		}
		b = b[k:]
		return v, nil
	}
	n, err := next()
	if err != nil {
		return nil, err
	}
	if n > uint64(rows) || n > uint64(len(b))/4 {
		return nil, fmt.Errorf("duplicate groups: %d followers in %d rows", n, rows)
	}
	fs := make([]follower, n)
	var leader, index uint64
	for i := range fs {
		var v [4]uint64
		for k := range v {
			if v[k], err = next(); err != nil {
				return nil, err
			}
		}
		prevLeader, prevIndex := leader, index
		leader += v[0]
		index = leader + v[1]
		switch {
		case v[1] == 0 || index >= uint64(rows) || leader >= uint64(rows):
			return nil, fmt.Errorf("duplicate groups: follower %d of leader %d out of range (%d rows)", index, leader, rows)
		case i > 0 && leader == prevLeader && index <= prevIndex:
			return nil, fmt.Errorf("duplicate groups: followers of leader %d out of order", leader)
		case v[2] < 1 || v[2] > math.MaxInt32 || v[3] > math.MaxInt64:
			return nil, fmt.Errorf("duplicate groups: row %d: position out of range", index)
		}
		fs[i] = follower{leader: int32(leader), index: int32(index), line: int32(v[2]), offset: int64(v[3])}
	}
	if len(b) > 0 {
		return nil, errors.New("duplicate groups: trailing bytes")
	}
	return &Duplicates{followers: fs}, nil
}
