package batchjob

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"

	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/store"
)

// Step names, in the order a run journals them (see the package doc).
const (
	stepCreating       = "creating"
	stepCreated        = "created"
	stepUploaded       = "uploaded"
	stepValidated      = "validated"
	stepTaskStarting   = "task_starting"
	stepTaskStarted    = "task_started"
	stepProgress       = "progress"
	stepResultsFetched = "results_fetched"
	stepCancel         = "cancel"
	stepCleaned        = "cleaned"
)

// runLabel is the label of a run's datasets that finds them again after a crash.
const runLabel = "batchgpt_run"

// step is one B record of the checkpoint. Nothing secret goes in it: no credentials, no
// presigned URL.
type step struct {
	Step      string                     `json:"step"`
	Gen       int                        `json:"gen,omitempty"`
	Name      string                     `json:"name,omitempty"`
	Labels    map[string]string          `json:"labels,omitempty"`
	Rows      string                     `json:"rows,omitempty"`  // creating: the dataset's rows, a deflated bit set in base64
	Count     int                        `json:"count,omitempty"` // creating: how many rows that is
	Dataset   string                     `json:"dataset,omitempty"`
	Size      int64                      `json:"size,omitempty"`
	SHA256    string                     `json:"sha256,omitempty"`
	Found     string                     `json:"found,omitempty"` // the status a lookup found instead of calling
	Valid     bool                       `json:"valid,omitempty"`
	Errors    []batchapi.ValidationError `json:"errors,omitempty"`
	Task      string                     `json:"task,omitempty"`
	Operation string                     `json:"operation,omitempty"`
	Status    string                     `json:"status,omitempty"`
	Completed int64                      `json:"completed,omitempty"`
	Total     int64                      `json:"total,omitempty"`
}

// gen is one dataset of the run: the first, or one made of the valid rows of the one before.
type gen struct {
	n         int
	name      string
	labels    map[string]string
	rows      []uint64 // bit set of the rows uploaded, in input order
	count     int
	dataset   string
	uploaded  bool
	size      int64
	sha256    string
	validated bool
	valid     bool
	errors    []batchapi.ValidationError
}

// journal is what the steps of a checkpoint say, replayed.
type journal struct {
	gens         []*gen
	taskStarting bool
	taskDataset  string
	task, op     string
	status       string
	completed    int64
	total        int64
	fetched      bool
	cancel       bool
	cleaned      bool
}

// last is the current generation, nil before the first "creating".
func (j *journal) last() *gen {
	if len(j.gens) == 0 {
		return nil
	}
	return j.gens[len(j.gens)-1]
}

// replay reads the steps of a checkpoint. rows bounds the bit sets.
func replay(raw []json.RawMessage, rows int) (*journal, error) {
	j := &journal{}
	for i, r := range raw {
		var s step
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("batch step %d: %w", i+1, err)
		}
		if err := j.apply(&s, rows); err != nil {
			return nil, fmt.Errorf("batch step %d (%s): %w", i+1, s.Step, err)
		}
	}
	return j, nil
}

func (j *journal) apply(s *step, rows int) error {
	g := j.last()
	switch s.Step {
	case stepCreated, stepUploaded, stepValidated:
		if g == nil || g.n != s.Gen {
			return fmt.Errorf("step of dataset %d, but the current one is not", s.Gen)
		}
	}
	switch s.Step {
	case stepCreating:
		set, err := decodeRows(s.Rows, rows)
		if err != nil {
			return err
		}
		j.gens = append(j.gens, &gen{n: s.Gen, name: s.Name, labels: s.Labels, rows: set, count: s.Count})
	case stepCreated:
		g.dataset = s.Dataset
	case stepUploaded:
		g.uploaded, g.size, g.sha256 = true, s.Size, s.SHA256
	case stepValidated:
		g.validated, g.valid, g.errors = true, s.Valid, s.Errors
	case stepTaskStarting:
		j.taskStarting, j.taskDataset = true, s.Dataset
	case stepTaskStarted:
		j.task, j.op = s.Task, s.Operation
	case stepProgress:
		j.status, j.completed, j.total = s.Status, s.Completed, s.Total
	case stepResultsFetched:
		j.fetched = true
	case stepCancel:
		j.cancel = true
	case stepCleaned:
		j.cleaned = true
	default:
		return fmt.Errorf("unknown step %q (a newer batchgpt wrote it?)", s.Step)
	}
	return nil
}

// record journals s (durable when it returns) and replays it into j.
func (j *journal) record(w *store.Writer, s step, rows int) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode batch step %s: %w", s.Step, err)
	}
	if err := w.Step(raw); err != nil {
		return fmt.Errorf("journal batch step %s: %w", s.Step, err)
	}
	return j.apply(&s, rows)
}

// encodeRows packs a bit set of rows for a "creating" step: deflated, since a dataset's rows are
// mostly runs of ones.
func encodeRows(set []uint64) (string, error) {
	var b bytes.Buffer
	zw, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 8)
	for _, w := range set {
		binary.LittleEndian.PutUint64(buf, w)
		if _, err := zw.Write(buf); err != nil {
			return "", err
		}
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b.Bytes()), nil
}

func decodeRows(s string, rows int) ([]uint64, error) {
	z, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("rows: %w", err)
	}
	words := (rows + 63) / 64
	raw, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), int64(words)*8+1))
	if err != nil {
		return nil, fmt.Errorf("rows: %w", err)
	}
	if len(raw) != words*8 {
		return nil, fmt.Errorf("rows: %d bytes for %d rows", len(raw), rows)
	}
	set := make([]uint64, words)
	for i := range set {
		set[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	if rows%64 != 0 && words > 0 && set[words-1]>>(rows%64) != 0 {
		return nil, fmt.Errorf("rows: a row beyond the %d of the run", rows)
	}
	return set, nil
}

// members lists the rows of a bit set in order.
func members(set []uint64) []int32 {
	var out []int32
	for w, word := range set {
		for word != 0 {
			out = append(out, int32(w*64+bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	return out
}

// newRunLabel is a random value of runLabel: one per dataset, so that a lookup finds that
// dataset and no other.
func newRunLabel() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
