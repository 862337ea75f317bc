package store

import (
	"bufio"
	"bytes"
	"cmp"
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
// versions 1 to 4: version 2 added the N record, so a version-1 checkpoint
// is a version-2 one without names; version 3 added the L and T records of
// snapshots, which a reader of version 2 would skip as damaged, taking the
// rows they resolve for new ones; version 4 added the G records (Groups),
// which a reader of version 3 would skip as damaged too.
const Version = 4

// BatchVersion is the version of a checkpoint of the batch backend, the one with B records
// (Writer.Step), and everything Version has: a reader of Version refuses it rather than resuming
// its rows one request at a time, which would pay for the rows a batch task answers as well.
// Asynchronous checkpoints stay at Version.
const BatchVersion = Version + 1

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
//
// Its rows are kept in columns of a few bytes each (about 10 bytes a row), not as a Row per
// row: a ten-million-row checkpoint is loaded by every resume and every compaction of a run's
// journal, and a Row with its operation id would take 60 bytes a row. What only some rows
// have (an operation id, doubts, many attempts) is kept in maps for those rows.
type State struct {
	Header       Header
	DroppedBytes int64    // torn tail ignored (Load) or truncated (Open)
	Problems     []string // human-readable: skipped records, results repairs
	ResultsEnd   int64    // where the next result line goes
	Doubts       int      // D records: tries that may have created an operation never used (possible billed duplicates)

	// Steps are the payloads of the B records, in journal order: the steps of the batch backend
	// (docs/api.md §9), opaque to store. They are few, and a snapshot keeps them all.
	Steps []json.RawMessage

	// Named holds the N record of every row that has one and is not resolved at the end of the
	// journal (rows resolved since are dropped while loading, so its size follows the rows still
	// open, not the whole run).
	Named map[int]Named

	flags       []uint8         // per row: phase (bits 0-1), failed (flagFailed)
	attempts    []uint8         // per row, saturating at 255: bigAttempts has the exact count then
	bigAttempts map[int]uint16  // rows with 255 attempts or more
	doubts      map[int]uint16  // rows with doubts
	subs        map[int]opEntry // submitted rows (and kept rows, see keepNames): their operation
	recent      secondCounts    // submissions per second, for the hour window
	// resolutions count, per row if asked for, its R records and L entries: a byte each (10 MB
	// of a compaction at ten million rows, not 20), bigResolutions the counts of 255 and more.
	resolutions    []uint8
	bigResolutions map[int]uint16
	saturated      bool // a row's resolutions reached bigResolutions' limit

	// Per row, while resolved: where its result line ends and how long it is (0: unknown, after
	// damage), packed in one word (see maxEnd); lines it cannot pack are in wide. A line starts where the
	// previous R record's line ended, or at the offset of a P record in between. Nil in a state
	// loaded lean (loadOptions.lean): for a compaction, which takes each line from the journal
	// instead, and for Open when no line needs moving.
	pos  []uint64
	wide map[int]wideLine
	// Without pos (loadOptions.lean): the furthest end and the total length of the resolved
	// rows' lines, added up as they resolve, and whether a row lost a line it had (reopened, or
	// answered again), after which the two say nothing and only a full load does.
	leanEnd, leanLen int64
	lostLine         bool
	summaries        int   // K records taken in place of the L records they sum up
	cursor           int64 // where the next R record's line starts
	final            record
	hasFinal         bool // final is the last good record
	finalized        bool // an interrupted Finalize was completed in memory
	voidFinal        bool // an interrupted Finalize was rolled back
	preamble         []byte
	groups           []byte              // the G records' blob (Groups)
	validEnd         int64               // journal bytes up to the end of the last good record
	overflown        int                 // problems beyond maxProblems
	model            string              // the latest model URI, shared by the rows named with it
	models           map[string]struct{} // every model URI named in the journal
	keepNames        []uint64            // rows whose names and operations a resolution does not drop (see loadKeeping)
}

// opEntry is a row's latest operation: its id and when it was submitted (unix ms).
type opEntry struct {
	opID string
	at   int64
}

const flagFailed = 4

// A resolved row's line is packed into one word: its end in the high 40 bits (1 TiB), its length
// in the low 24 (16 MiB). Lines beyond either go to State.wide, marked by posWide.
const (
	lenBits = 24
	maxLen  = 1<<lenBits - 1
	maxEnd  = 1<<(64-lenBits) - 1
	posWide = ^uint64(0)
)

// newState returns the state of h's rows, all new; lean leaves out where their lines are
// (loadOptions.lean).
func newState(h Header, preamble []byte, lean bool) *State {
	st := &State{
		Header:   h,
		flags:    make([]uint8, h.Rows),
		attempts: make([]uint8, h.Rows),
		cursor:   int64(len(preamble)),
		preamble: preamble,
	}
	if !lean {
		st.pos = make([]uint64, h.Rows)
	}
	return st
}

// Len returns the number of rows.
func (s *State) Len() int { return len(s.flags) }

// Row returns the journaled state of row i. A resolved row's operation is not kept: its result
// line is what matters of it.
func (s *State) Row(i int) Row {
	f := s.flags[i]
	r := Row{Phase: Phase(f & 3), Failed: f&flagFailed != 0, Attempt: s.attempt(i), Doubts: s.doubts[i]}
	if r.Phase == PhaseSubmitted {
		e := s.subs[i]
		r.OpID, r.SubmittedAt = e.opID, e.at
	}
	return r
}

// Phase returns the phase of row i.
func (s *State) Phase(i int) Phase { return Phase(s.flags[i] & 3) }

// Attempt returns the submissions made of row i.
func (s *State) Attempt(i int) int { return int(s.attempt(i)) }

// Failed reports whether row i is resolved with a failure.
func (s *State) Failed(i int) bool { return s.flags[i]&flagFailed != 0 }

// Retried records in memory that row i was reopened with its attempts reset, as the caller
// journaled with Writer.Retry.
func (s *State) Retried(i int) {
	s.setNew(i)
	s.setAttempt(i, 0)
}

func (s *State) attempt(i int) uint16 {
	if a := s.attempts[i]; a < math.MaxUint8 {
		return uint16(a)
	}
	return s.bigAttempts[i]
}

func (s *State) setAttempt(i, a int) {
	if a < math.MaxUint8 {
		s.attempts[i] = uint8(a)
		if s.bigAttempts != nil {
			delete(s.bigAttempts, i)
		}
		return
	}
	s.attempts[i] = math.MaxUint8
	if s.bigAttempts == nil {
		s.bigAttempts = make(map[int]uint16)
	}
	s.bigAttempts[i] = uint16(a)
}

// setNew makes row i new again, attempts and doubts kept; its operation and line are forgotten.
func (s *State) setNew(i int) {
	if s.pos == nil && s.Phase(i) == PhaseResolved {
		s.lostLine = true
	}
	s.flags[i] = uint8(PhaseNew)
	if s.subs != nil {
		delete(s.subs, i)
	}
	s.setPos(i, 0, 0)
}

// op returns the operation of a submitted row, or of a resolved row whose operation was kept.
func (s *State) op(i int) (opEntry, bool) {
	e, ok := s.subs[i]
	return e, ok
}

func (s *State) setOp(i int, opID string, at int64) {
	if s.subs == nil {
		s.subs = make(map[int]opEntry)
	}
	s.subs[i] = opEntry{opID, at}
}

// end and lineLen say where row i's result line ends and how long it is (0: unknown).
func (s *State) end(i int) int64 {
	if p := s.pos[i]; p != posWide {
		return int64(p >> lenBits)
	}
	return s.wide[i].end
}

func (s *State) lineLen(i int) int64 {
	if p := s.pos[i]; p != posWide {
		return int64(p & maxLen)
	}
	return int64(s.wide[i].n)
}

// wideLine is a line that pos cannot pack.
type wideLine struct {
	end int64
	n   uint32
}

func (s *State) setPos(i int, end, n int64) {
	if s.pos == nil {
		return // lean: the journal says where the line is
	}
	if s.pos[i] == posWide {
		delete(s.wide, i)
	}
	if end < maxEnd && n <= maxLen { // (maxEnd, maxLen) would read as posWide
		s.pos[i] = uint64(end)<<lenBits | uint64(n)
		return
	}
	if s.wide == nil {
		s.wide = make(map[int]wideLine)
	}
	s.wide[i] = wideLine{end, uint32(min(n, math.MaxUint32))}
	s.pos[i] = posWide
}

// resolutionsOf and setResolutions read and write row i's count of resolutions.
func (s *State) resolutionsOf(i int) int {
	if n := s.resolutions[i]; n < math.MaxUint8 {
		return int(n)
	}
	return int(s.bigResolutions[i])
}

func (s *State) setResolutions(i, n int) {
	if n < math.MaxUint8 {
		if s.resolutions[i] == math.MaxUint8 {
			delete(s.bigResolutions, i)
		}
		s.resolutions[i] = uint8(n)
		return
	}
	if s.bigResolutions == nil {
		s.bigResolutions = make(map[int]uint16)
	}
	s.resolutions[i], s.bigResolutions[i] = math.MaxUint8, uint16(n)
}

// secondCounts counts submissions per second of the last hour of a journal (the S records,
// and a snapshot's T records), for the hour window of the submission quota across restarts.
// The current second is counted apart, so that a run of S records costs no map update each.
type secondCounts struct {
	m        map[int64]int
	sec, n   int64 // the second being counted, and its count so far
	maxSec   int64
	anything bool
}

func (c *secondCounts) add(ms int64, n int) {
	sec := ms / 1000
	if ms < 0 && ms%1000 != 0 {
		sec--
	}
	if !c.anything || sec != c.sec {
		c.flush()
		c.sec, c.n, c.anything = sec, 0, true
	}
	c.n += int64(n)
	c.maxSec = max(c.maxSec, sec)
}

// set replaces the count of a second (a snapshot's T record: the total of that second).
func (c *secondCounts) set(sec int64, n int) {
	c.flush()
	c.anything = false
	if c.m == nil {
		c.m = make(map[int64]int)
	}
	c.m[sec] = n
	c.maxSec = max(c.maxSec, sec)
}

func (c *secondCounts) flush() {
	if !c.anything || c.n == 0 {
		return
	}
	if c.m == nil {
		c.m = make(map[int64]int)
	}
	c.m[c.sec] += int(c.n)
	c.n = 0
	if len(c.m) > 2*3600 { // keep about an hour's worth of seconds
		for s := range c.m {
			if s <= c.maxSec-3600 {
				delete(c.m, s)
			}
		}
	}
}

// seconds returns the counted seconds of the last hour before the latest one, in time order.
func (c *secondCounts) seconds() []SecondCount {
	c.flush()
	out := make([]SecondCount, 0, len(c.m))
	for sec, n := range c.m {
		if sec > c.maxSec-3600 && n > 0 {
			out = append(out, SecondCount{Second: sec, N: n})
		}
	}
	slices.SortFunc(out, func(a, b SecondCount) int { return cmp.Compare(a.Second, b.Second) })
	return out
}

// SecondCount is how many submissions the journal records in one second (unix seconds).
type SecondCount struct {
	Second int64
	N      int
}

// SubmittedSince returns the submissions journaled after cut, counted per second, in time order.
// A second is counted whole if it ends after cut, so that a quota window seeded from it is
// never early.
func (s *State) SubmittedSince(cut time.Time) []SecondCount {
	all := s.recent.seconds()
	c := cut.Unix()
	i, _ := slices.BinarySearchFunc(all, c, func(sc SecondCount, c int64) int { return cmp.Compare(sc.Second, c) })
	return all[i:]
}

// Counts tallies the rows by phase.
func (s *State) Counts() Counts {
	var n [8]int
	for _, f := range s.flags {
		n[f&7]++
	}
	return Counts{Rows: len(s.flags), New: n[PhaseNew], InFlight: n[PhaseInFlight], Submitted: n[PhaseSubmitted],
		Succeeded: n[PhaseResolved], Failed: n[PhaseResolved|flagFailed]}
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
	n := s.ResultsEnd - int64(len(s.preamble))
	if s.pos == nil {
		return max(n-s.leanLen, 0) // right unless s.lostLine
	}
	for i := range s.flags {
		if s.Phase(i) == PhaseResolved {
			n -= s.lineLen(i)
		}
	}
	return max(n, 0)
}

// LineEnds returns, in increasing order, where the result line of every resolved row ends in
// the results file. A line that ends anywhere else belongs to no row any more: it was superseded
// by a later line of its row (or its row was reopened), and Finalize drops it. A state that Open
// loaded lean has no superseded line (SupersededBytes is 0: every line up to ResultsEnd is a
// row's), and none of them listed: LineEnds returns nil.
func (s *State) LineEnds() []int64 {
	if s.pos == nil {
		return nil
	}
	var out []int64
	for i := range s.flags {
		if s.Phase(i) == PhaseResolved && s.end(i) > 0 {
			out = append(out, s.end(i))
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
	return loadChecked(path, func(f *os.File) (*State, error) { return load(f) })
}

// LoadLean is Load for a caller that needs the header, the rows' phases and ResultsEnd but not
// where each row's line is, such as a check of an earlier run or a pass over its results file: it
// loads as Open does, keeping no row's line (8 bytes a row, 80 MB at ten million rows) and taking
// K records in place of the L records they sum up, and loads in full only when the lines matter
// (see loadForOpen). LineEnds of the state it returns is nil unless it loaded in full.
func LoadLean(path string) (*State, error) { return loadChecked(path, loadForOpen) }

// loadChecked opens the checkpoint at path for Load or LoadLean, loads it with load and settles an
// interrupted Finalize.
func loadChecked(path string, load func(*os.File) (*State, error)) (*State, error) {
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

// journalReader reads a journal's records one line at a time.
type journalReader struct {
	br      *bufio.Reader
	off     int64 // end of the lines consumed so far
	lineNo  int
	long    []byte // a line longer than br's buffer
	payload []byte // of the last line read, if it was a good record
	rec     record
	lines   []lineEntry
	raw     []byte // lines' decoded payload
	sum     summary
	done    bool
	// countOnly leaves L records undecoded but for their count (record.count), for Open's lean
	// load (loadOptions.summaries).
	countOnly bool
}

func newJournalReader(r io.Reader) *journalReader {
	return &journalReader{br: bufio.NewReaderSize(r, 1<<20)}
}

// next reads the next line: the first one's payload is left in jr.payload (the header); a later
// one is decoded into rec, or lines for an L record (both reused by the next call), unless it is
// not a usable record (reason). rows bounds the row numbers of st. It returns io.EOF after the
// last line, and other errors of r.
func (jr *journalReader) next(st *State) (rec *record, lines []lineEntry, reason, err error) {
	if jr.done {
		return nil, nil, nil, io.EOF
	}
	var (
		lineLen int64 // bytes of the current line read so far
		tooLong bool
		chunk   []byte
	)
	jr.long = jr.long[:0]
	for {
		chunk, err = jr.br.ReadSlice('\n')
		lineLen += int64(len(chunk))
		if !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
		if !tooLong && len(jr.long)+len(chunk) <= maxRecord {
			jr.long = append(jr.long, chunk...)
		} else {
			tooLong, jr.long = true, jr.long[:0]
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, nil, fmt.Errorf("read: %w", err)
	}
	if err != nil {
		jr.done = true // the last line, torn, or a clean end
	}
	if lineLen == 0 {
		return nil, nil, nil, io.EOF
	}
	line := chunk
	if len(jr.long) > 0 {
		jr.long = append(jr.long, chunk...)
		line = jr.long
	}
	jr.off += lineLen
	jr.lineNo++
	jr.payload = nil
	switch {
	case err != nil:
		return nil, nil, errTorn, nil
	case tooLong:
		return nil, nil, errTooLong, nil
	}
	if jr.payload, reason = checkRecord(line[:len(line)-1]); reason != nil || st == nil {
		return nil, nil, reason, nil
	}
	if jr.payload[0] == kindGroups {
		jr.rec = record{kind: kindGroups}
		if jr.rec.blob, reason = parseGroups(jr.payload, nil); reason != nil {
			return nil, nil, reason, nil
		}
		return &jr.rec, nil, nil, nil
	}
	if jr.payload[0] == kindLines && jr.countOnly {
		jr.rec = record{kind: kindLines}
		if jr.rec.count, _, reason = linesCount(jr.payload); reason != nil {
			return nil, nil, reason, nil
		}
		return &jr.rec, nil, nil, nil
	}
	if jr.payload[0] == kindSummary {
		jr.rec = record{kind: kindSummary}
		if reason = parseSummary(jr.payload, st.Len(), &jr.sum); reason != nil {
			return nil, nil, reason, nil
		}
		return &jr.rec, nil, nil, nil
	}
	if jr.payload[0] == kindLines {
		jr.rec = record{kind: kindLines}
		if reason = parseLines(jr.payload, st.Len(), &jr.lines, &jr.raw); reason != nil {
			return nil, nil, reason, nil
		}
		return &jr.rec, jr.lines, nil, nil
	}
	if jr.rec, reason = parseRecord(jr.payload, st.Len()); reason != nil {
		return nil, nil, reason, nil
	}
	return &jr.rec, nil, nil, nil
}

// badLine is an unusable line not yet known to be in the middle of the log.
type badLine struct {
	line   int
	reason error
}

func load(r io.Reader) (*State, error) { return loadWith(r, loadOptions{}) }

// loadKeeping is load that keeps the names and operations of the rows in the
// bit set keep (if not nil) when they are resolved: Open needs them for rows
// whose result lines are gone, to move them back.
func loadKeeping(r io.Reader, keep []uint64) (*State, error) {
	return loadWith(r, loadOptions{keep: keep})
}

// loadOptions are what a load keeps beyond the state of each row.
type loadOptions struct {
	keep        []uint64 // rows whose names and operations a resolution does not drop
	resolutions bool     // count each row's resolutions (State.resolutions), for writeSnapshot
	// lean keeps no row's line (State.pos, 8 bytes a row, 80 MB at ten million rows): for
	// writeSnapshot, which then takes each resolved row's line from the journal as it reads it
	// again, and for Open when no line needs moving (see loadForOpen). Its ResultsEnd and
	// SupersededBytes are right only while no row lost a line (State.lostLine).
	lean bool
	// summaries, the journal read again, lets a lean load take a K record in place of the L
	// records it sums up, reading them without decoding them (see kindSummary): for Open. Not
	// with keep or resolutions, which need each row of the L records.
	summaries io.ReaderAt
}

func loadWith(r io.Reader, opt loadOptions) (*State, error) {
	var (
		pending []badLine // bad lines after the last good record
		nBad    int       // len(pending) plus those not kept
	)
	jr := newJournalReader(r)
	dh, err := readHeader(jr)
	if err != nil {
		return nil, err
	}
	st := newState(dh.Header, dh.ResultsPreamble, opt.lean)
	if len(opt.keep) == (st.Len()+63)/64 {
		st.keepNames = opt.keep
	}
	if opt.resolutions {
		st.resolutions = make([]uint8, st.Len())
	}
	st.validEnd = jr.off
	// handle replays one line of the journal, ending at byte end: a record, or a line that is
	// not one (reason).
	handle := func(rec *record, lines []lineEntry, reason error, lineNo int, end int64) {
		if reason != nil {
			nBad++
			if len(pending) < maxProblems {
				pending = append(pending, badLine{lineNo, reason})
			}
			return
		}
		if nBad > 0 {
			// A good record after bad ones: they were damaged in
			// the middle of the log, not torn at its end.
			for _, b := range pending {
				st.addProblem("checkpoint line %d: %v: record skipped", b.line, b.reason)
			}
			st.overflown += nBad - len(pending)
			pending, nBad = pending[:0], 0
		}
		if rec.kind == kindLines {
			if reason = st.checkLines(lines); reason != nil {
				nBad++
				if len(pending) < maxProblems {
					pending = append(pending, badLine{lineNo, reason})
				}
				return
			}
			st.applyLines(lines)
		} else {
			st.apply(rec)
		}
		st.validEnd = end
		st.hasFinal = rec.kind == kindFinalize
		if st.hasFinal {
			st.final = *rec
		}
	}
	// With opt.summaries, L records wait undecoded in block for the K record that sums them up;
	// anything else in its place, and they are read again and decoded after all.
	jr.countOnly = opt.summaries != nil && opt.lean && opt.keep == nil && !opt.resolutions
	var block pendingLines
	replay := func() error {
		b := block
		if block = (pendingLines{}); b.records == 0 {
			return nil
		}
		again := newJournalReader(io.NewSectionReader(opt.summaries, b.start, b.end-b.start))
		again.lineNo = b.line - 1
		for {
			rec, lines, reason, err := again.next(st)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			handle(rec, lines, reason, again.lineNo, b.start+again.off)
		}
	}
	for {
		at := jr.off
		rec, lines, reason, err := jr.next(st)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if reason == nil && jr.countOnly && rec.kind == kindLines {
			if block.records == 0 {
				block = pendingLines{start: at, line: jr.lineNo, cursor: st.cursor}
			}
			block.records, block.rows, block.end = block.records+1, block.rows+rec.count, jr.off
			continue
		}
		if reason == nil && rec.kind == kindSummary && block.records > 0 && block.matches(&jr.sum) {
			st.applySummary(&jr.sum)
			block = pendingLines{}
		} else if err := replay(); err != nil {
			return nil, err
		}
		handle(rec, lines, reason, jr.lineNo, jr.off)
	}
	if err := replay(); err != nil {
		return nil, err
	}
	lineNo := jr.lineNo
	off := jr.off
	st.DroppedBytes = off - st.validEnd
	if nBad > 1 {
		st.addProblem("checkpoint lines %d-%d at the end are unreadable (%v first): dropped %d bytes",
			pending[0].line, lineNo, pending[0].reason, st.DroppedBytes)
	}
	for row := range st.Named {
		// Named again after its resolution, without a reopen.
		if st.Phase(row) == PhaseResolved && !st.keeps(row) {
			delete(st.Named, row)
		}
	}
	st.ResultsEnd = int64(len(st.preamble))
	if st.pos == nil {
		st.ResultsEnd = max(st.ResultsEnd, st.leanEnd) // right unless st.lostLine
	} else {
		for i := range st.flags {
			if st.Phase(i) == PhaseResolved {
				st.ResultsEnd = max(st.ResultsEnd, st.end(i))
			}
		}
	}
	st.keepNames = nil
	st.finishProblems()
	return st, nil
}

// readHeader reads the journal's first record, its header.
func readHeader(jr *journalReader) (*diskHeader, error) {
	_, _, reason, err := jr.next(nil)
	switch {
	case err == io.EOF:
		return nil, fmt.Errorf("%w: the file is empty", ErrNoHeader)
	case err != nil:
		return nil, err
	case reason != nil:
		return nil, fmt.Errorf("%w: first record: %v", ErrNoHeader, reason)
	}
	return parseHeader(jr.payload)
}

func parseHeader(payload []byte) (*diskHeader, error) {
	if len(payload) < 2 || payload[0] != kindHeader || payload[1] != ' ' {
		return nil, fmt.Errorf("%w: first record is not a header", ErrNoHeader)
	}
	var dh diskHeader
	if err := json.Unmarshal(payload[2:], &dh); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrNoHeader, err)
	}
	if dh.Version < minVersion || dh.Version > BatchVersion {
		return nil, fmt.Errorf("%w %d (this batchgpt reads versions %d to %d)", ErrVersion, dh.Version, minVersion, BatchVersion)
	}
	if dh.Rows < 0 || dh.Rows > MaxRows {
		return nil, fmt.Errorf("%w: header: rows %d out of range", ErrNoHeader, dh.Rows)
	}
	return &dh, nil
}

// LoadHeader reads the header of the checkpoint at path and nothing after it: what a command
// needs to know which backend made it, without loading ten million rows to learn it.
func LoadHeader(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	dh, err := readHeader(newJournalReader(f))
	if err != nil {
		return Header{}, fmt.Errorf("%s: %w", path, err)
	}
	return dh.Header, nil
}

// apply replays one record; the latest record of a row wins.
func (s *State) apply(r *record) {
	switch r.kind {
	case kindPosition:
		s.cursor = r.end
		return
	case kindGroups:
		s.groups = append(s.groups, r.blob...)
		return
	case kindFinalize:
		return // see settleFinalize
	case kindSeconds:
		s.recent.set(r.at, int(r.end))
		return
	case kindStep:
		s.Steps = append(s.Steps, json.RawMessage(bytes.Clone(r.raw)))
		return
	case kindSummary:
		return // used in place of the L records before it, or not at all (loadWith)
	}
	i := r.row
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
		s.Named[i] = Named{ID: r.id, Key: r.key, Model: s.model}
	case kindIntent:
		s.setNew(i)
		s.flags[i] = uint8(PhaseInFlight)
		s.setAttempt(i, r.attempt)
	case kindSubmitted:
		s.setNew(i)
		s.flags[i] = uint8(PhaseSubmitted)
		s.setAttempt(i, r.attempt)
		s.setOp(i, string(r.opID), r.at)
		s.recent.add(r.at, 1)
	case kindResolved:
		s.resolve(i, r.failed, r.end)
	case kindReopen:
		s.setNew(i)
		if r.reset {
			s.setAttempt(i, 0)
		}
	case kindDoubt:
		s.Doubts++
		if d := s.doubts[i]; d < math.MaxUint16 {
			if s.doubts == nil {
				s.doubts = make(map[int]uint16)
			}
			s.doubts[i] = d + 1
		}
		// The try in flight, or the operation journaled, is now counted as a possible
		// duplicate: the row is new again, so a crash before its next I record cannot leave
		// the same try in doubt to be counted a second time.
		if p := s.Phase(i); p == PhaseInFlight || p == PhaseSubmitted {
			s.setNew(i)
		}
	}
}

// resolve replays an R record (or one line of an L record): row i's line ends at end and starts
// at the cursor.
func (s *State) resolve(i int, failed bool, end int64) {
	if s.Named != nil && !s.keeps(i) {
		delete(s.Named, i)
	}
	if s.subs != nil && !s.keeps(i) {
		delete(s.subs, i)
	}
	if s.resolutions != nil {
		if n := s.resolutionsOf(i); n < math.MaxUint16 {
			s.setResolutions(i, n+1)
		} else {
			s.saturated = true
		}
	}
	if s.pos == nil {
		s.lostLine = s.lostLine || s.Phase(i) == PhaseResolved
		s.leanEnd, s.leanLen = max(s.leanEnd, end), s.leanLen+lineLen(s.cursor, end)
	}
	s.flags[i] = uint8(PhaseResolved)
	if failed {
		s.flags[i] |= flagFailed
	}
	s.setPos(i, end, lineLen(s.cursor, end))
	s.cursor = end
}

// lineLen returns the length of the line that ends at end and starts at the cursor: 0 (unknown)
// if that makes no sense (a line cut by a repair, or longer than 4 GiB).
func lineLen(cursor, end int64) int64 {
	if d := end - cursor; d > 0 && d <= math.MaxUint32 {
		return d
	}
	return 0
}

// checkLines reports whether an L record's lines start within the results file.
func (s *State) checkLines(lines []lineEntry) error { return checkLines(s.cursor, lines) }

// checkLines reports whether lines, starting at cursor c, start within the results file.
func checkLines(c int64, lines []lineEntry) error {
	for k := range lines {
		if c += lines[k].skip; c < 0 {
			return errSyntax
		}
		c += lines[k].n
	}
	return nil
}

// applyLines replays an L record: resolved rows whose lines follow each other from the cursor on.
func (s *State) applyLines(lines []lineEntry) {
	for k := range lines {
		e := &lines[k]
		i := int(e.row)
		s.setAttempt(i, int(e.attempt))
		if len(e.opID) > 0 && s.keeps(i) {
			s.setOp(i, string(e.opID), e.at)
		}
		s.cursor += e.skip
		s.resolve(i, e.failed, s.cursor+e.n)
	}
}

func (s *State) keeps(row int) bool { return inSet(s.keepNames, row) }

// inSet reports whether row is in the bit set (nil: empty).
func inSet(set []uint64, row int) bool {
	return row/64 < len(set) && set[row/64]&(1<<(row%64)) != 0
}
