package store

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
)

// The K record follows the L records of a snapshot and sums them up, so that a resume reads
// them without decoding ten million entries (most of a large resume's load otherwise):
//
//	K <records> <rows> <bytes> <from> <to> <end> <total> <base64 runs>
//
// It says that the <records> L records right before it, <bytes> bytes of journal in all, resolve
// <rows> rows, with their lines following each other from cursor <from> to cursor <to>; the
// furthest line ends at <end> and the lines are <total> bytes long together. The runs (standard
// base64, no padding) say which rows, in row order, as triples of unsigned varints:
//
//	rows skipped since the previous run (from row 0)
//	rows in the run<<1 | failed
//	attempt
//
// Only Open's lean load uses it (loadOptions.summaries): it still reads every L record and checks
// its checksum, at the speed of reading a file, but decodes only its count, and replays the runs
// instead when the records, rows, bytes and starting cursor all match. Any other load decodes the
// L records and ignores the K record. A snapshot writes one only when its resolved rows are all
// in L records in one block (no P and R record among them, for a line of unknown length) and the
// runs take less than an eighth of the L records' bytes and a quarter of a record. Older readers
// of version 3 skip it as a damaged record (and say so among the checkpoint's problems).
const kindSummary = 'K'

// summary is a K record as read or as it is being written.
type summary struct {
	records       int
	rows          int
	bytes         int64
	from, to, end int64
	total         int64
	runs          []byte // the decoded runs (parseSummary) or their encoding (appendSummary)
}

// blockSummary tracks the L records a snapshot writes, for its K record.
type blockSummary struct {
	summary
	mixed bool // a P and R record went out among them: no K record
}

// linesFlushed notes an L record of rows rows, length bytes long, written to the block.
func (b *blockSummary) linesFlushed(rows, length int) {
	b.records++
	b.rows += rows
	b.bytes += int64(length)
}

// appendSummary appends the K record of the block, if it has one: st's resolved rows are
// exactly the rows of the block, whose last line ended at cursor to.
func (b *blockSummary) appendSummary(dst []byte, st *State, to int64) []byte {
	if b.mixed || b.records == 0 {
		return dst
	}
	var raw []byte
	rows, prev := 0, 0
	for i := 0; i < st.Len(); {
		if st.Phase(i) != PhaseResolved {
			i++
			continue
		}
		failed, a := st.Failed(i), st.attempt(i)
		j := i + 1
		for j < st.Len() && st.Phase(j) == PhaseResolved && st.Failed(j) == failed && st.attempt(j) == a {
			j++
		}
		fl := uint64(j-i) << 1
		if failed {
			fl |= 1
		}
		raw = binary.AppendUvarint(raw, uint64(i-prev))
		raw = binary.AppendUvarint(raw, fl)
		raw = binary.AppendUvarint(raw, uint64(a))
		if n := int64(base64.RawStdEncoding.EncodedLen(len(raw))); n > int64(maxRecord/4) || n*8 > b.bytes {
			return dst // too scattered to be worth it: a resume decodes the L records
		}
		rows += j - i
		prev, i = j, j
	}
	if rows != b.rows {
		return dst // a row resolved but not in the block: nothing to sum up
	}
	start := len(dst)
	dst = append(dst, kindSummary)
	for _, v := range [...]int64{int64(b.records), int64(b.rows), b.bytes, b.from, to, b.end, b.total} {
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, v, 10)
	}
	dst = append(dst, ' ')
	dst = base64.RawStdEncoding.AppendEncode(dst, raw)
	return appendSum(dst, start)
}

// parseSummary decodes a K payload into *out, its runs decoded into out.runs (reused); rows
// bounds the row numbers. The record is taken whole or not at all.
func parseSummary(p []byte, rows int, out *summary) error {
	if len(p) < 3 || p[1] != ' ' {
		return errSyntax
	}
	rest := p[2:]
	var v [7]int64
	for k := range v {
		var f []byte
		var ok bool
		if f, rest, ok = field(rest); !ok {
			return errSyntax
		}
		n, ok := parseUint(f, math.MaxInt64)
		if !ok {
			return errSyntax
		}
		v[k] = int64(n)
	}
	if len(rest) == 0 {
		return errSyntax
	}
	raw, err := base64.RawStdEncoding.AppendDecode(out.runs[:0], rest)
	if err != nil {
		return errSyntax
	}
	s := summary{records: int(v[0]), rows: int(v[1]), bytes: v[2], from: v[3], to: v[4], end: v[5], total: v[6], runs: raw}
	if s.records == 0 || s.rows == 0 || s.rows > rows {
		return errSyntax
	}
	// The runs must cover exactly s.rows rows within the header's.
	row, n := 0, 0
	for len(raw) > 0 {
		var t [3]uint64
		for k := range t {
			x, m := binary.Uvarint(raw)
			if m <= 0 {
				return errSyntax
			}
			t[k], raw = x, raw[m:]
		}
		if t[1]>>1 == 0 || t[2] > math.MaxUint16 || t[0] > uint64(rows) || t[1]>>1 > uint64(rows) {
			return errSyntax
		}
		row += int(t[0]) + int(t[1]>>1)
		n += int(t[1] >> 1)
		if row > rows {
			return errRowRange
		}
	}
	if n != s.rows {
		return errSyntax
	}
	*out = s
	return nil
}

// eachRun calls f for each run of s: rows [from, to), failed or not, with a attempts.
func (s *summary) eachRun(f func(from, to int, failed bool, a int)) {
	raw, row := s.runs, 0
	next := func() int {
		x, m := binary.Uvarint(raw)
		raw = raw[m:]
		return int(x)
	}
	for len(raw) > 0 {
		row += next()
		fl := next()
		a := next()
		f(row, row+fl>>1, fl&1 == 1, a)
		row += fl >> 1
	}
}

// applySummary replays a K record in place of the L records it sums up, as applyLines would
// have replayed them one by one in a lean state without rows kept (loadOptions.summaries).
func (s *State) applySummary(k *summary) {
	k.eachRun(func(from, to int, failed bool, a int) {
		f := uint8(PhaseResolved)
		if failed {
			f |= flagFailed
		}
		for i := from; i < to; i++ {
			if s.Phase(i) == PhaseResolved {
				s.lostLine = true // answered again: as resolve notes it
			}
			s.flags[i] = f
		}
		if a < math.MaxUint8 && len(s.bigAttempts) == 0 {
			clear(s.attempts[from:to])
			if a > 0 {
				for i := from; i < to; i++ {
					s.attempts[i] = uint8(a)
				}
			}
			return
		}
		for i := from; i < to; i++ {
			s.setAttempt(i, a)
		}
	})
	for i := range s.subs { // resolved: its operation is dropped (Named is, at the end of the load)
		if s.Phase(i) == PhaseResolved {
			delete(s.subs, i)
		}
	}
	s.leanEnd, s.leanLen = max(s.leanEnd, k.end), s.leanLen+k.total
	s.cursor = k.to
	s.summaries++
}

// pendingLines is the block of L records Open's lean load has read without decoding, until the
// K record that sums them up.
type pendingLines struct {
	start   int64 // the block's first byte in the journal
	end     int64 // after its last record
	line    int   // line number of its first record
	records int
	rows    int
	cursor  int64 // State.cursor before it
}

// matches reports whether k sums up exactly the block p.
func (p *pendingLines) matches(k *summary) bool {
	return p.records == k.records && p.rows == k.rows && p.end-p.start == k.bytes && p.cursor == k.from
}
