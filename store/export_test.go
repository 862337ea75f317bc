package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// Hooks for the black-box tests in package store_test.

type File = file

// Shortcuts for the tests: the program always passes a callback.

// Submitted is SubmittedThen without a callback.
func (w *Writer) Submitted(row, attempt int, opID string, at time.Time) error {
	return w.SubmittedThen(row, attempt, opID, at, nil)
}

// Result is ResultThen without a callback.
func (w *Writer) Result(row int, failed bool, line []byte) error {
	return w.ResultThen(row, failed, line, nil)
}

// Stats returns how many group commits (journal fsyncs) and journal records
// the Writer has made.
func (w *Writer) Stats() (commits, records int64) {
	return w.commits.Load(), w.recordCount.Load()
}

// String names a phase in test failures.
func (p Phase) String() string {
	switch p {
	case PhaseNew:
		return "new"
	case PhaseInFlight:
		return "in-flight"
	case PhaseSubmitted:
		return "submitted"
	case PhaseResolved:
		return "resolved"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// LoadReader loads a checkpoint from r, as Load does from a file.
func LoadReader(r io.Reader) (*State, error) { return load(r) }

// Hooks are the seams of one Create and of the Writer it returns: CreateTemp
// makes its temp files, WrapFile wraps the Writer's journal and results file.
type Hooks struct {
	CreateTemp func(dir, pattern string) (*os.File, error)
	WrapFile   func(*os.File) File
	CompactMin int64 // the smallest journal the Writer compacts on its own
}

func (hk Hooks) hooks() *hooks {
	return &hooks{createTemp: hk.CreateTemp, wrapFile: hk.WrapFile, compactMin: hk.CompactMin}
}

// CreateWith is Create with hooks.
func CreateWith(hk Hooks, path string, h Header, preamble []byte, force bool) (*Writer, error) {
	return create(path, h, preamble, force, hk.hooks())
}

// OpenWith is Open with hooks.
func OpenWith(hk Hooks, path string) (*Writer, *State, error) { return openWith(path, hk.hooks()) }

// JournalSize is the journal's size as the writer counts it.
func (w *Writer) JournalSize() int64 { return w.journalSize }

// Record frames payload as a journal line: payload, checksum, newline.
func Record(payload string) []byte {
	return appendSum([]byte(payload), 0)
}

// HeaderRecord returns the header line Create writes for h and preamble.
func HeaderRecord(h Header, preamble []byte) []byte {
	b, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: preamble})
	if err != nil {
		panic(err)
	}
	return appendHeaderRecord(nil, b)
}

// SetMaxRecord changes the longest journal line accepted until restore is
// called. It is the one seam that belongs to the package (the loader has no
// Writer): a test that sets it must not run in parallel.
func SetMaxRecord(n int) (restore func()) {
	old := maxRecord
	maxRecord = n
	return func() { maxRecord = old }
}

// Steps of Finalize, for SetFinalizeHook.
const (
	StepResultsTemp   = stepResultsTemp
	StepJournalTemp   = stepJournalTemp
	StepIntent        = stepIntent
	StepResultsRename = stepResultsRename
	StepJournalRename = stepJournalRename
)

// SetFinalizeHook makes w's Finalize call f after each step until restore is
// called; an error from f stops Finalize there as if the process had died.
// Neither may be called while a Finalize is under way.
func (w *Writer) SetFinalizeHook(f func(step int) error) (restore func()) {
	old := w.hooks.afterStep
	w.hooks.afterStep = f
	return func() { w.hooks.afterStep = old }
}

// Span returns where row's result line lies in the results file, as st
// knows it (0, 0 unless resolved; start == end when unknown).
func Span(st *State, row int) (start, end int64) {
	return st.end(row) - st.lineLen(row), st.end(row)
}

// SetCopySizes changes the batch and gap sizes of w's Finalize copy. It may
// not be called while a Finalize is under way.
func (w *Writer) SetCopySizes(batch, gap int64) {
	w.hooks.copy = copySizes{batch: batch, gap: gap}
}

// Rows returns every row of st, as State.Row does one.
func Rows(st *State) []Row {
	out := make([]Row, st.Len())
	for i := range out {
		out[i] = st.Row(i)
	}
	return out
}

// WriteSnapshot writes the snapshot of the journal at path to out, as a compaction does.
func WriteSnapshot(path string, out io.Writer) error {
	st, err := loadForSnapshot(path)
	if err != nil {
		return err
	}
	return snapshotOf(out, st, path)
}

// Snapshots writes the snapshot of the journal in data twice: from a state loaded with every
// row's line (Finalize, Open, Archive) and from a lean one (the writer's compactions).
func Snapshots(data []byte) (full, lean []byte, err error) {
	for _, opt := range []loadOptions{{resolutions: true}, {resolutions: true, lean: true}} {
		st, err := loadWith(bytes.NewReader(data), opt)
		if err != nil {
			return nil, nil, err
		}
		var out bytes.Buffer
		if err := writeSnapshot(&out, st, bytes.NewReader(data)); err != nil {
			return nil, nil, err
		}
		if opt.lean {
			lean = out.Bytes()
		} else {
			full = out.Bytes()
		}
	}
	return full, lean, nil
}

// Lean reports whether st was loaded without its rows' lines (Open's lean load).
func Lean(st *State) bool { return st.pos == nil }

// Summaries returns how many K records the load of st took in place of L records.
func Summaries(st *State) int { return st.summaries }

// LoadLeanTwice loads data lean as Open does, taking K records in place of the L records they
// sum up, and lean again decoding every L record.
func LoadLeanTwice(data []byte) (summed, decoded *State, err1, err2 error) {
	r := bytes.NewReader(data)
	summed, err1 = loadWith(io.NewSectionReader(r, 0, int64(len(data))), loadOptions{lean: true, summaries: r})
	decoded, err2 = loadWith(bytes.NewReader(data), loadOptions{lean: true})
	return summed, decoded, err1, err2
}

// LeanView describes what a lean state keeps besides its rows.
func LeanView(st *State) string {
	return fmt.Sprintf("cursor %d, lines end %d and take %d bytes, lost a line %v, valid to %d, final %v %+v",
		st.cursor, st.leanEnd, st.leanLen, st.lostLine, st.validEnd, st.hasFinal, st.final)
}

// LoadLeanWith loads the journal at path lean, as Open does when no line needs moving, taking K
// records in place of the L records they sum up or not, and never in full.
func LoadLeanWith(path string, summaries bool) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	opt := loadOptions{lean: true}
	if summaries {
		opt.summaries = f
	}
	return loadWith(io.NewSectionReader(f, 0, 1<<62), opt)
}

// EachNamedReader is EachNamed over data.
func EachNamedReader(data []byte, fn func(row int, n Named) error) error {
	return eachNamed(bytes.NewReader(data), fn)
}

// NamesKept returns the names that a load of data keeping every row's name ends with: the
// latest N record of each row, resolved or not.
func NamesKept(data []byte) (map[int]Named, error) {
	dh, err := readHeader(newJournalReader(bytes.NewReader(data)))
	if err != nil {
		return nil, err
	}
	all := make([]uint64, (dh.Rows+63)/64)
	for i := range all {
		all[i] = ^uint64(0)
	}
	st, err := loadKeeping(bytes.NewReader(data), all)
	if err != nil {
		return nil, err
	}
	return st.Named, nil
}
