package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"
)

// Version is the checkpoint format version this package writes. It reads
// versions 1 and 2: version 2 added the N record, so a version-1 checkpoint
// is a version-2 one without names.
const Version = 2

// minVersion is the oldest checkpoint format version this package reads.
const minVersion = 1

// MaxRows bounds Header.Rows, so a damaged header cannot make Load allocate
// without limit.
const MaxRows = 1 << 27

// maxProblems bounds State.Problems; the rest are counted in a final entry.
const maxProblems = 100

var (
	// ErrLocked means another process (or another Writer in this process)
	// holds the checkpoint's lock.
	ErrLocked = errors.New("checkpoint is locked")
	// ErrExists means Create would overwrite an existing run.
	ErrExists = errors.New("already exists")
	// ErrNoHeader means the file is empty or does not start with a valid
	// header record: it is not a batchgpt checkpoint.
	ErrNoHeader = errors.New("not a batchgpt checkpoint (no valid header record)")
	// ErrVersion means the checkpoint was written in another format version.
	ErrVersion = errors.New("unsupported checkpoint version")
	// ErrClosed is returned by calls on a closed Writer.
	ErrClosed = errors.New("checkpoint writer is closed")
)

// Header is the first record of a checkpoint: what the run is about.
type Header struct {
	Version       int             `json:"version"`
	Created       time.Time       `json:"created"`
	Input         string          `json:"input"`
	InputSHA256   string          `json:"input_sha256"`
	InputSize     int64           `json:"input_size"`
	Rows          int             `json:"rows"`
	Results       string          `json:"results"`
	ResultsFormat string          `json:"results_format"`
	Settings      json.RawMessage `json:"settings"` // run settings, opaque to store; never secrets
	// Duplicates counts the rows that send the same request as an earlier row, as the run found
	// them when it validated its input: with none, a resume need not look for them again.
	Duplicates int `json:"duplicates,omitempty"`
	// InputChunks is the input's chunk table as the run validated it: a resume checks the size
	// and the first chunk (the bytes before the first row), then each chunk it reads as it reads
	// it, instead of hashing the whole input first. Checkpoints made before it have none; theirs
	// is hashed whole.
	InputChunks []InputChunk `json:"input_chunks,omitempty"`
}

// InputChunk is one section of the run's input: the bytes from Offset, where row Row starts on
// line Line, to the next chunk's Offset (the last one's: to the end of the input), and their
// SHA-256 in hex. The first chunk holds what comes before the first row (a CSV header).
type InputChunk struct {
	Row    int    `json:"row"`
	Line   int    `json:"line"`
	Offset int64  `json:"offset"`
	SHA256 string `json:"sha256"`
}

// diskHeader is the header as journaled; the results preamble travels with it
// so that Open can recreate a deleted results file.
type diskHeader struct {
	Header
	ResultsPreamble []byte `json:"results_preamble,omitempty"`
}

// Phase is where a row is in its life.
type Phase uint8

const (
	PhaseNew       Phase = iota
	PhaseInFlight        // intent journaled, no operation id: in doubt
	PhaseSubmitted       // operation id journaled
	PhaseResolved        // result line durable
)

// Row is the journaled state of one input row.
type Row struct {
	Phase       Phase
	Failed      bool // with PhaseResolved: the result line records a failure
	Attempt     uint16
	OpID        string
	SubmittedAt int64 // unix ms
	// Doubts counts the tries of this row that may have created an operation
	// whose answer is never used: possible billed duplicates. It saturates.
	Doubts uint16
}

// Named is what the journal keeps of a submitted row, so that its operation can be collected
// and its result written without the input file: its id, request key and model URI.
type Named struct {
	ID    string
	Key   [32]byte
	Model string
}

// Counts summarises a State.
type Counts struct {
	Rows, New, InFlight, Submitted, Succeeded, Failed int
}

// State is a loaded checkpoint.
type State struct {
	Header       Header
	Rows         []Row    // len == Header.Rows
	DroppedBytes int64    // torn tail ignored (Load) or truncated (Open)
	Problems     []string // human-readable: skipped records, results repairs
	ResultsEnd   int64    // where the next result line goes
	Doubts       int      // D records: tries that may have created an operation never used (possible billed duplicates)

	// Named holds the N record of every row that has one and is not resolved at the end of the
	// journal (rows resolved since are dropped while loading, so its size follows the rows still
	// open, not the whole run).
	Named map[int]Named

	// Per row, while resolved: where its result line ends and how long it
	// is (0: unknown, after damage). A line starts where the previous R
	// record's line ended, or at the offset of a P record in between.
	ends      []int64
	lens      []uint32
	cursor    int64 // where the next R record's line starts
	final     record
	hasFinal  bool // final is the last good record
	finalized bool // an interrupted Finalize was completed in memory
	voidFinal bool // an interrupted Finalize was rolled back
	preamble  []byte
	validEnd  int64               // journal bytes up to the end of the last good record
	overflown int                 // problems beyond maxProblems
	model     string              // the latest model URI, shared by the rows named with it
	models    map[string]struct{} // every model URI named in the journal
	keepNames []uint64            // rows whose names a resolution does not drop (see namesOf)
}

// Counts tallies the rows by phase.
func (s *State) Counts() Counts {
	c := Counts{Rows: len(s.Rows)}
	for i := range s.Rows {
		switch r := &s.Rows[i]; r.Phase {
		case PhaseNew:
			c.New++
		case PhaseInFlight:
			c.InFlight++
		case PhaseSubmitted:
			c.Submitted++
		case PhaseResolved:
			if r.Failed {
				c.Failed++
			} else {
				c.Succeeded++
			}
		}
	}
	return c
}

// Models returns every model URI the journal names in an N record, of rows
// resolved or not, sorted. A snapshot (Finalize, Archive, Compact) keeps the
// names of open rows only: after one, the models of the rows resolved before
// it are not known any more.
func (s *State) Models() []string {
	out := make([]string, 0, len(s.models))
	for m := range s.models {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// SupersededBytes returns how many bytes of the results file (up to
// ResultsEnd) belong to no resolved row: result lines of rows that were
// reopened and resolved again. Finalize drops them.
func (s *State) SupersededBytes() int64 {
	if len(s.lens) != len(s.Rows) {
		return 0 // not loaded
	}
	n := s.ResultsEnd - int64(len(s.preamble))
	for i := range s.Rows {
		if s.Rows[i].Phase == PhaseResolved {
			n -= int64(s.lens[i])
		}
	}
	return max(n, 0)
}

// LineEnds returns, in increasing order, where the result line of every resolved row ends in
// the results file. A line that ends anywhere else belongs to no row any more: it was superseded
// by a later line of its row (or its row was reopened), and Finalize drops it.
func (s *State) LineEnds() []int64 {
	var out []int64
	for i := range s.Rows {
		if s.Rows[i].Phase == PhaseResolved && i < len(s.ends) && s.ends[i] > 0 {
			out = append(out, s.ends[i])
		}
	}
	slices.Sort(out)
	return out
}

func (s *State) addProblem(format string, args ...any) {
	if len(s.Problems) >= maxProblems {
		s.overflown++
		return
	}
	s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
}

func (s *State) finishProblems() {
	if s.overflown > 0 {
		s.Problems = append(s.Problems, fmt.Sprintf("... and %d more problems", s.overflown))
		s.overflown = 0
	}
}

// Load reads the checkpoint at path without locking or writing anything, as
// `status` needs while a run is going on. A torn tail is reported in
// DroppedBytes; records damaged in the middle are skipped and listed in
// Problems. If the journal ends with a Finalize's F record, Load reads the
// results file to tell whether it was replaced (see Writer.Finalize).
func Load(path string) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer f.Close()
	st, err := load(f)
	if err == nil {
		err = st.settleFinalize()
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	st.finishProblems()
	return st, nil
}

// badLine is an unusable line not yet known to be in the middle of the log.
type badLine struct {
	line   int
	reason error
}

func load(r io.Reader) (*State, error) { return loadKeeping(r, nil) }

// namesOf reads the journal from r and returns the latest N record of the
// rows in the bit set keep, resolved or not: Open needs them for rows whose
// result lines are gone, to name them again when it moves them back.
func namesOf(r io.Reader, keep []uint64) (map[int]Named, error) {
	st, err := loadKeeping(r, keep)
	if err != nil {
		return nil, err
	}
	for row := range st.Named {
		if !inSet(keep, row) {
			delete(st.Named, row)
		}
	}
	return st.Named, nil
}

// loadKeeping is load that keeps the names of the rows in the bit set keep
// (if not nil) when they are resolved.
func loadKeeping(r io.Reader, keep []uint64) (*State, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var (
		st      *State
		off     int64 // end of the lines consumed so far
		lineLen int64 // bytes of the current line read so far
		lineNo  int
		long    []byte // a line longer than br's buffer
		tooLong bool
		pending []badLine // bad lines after the last good record
		nBad    int       // len(pending) plus those not kept
	)
	for {
		chunk, err := br.ReadSlice('\n')
		lineLen += int64(len(chunk))
		if errors.Is(err, bufio.ErrBufferFull) {
			if !tooLong && len(long)+len(chunk) <= maxRecord {
				long = append(long, chunk...)
			} else {
				tooLong, long = true, long[:0]
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read: %w", err)
		}
		if lineLen == 0 { // clean EOF
			break
		}
		line := chunk
		if len(long) > 0 {
			long = append(long, chunk...)
			line = long
		}
		off += lineLen
		lineNo++
		var (
			payload []byte
			reason  error
		)
		switch {
		case err != nil:
			reason = errTorn
		case tooLong:
			reason = errTooLong
		default:
			payload, reason = checkRecord(line[:len(line)-1])
		}
		if st == nil {
			if reason != nil {
				return nil, fmt.Errorf("%w: first record: %v", ErrNoHeader, reason)
			}
			if st, err = decodeHeader(payload); err != nil {
				return nil, err
			}
			if len(keep) == (len(st.Rows)+63)/64 {
				st.keepNames = keep
			}
			st.validEnd = off
		} else {
			var rec record
			if reason == nil {
				rec, reason = parseRecord(payload, len(st.Rows))
			}
			if reason != nil {
				nBad++
				if len(pending) < maxProblems {
					pending = append(pending, badLine{lineNo, reason})
				}
			} else {
				if nBad > 0 {
					// A good record after bad ones: they were damaged in
					// the middle of the log, not torn at its end.
					for _, b := range pending {
						st.addProblem("checkpoint line %d: %v: record skipped", b.line, b.reason)
					}
					st.overflown += nBad - len(pending)
					pending, nBad = pending[:0], 0
				}
				st.apply(&rec)
				st.validEnd = off
				st.hasFinal = rec.kind == kindFinalize
				if st.hasFinal {
					st.final = rec
				}
			}
		}
		long, tooLong, lineLen = long[:0], false, 0
		if err != nil {
			break
		}
	}
	if st == nil {
		return nil, fmt.Errorf("%w: the file is empty", ErrNoHeader)
	}
	st.DroppedBytes = off - st.validEnd
	if nBad > 1 {
		st.addProblem("checkpoint lines %d-%d at the end are unreadable (%v first): dropped %d bytes",
			pending[0].line, lineNo, pending[0].reason, st.DroppedBytes)
	}
	for row := range st.Named {
		// Named again after its resolution, without a reopen.
		if st.Rows[row].Phase == PhaseResolved && !st.keeps(row) {
			delete(st.Named, row)
		}
	}
	st.ResultsEnd = int64(len(st.preamble))
	for i := range st.Rows {
		if st.Rows[i].Phase == PhaseResolved && st.ends[i] > st.ResultsEnd {
			st.ResultsEnd = st.ends[i]
		}
	}
	st.keepNames = nil
	st.finishProblems()
	return st, nil
}

func decodeHeader(payload []byte) (*State, error) {
	if len(payload) < 2 || payload[0] != kindHeader || payload[1] != ' ' {
		return nil, fmt.Errorf("%w: first record is not a header", ErrNoHeader)
	}
	var dh diskHeader
	if err := json.Unmarshal(payload[2:], &dh); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrNoHeader, err)
	}
	if dh.Version < minVersion || dh.Version > Version {
		return nil, fmt.Errorf("%w %d (this batchgpt reads versions %d to %d)", ErrVersion, dh.Version, minVersion, Version)
	}
	if dh.Rows < 0 || dh.Rows > MaxRows {
		return nil, fmt.Errorf("%w: header: rows %d out of range", ErrNoHeader, dh.Rows)
	}
	return &State{
		Header:   dh.Header,
		Rows:     make([]Row, dh.Rows),
		ends:     make([]int64, dh.Rows),
		lens:     make([]uint32, dh.Rows),
		cursor:   int64(len(dh.ResultsPreamble)),
		preamble: dh.ResultsPreamble,
	}, nil
}

// apply replays one record; the latest record of a row wins.
func (s *State) apply(r *record) {
	switch r.kind {
	case kindPosition:
		s.cursor = r.end
		return
	case kindFinalize:
		return // see settleFinalize
	}
	row := &s.Rows[r.row]
	switch r.kind {
	case kindNamed:
		if s.Named == nil {
			s.Named = make(map[int]Named)
		}
		if string(r.model) != s.model { // no allocation to compare
			s.model = string(r.model)
			if s.models == nil {
				s.models = make(map[string]struct{})
			}
			s.models[s.model] = struct{}{}
		}
		s.Named[r.row] = Named{ID: r.id, Key: r.key, Model: s.model}
	case kindIntent:
		*row = Row{Phase: PhaseInFlight, Attempt: uint16(r.attempt), Doubts: row.Doubts}
		s.ends[r.row], s.lens[r.row] = 0, 0
	case kindSubmitted:
		*row = Row{Phase: PhaseSubmitted, Attempt: uint16(r.attempt), OpID: string(r.opID), SubmittedAt: r.at, Doubts: row.Doubts}
		s.ends[r.row], s.lens[r.row] = 0, 0
	case kindResolved:
		if s.Named != nil && !s.keeps(r.row) {
			delete(s.Named, r.row)
		}
		row.Phase, row.Failed = PhaseResolved, r.failed
		s.ends[r.row], s.lens[r.row] = r.end, 0
		if n := r.end - s.cursor; n > 0 && n <= math.MaxUint32 {
			s.lens[r.row] = uint32(n)
		}
		s.cursor = r.end
	case kindReopen:
		*row = Row{Attempt: row.Attempt, Doubts: row.Doubts}
		if r.reset {
			row.Attempt = 0
		}
		s.ends[r.row], s.lens[r.row] = 0, 0
	case kindDoubt:
		s.Doubts++
		if row.Doubts < math.MaxUint16 {
			row.Doubts++
		}
		// The try in flight, or the operation journaled, is now counted as a possible
		// duplicate: the row is new again, so a crash before its next I record cannot leave
		// the same try in doubt to be counted a second time.
		if row.Phase == PhaseInFlight || row.Phase == PhaseSubmitted {
			*row = Row{Attempt: row.Attempt, Doubts: row.Doubts}
			s.ends[r.row], s.lens[r.row] = 0, 0
		}
	}
}

func (s *State) keeps(row int) bool { return inSet(s.keepNames, row) }

// inSet reports whether row is in the bit set (nil: empty).
func inSet(set []uint64, row int) bool {
	return row/64 < len(set) && set[row/64]&(1<<(row%64)) != 0
}
