package store

import (
	"encoding/json"
	"errors"
	"hash/crc32"
	"math"
	"strconv"
	"unicode/utf8"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxRecord bounds one journal line, so garbage without newlines cannot make
// the loader buffer an unbounded amount of memory. A variable for tests.
var maxRecord = 16 << 20

// maxOpID bounds an operation id; real ones are 20 characters. It bounds a
// model URI too.
const maxOpID = 256

// maxNamedID bounds a row id in an N record, as encoded (JSON, with quotes).
const maxNamedID = 64 << 10

// Record kinds; 0, 'C', 'Y' and 'Z' are only used inside the writer's queue.
const (
	kindHeader    = 'H'
	kindIntent    = 'I'
	kindSubmitted = 'S'
	kindResolved  = 'R'
	kindReopen    = 'U'
	kindDoubt     = 'D'
	kindPosition  = 'P'
	kindFinalize  = 'F'
	kindNamed     = 'N'
	kindLines     = 'L'
	kindSeconds   = 'T'
	kindGroups    = 'G'
	kindStep      = 'B'
	kindFlush     = 0
	kindCompact   = 'C'
	kindFinalizeQ = 'Z'
	kindSettingsQ = 'Y'
)

// appendSum finishes the record whose payload starts at dst[start:].
func appendSum(dst []byte, start int) []byte {
	sum := crc32.Checksum(dst[start:], castagnoli)
	dst = append(dst, ' ')
	dst = appendHex32(dst, sum)
	return append(dst, '\n')
}

func appendHeaderRecord(dst, headerJSON []byte) []byte {
	start := len(dst)
	dst = append(dst, kindHeader, ' ')
	dst = append(dst, headerJSON...)
	return appendSum(dst, start)
}

func appendIntent(dst []byte, row, attempt int) []byte {
	start := len(dst)
	dst = append(dst, kindIntent, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(attempt), 10)
	return appendSum(dst, start)
}

func appendSubmitted(dst []byte, row, attempt int, opID string, atMillis int64) []byte {
	start := len(dst)
	dst = append(dst, kindSubmitted, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(attempt), 10)
	dst = append(dst, ' ')
	dst = append(dst, opID...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, atMillis, 10)
	return appendSum(dst, start)
}

func appendResolved(dst []byte, row int, failed bool, resultsEnd int64) []byte {
	start := len(dst)
	dst = append(dst, kindResolved, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	if failed {
		dst = append(dst, " 1 "...)
	} else {
		dst = append(dst, " 0 "...)
	}
	dst = strconv.AppendInt(dst, resultsEnd, 10)
	return appendSum(dst, start)
}

func appendReopen(dst []byte, row int) []byte {
	start := len(dst)
	dst = append(dst, kindReopen, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	return appendSum(dst, start)
}

// appendRetry appends "U <row> 0": reopened with its attempts reset.
func appendRetry(dst []byte, row int) []byte {
	start := len(dst)
	dst = append(dst, kindReopen, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	dst = append(dst, " 0"...)
	return appendSum(dst, start)
}

func appendDoubt(dst []byte, row int) []byte {
	start := len(dst)
	dst = append(dst, kindDoubt, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	return appendSum(dst, start)
}

func appendPosition(dst []byte, offset int64) []byte {
	start := len(dst)
	dst = append(dst, kindPosition, ' ')
	dst = strconv.AppendInt(dst, offset, 10)
	return appendSum(dst, start)
}

func appendFinalize(dst []byte, size int64, sum uint32, inputOrder bool) []byte {
	start := len(dst)
	dst = append(dst, kindFinalize, ' ')
	dst = strconv.AppendInt(dst, size, 10)
	dst = append(dst, ' ')
	dst = appendHex32(dst, sum)
	if inputOrder {
		dst = append(dst, " 1"...)
	} else {
		dst = append(dst, " 0"...)
	}
	return appendSum(dst, start)
}

// appendStep appends "B <json>": one step of the batch backend, as Writer.Step compacted it.
func appendStep(dst, raw []byte) []byte {
	start := len(dst)
	dst = append(dst, kindStep, ' ')
	dst = append(dst, raw...)
	return appendSum(dst, start)
}

// appendSeconds appends "T <unix second> <count>".
func appendSeconds(dst []byte, sec int64, n int) []byte {
	start := len(dst)
	dst = append(dst, kindSeconds, ' ')
	dst = strconv.AppendInt(dst, sec, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(n), 10)
	return appendSum(dst, start)
}

// appendNamed appends "N <row> <key hex> <model> <id JSON>"; idJSON is the
// id as appendJSONString encodes it.
func appendNamed(dst []byte, row int, key *[32]byte, model string, idJSON []byte) []byte {
	const hexDigits = "0123456789abcdef"
	start := len(dst)
	dst = append(dst, kindNamed, ' ')
	dst = strconv.AppendInt(dst, int64(row), 10)
	dst = append(dst, ' ')
	for _, b := range key {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	dst = append(dst, ' ')
	dst = append(dst, model...)
	dst = append(dst, ' ')
	dst = append(dst, idJSON...)
	return appendSum(dst, start)
}

// appendJSONString appends s as json.Marshal encodes it: a JSON string
// literal on one line. s must be valid UTF-8 (json.Marshal would replace
// invalid bytes, so the id would not read back as written).
func appendJSONString(dst []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= ' ' && c < utf8.RuneSelf && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if plain { // the common case, without json.Marshal's allocations
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, err := json.Marshal(s)
	if err != nil { // cannot happen for a string
		panic(err)
	}
	return append(dst, b...)
}

func appendHex32(dst []byte, v uint32) []byte {
	const hexDigits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[v>>uint(shift)&0xf])
	}
	return dst
}

// Reasons a line is not a usable record. They are static so that the loader
// does not allocate on the hot path.
var (
	errTorn        = errors.New("incomplete record (no newline)")
	errTooLong     = errors.New("record too long")
	errChecksum    = errors.New("bad checksum")
	errSyntax      = errors.New("malformed record")
	errKind        = errors.New("unknown record type")
	errHeaderAgain = errors.New("unexpected header record")
	errRowRange    = errors.New("row out of range")
	errAttempt     = errors.New("attempt out of range")
	errOpID        = errors.New("bad operation id")
	errKey         = errors.New("bad request key")
	errModel       = errors.New("bad model URI")
	errID          = errors.New("bad row id")
)

// unhex maps a lowercase hex digit to its value and anything else to 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// parseHex32 parses exactly 8 lowercase hex digits.
func parseHex32(b []byte) (uint32, bool) {
	if len(b) != 8 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		d := unhex[c]
		if d > 0xf {
			return 0, false
		}
		v = v<<4 | uint32(d)
	}
	return v, true
}

// checkRecord verifies the framing and checksum of line (without its '\n')
// and returns the payload.
func checkRecord(line []byte) ([]byte, error) {
	n := len(line)
	if n < 11 || line[n-9] != ' ' { // shortest record: "U 0 xxxxxxxx"
		return nil, errSyntax
	}
	want, ok := parseHex32(line[n-8:])
	if !ok {
		return nil, errSyntax
	}
	payload := line[:n-9]
	if crc32.Checksum(payload, castagnoli) != want {
		return nil, errChecksum
	}
	return payload, nil
}

// record is one decoded non-header payload. opID aliases the input line.
type record struct {
	kind    byte
	failed  bool
	row     int
	attempt int
	opID    []byte
	at      int64
	end     int64 // R: results end; P: offset; F: size of the new results
	sum     uint32
	inOrder bool // F: rows in input order
	reset   bool // U: attempts reset
	key     [32]byte
	model   []byte // N: aliases the input line
	id      string // N
	blob    []byte // G: decoded
	raw     []byte // B: the step's JSON, aliases the input line
	count   int    // L read for its count alone (journalReader.countOnly)
}

// field splits off the next space-separated field of p.
func field(p []byte) (f, rest []byte, ok bool) {
	for i, c := range p {
		if c == ' ' {
			return p[:i], p[i+1:], i > 0
		}
	}
	return p, nil, len(p) > 0
}

// parseUint parses a decimal number no larger than max: digits only, no sign.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func parseInt64(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	u, ok := parseUint(b, math.MaxInt64)
	if neg {
		return -int64(u), ok
	}
	return int64(u), ok
}

// parseRecord decodes a non-header payload. rows bounds the row numbers.
func parseRecord(p []byte, rows int) (record, error) {
	var r record
	if len(p) < 3 || p[1] != ' ' {
		return r, errSyntax
	}
	r.kind = p[0]
	switch r.kind {
	case kindPosition, kindFinalize, kindSeconds:
		return parseFileRecord(p)
	case kindStep:
		// One JSON value on its line, as Writer.Step wrote it; what it means is its caller's.
		if !json.Valid(p[2:]) {
			return r, errSyntax
		}
		r.raw = p[2:]
		return r, nil
	}
	f, rest, ok := field(p[2:])
	if !ok {
		return r, errSyntax
	}
	row, ok := parseUint(f, math.MaxInt32)
	if !ok {
		return r, errSyntax
	}
	if row >= uint64(rows) {
		return r, errRowRange
	}
	r.row = int(row)

	attempt := func() error {
		f, rest, ok = field(rest)
		if !ok {
			return errSyntax
		}
		a, ok := parseUint(f, math.MaxUint16)
		if !ok || a == 0 {
			return errAttempt
		}
		r.attempt = int(a)
		return nil
	}
	switch r.kind {
	case kindIntent:
		if err := attempt(); err != nil {
			return r, err
		}
	case kindSubmitted:
		if err := attempt(); err != nil {
			return r, err
		}
		if r.opID, rest, ok = field(rest); !ok || !validOpID(r.opID) {
			return r, errOpID
		}
		if f, rest, ok = field(rest); !ok {
			return r, errSyntax
		}
		if r.at, ok = parseInt64(f); !ok {
			return r, errSyntax
		}
	case kindResolved:
		if f, rest, ok = field(rest); !ok || len(f) != 1 || (f[0] != '0' && f[0] != '1') {
			return r, errSyntax
		}
		r.failed = f[0] == '1'
		if f, rest, ok = field(rest); !ok {
			return r, errSyntax
		}
		end, ok := parseUint(f, math.MaxInt64)
		if !ok {
			return r, errSyntax
		}
		r.end = int64(end)
	case kindNamed:
		return r, r.parseNamed(rest)
	case kindReopen:
		// An optional "0": the row's attempts start over (resume --retry-failed).
		if f, more, ok := field(rest); ok {
			if len(f) != 1 || f[0] != '0' {
				return r, errSyntax
			}
			r.reset, rest = true, more
		}
	case kindDoubt:
	case kindHeader:
		return r, errHeaderAgain
	default:
		return r, errKind
	}
	if rest != nil {
		return r, errSyntax // trailing fields
	}
	return r, nil
}

// parseNamed decodes the rest of an N record, "<key> <model> <id JSON>": the
// id, the last field, is one JSON string literal with nothing around it.
func (r *record) parseNamed(rest []byte) error {
	f, rest, ok := field(rest)
	if !ok || len(f) != 2*len(r.key) {
		return errKey
	}
	for i := range r.key {
		hi, lo := unhex[f[2*i]], unhex[f[2*i+1]]
		if hi > 0xf || lo > 0xf {
			return errKey
		}
		r.key[i] = hi<<4 | lo
	}
	if r.model, rest, ok = field(rest); !ok || !validOpID(r.model) {
		return errModel
	}
	id, ok := parseJSONString(rest)
	if !ok {
		return errID
	}
	r.id = id
	return nil
}

// parseJSONString decodes b, which must be exactly one JSON string literal of
// valid UTF-8, non-empty once decoded and at most maxNamedID bytes encoded.
func parseJSONString(b []byte) (string, bool) {
	n := len(b)
	if n < 3 || n > maxNamedID || b[0] != '"' || b[n-1] != '"' || !utf8.Valid(b) {
		return "", false
	}
	inner := b[1 : n-1]
	plain := true
	for _, c := range inner {
		if c < ' ' || c == '"' {
			return "", false // raw control character, or a quote ending the literal early
		}
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(inner), true
	}
	// Escapes: let encoding/json decode them. Whitespace around the literal
	// is ruled out above (b starts and ends with a quote), and anything after
	// its closing quote is an error.
	var s string
	if err := json.Unmarshal(b, &s); err != nil || s == "" {
		return "", false
	}
	return s, true
}

// parseFileRecord decodes the records about the results file as a whole:
// "P <offset>" and "F <size> <crc32c> <0|1 input order>", and the snapshot's
// "T <unix second> <count>".
func parseFileRecord(p []byte) (record, error) {
	r := record{kind: p[0]}
	f, rest, ok := field(p[2:])
	if !ok {
		return r, errSyntax
	}
	if r.kind == kindSeconds {
		if r.at, ok = parseInt64(f); !ok {
			return r, errSyntax
		}
		if f, rest, ok = field(rest); !ok {
			return r, errSyntax
		}
		n, ok := parseUint(f, math.MaxInt32)
		if !ok || rest != nil {
			return r, errSyntax
		}
		r.end = int64(n)
		return r, nil
	}
	n, ok := parseUint(f, math.MaxInt64)
	if !ok {
		return r, errSyntax
	}
	r.end = int64(n)
	if r.kind == kindFinalize {
		if f, rest, ok = field(rest); !ok {
			return r, errSyntax
		}
		if r.sum, ok = parseHex32(f); !ok {
			return r, errSyntax
		}
		if f, rest, ok = field(rest); !ok || len(f) != 1 || (f[0] != '0' && f[0] != '1') {
			return r, errSyntax
		}
		r.inOrder = f[0] == '1'
	}
	if rest != nil {
		return r, errSyntax
	}
	return r, nil
}

// validOpID reports whether id can be journaled: printable, no spaces. Model
// URIs follow the same rule.
func validOpID[T string | []byte](id T) bool {
	if len(id) == 0 || len(id) > maxOpID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
