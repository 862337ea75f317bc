package store

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
)

// The L record is how a snapshot journals resolved rows: many of them in one line, in a few
// dozen bytes a row instead of an S and an R record (about 80 bytes), and quicker to read. A
// resume reads every resolved row of a compacted journal:
//
//	L <count> <base64 payload>
//
// The payload (standard base64, no padding) is count entries of unsigned varints:
//
//	zigzag(row - previous row)   the first entry's previous row is 0
//	zigzag(start - cursor)       where the line starts, from where the previous line ended
//	                             (the cursor, as R and P records move it); 0 when it follows it
//	length<<1 | failed           the line's length in bytes (> 0)
//	attempt                      submissions made (0 for a row the cache answered)
//	len(opID), opID              the row's last operation ("" if it had none)
//	zigzag(at - previous at)     its submission time, unix ms; the first entry's previous is 0
//
// An entry moves the cursor to the end of its line, as an R record does.
//
// The operation is kept so that a row whose result line is lost (a results file cut short or
// deleted) can be fetched again from its operation rather than submitted and billed again.
const maxLinesPerRecord = 4096

// lineEntry is one resolved row of an L record as read; opID aliases the decoded payload.
type lineEntry struct {
	row     int32
	skip    int64 // start - cursor
	failed  bool
	n       int64 // line length
	attempt uint16
	opID    []byte
	at      int64
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// linesEncoder collects resolved rows into L records.
type linesEncoder struct {
	raw           []byte
	count         int
	prevRow, prev int64 // previous row and submission time
	cursor        int64 // where the previous line ended
}

// add appends one row whose line is [start, start+n); full reports that the record should be
// flushed.
func (e *linesEncoder) add(row int, start, n int64, failed bool, attempt uint16, opID []byte, at int64) (full bool) {
	e.raw = binary.AppendUvarint(e.raw, zigzag(int64(row)-e.prevRow))
	e.raw = binary.AppendUvarint(e.raw, zigzag(start-e.cursor))
	e.cursor = start + n
	fl := uint64(n) << 1
	if failed {
		fl |= 1
	}
	e.raw = binary.AppendUvarint(e.raw, fl)
	e.raw = binary.AppendUvarint(e.raw, uint64(attempt))
	e.raw = binary.AppendUvarint(e.raw, uint64(len(opID)))
	e.raw = append(e.raw, opID...)
	e.raw = binary.AppendUvarint(e.raw, zigzag(at-e.prev))
	e.prevRow, e.prev = int64(row), at
	e.count++
	return e.count == maxLinesPerRecord
}

// flush appends the L record of the rows added since the last flush, if any.
func (e *linesEncoder) flush(dst []byte) []byte {
	if e.count == 0 {
		return dst
	}
	start := len(dst)
	dst = append(dst, kindLines, ' ')
	dst = strconv.AppendInt(dst, int64(e.count), 10)
	dst = append(dst, ' ')
	dst = base64.RawStdEncoding.AppendEncode(dst, e.raw)
	*e = linesEncoder{raw: e.raw[:0], cursor: e.cursor}
	return appendSum(dst, start)
}

// linesCount returns the count of an L payload and its encoded entries: all Open's lean load
// decodes of it, and where parseLines starts.
func linesCount(p []byte) (count int, entries []byte, err error) {
	f, rest, ok := field(p[2:])
	if !ok || len(rest) == 0 {
		return 0, nil, errSyntax
	}
	n, ok := parseUint(f, maxLinesPerRecord)
	if !ok || n == 0 {
		return 0, nil, errSyntax
	}
	return int(n), rest, nil
}

// parseLines decodes an L payload into *out (reused), decoding the payload into *buf (reused too:
// the entries' operation ids alias it, and a snapshot of ten million rows would otherwise leave
// hundreds of megabytes of garbage per load); rows bounds the row numbers. The record is taken
// whole or not at all.
func parseLines(p []byte, rows int, out *[]lineEntry, buf *[]byte) error {
	count, rest, err := linesCount(p)
	if err != nil {
		return err
	}
	raw, err := base64.RawStdEncoding.AppendDecode((*buf)[:0], rest)
	*buf = raw
	if err != nil {
		return errSyntax
	}
	entries := (*out)[:0]
	var prevRow, prevAt int64
	next := func() (uint64, bool) {
		v, k := binary.Uvarint(raw)
		if k <= 0 {
			return 0, false
		}
		raw = raw[k:]
		return v, true
	}
	for range count {
		var e lineEntry
		d, ok1 := next()
		skip, ok0 := next()
		fl, ok2 := next()
		a, ok3 := next()
		l, ok4 := next()
		if !ok0 || !ok1 || !ok2 || !ok3 || !ok4 || l > maxOpID || l > uint64(len(raw)) {
			return errSyntax
		}
		e.skip = unzigzag(skip)
		row := prevRow + unzigzag(d)
		if row < 0 || row >= int64(rows) {
			return errRowRange
		}
		if fl>>1 == 0 || fl>>1 > math.MaxUint32 {
			return errSyntax
		}
		if a > math.MaxUint16 {
			return errAttempt
		}
		e.row, e.failed, e.n, e.attempt = int32(row), fl&1 == 1, int64(fl>>1), uint16(a)
		if l > 0 {
			if !validOpID(raw[:l]) {
				return errOpID
			}
			e.opID = raw[:l:l]
		}
		raw = raw[l:]
		at, ok := next()
		if !ok {
			return errSyntax
		}
		e.at = prevAt + unzigzag(at)
		prevRow, prevAt = row, e.at
		entries = append(entries, e)
	}
	if len(raw) != 0 {
		return errSyntax // trailing bytes
	}
	*out = entries
	return nil
}
