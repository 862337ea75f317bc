package batchjob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// Backend is the value of Settings.Backend, and of the run flag --backend, for this package.
const Backend = "batch"

// Defaults of Config.
const (
	DefaultPollEvery     = 30 * time.Second
	DefaultProgressEvery = time.Minute
)

// Settings are a batch run's settings as its checkpoint keeps them (never secrets): the
// asynchronous backend's, whose Endpoint is here the gRPC host:port of batch mode, and the
// backend's own.
type Settings struct {
	job.Settings
	Backend string `json:"backend"`
	// Cleanup deletes the run's datasets and its task once every result is durable.
	Cleanup bool `json:"cleanup,omitempty"`
}

// Config is everything a batch run or resume needs.
type Config struct {
	Input, Checkpoint, Output string
	Force                     bool
	Settings                  Settings

	Credentials auth.Source
	// Connect, when Credentials is nil, finds the credentials once the input is known to be valid,
	// so that a bad input is reported first and without any credential lookup.
	Connect func(context.Context) (auth.Source, error)
	// Insecure dials plaintext, which batchapi allows on a loopback endpoint only (the emulator).
	Insecure   bool
	HTTPClient *http.Client
	PartSize   int64 // 0: batchapi's default
	// PollEvery is how often a running task is described (DefaultPollEvery if 0): a task takes
	// hours, and every call counts against the quota.
	PollEvery time.Duration
	// ProgressEvery is the least time between two progress steps (DefaultProgressEvery if 0).
	ProgressEvery time.Duration
	// Cache answers rows before the dataset is built and keeps the task's answers; nil for none.
	Cache    job.ResultCache
	CacheTTL time.Duration
	Logger   *slog.Logger
	// MaxInputErrors bounds how many input problems are listed (50 if 0).
	MaxInputErrors int
	// Crash, if set, is called at "before:<step>" (the call the step records is made, the step
	// not journaled) and "after:<step>" (durable); an error stops the run right there, as a kill
	// would (tests).
	Crash func(point string) error
}

// Engine is one batch run or resume.
type Engine struct {
	cfg Config
	log *slog.Logger

	w       *store.Writer
	h       store.Header
	t       *table
	j       *journal
	client  *batchapi.Client
	csvCols []string

	resolved []uint64 // rows whose result line is queued or durable

	succeeded, failed, cached, deduped atomic.Int64
	// What Progress reads besides the counts of this process: the rows, and those resolved
	// before it (a resume), set once the checkpoint is open.
	rows, doneBefore, succeededBefore atomic.Int64
	mu                                sync.Mutex
	failedByKind                      map[string]int
	toCache                           []cache.Entry // answers whose lines are durable, not yet stored
	cacheProblem                      string
}

// New prepares an engine.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = DefaultPollEvery
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.MaxInputErrors <= 0 {
		cfg.MaxInputErrors = 50
	}
	cfg.Settings.Backend = Backend
	return &Engine{cfg: cfg, log: cfg.Logger, failedByKind: map[string]int{}}
}

// IsBatch reports whether h is the header of a batch run's checkpoint.
func IsBatch(h store.Header) bool { return h.Version == store.BatchVersion }

// scope is where the run's answers come from, part of their cache keys: the emulator's never
// answer a real run.
func (s Settings) scope() string {
	if s.Emulator {
		return "emulator"
	}
	return "batch:" + s.Endpoint
}

// cacheScope is the scope of the run's cache keys, "" when it uses no cache.
func (e *Engine) cacheScope() string {
	if e.cfg.Cache == nil || e.cfg.Settings.NoCache {
		return ""
	}
	return e.cfg.Settings.scope()
}

// Run validates the input, creates the checkpoint and runs the job.
func (e *Engine) Run(ctx context.Context) (job.Summary, error) {
	start := time.Now()
	cfg := e.cfg
	// Validation and the table build what lasts a few dozen bytes a row: collected often, as the
	// asynchronous backend's validation is, and given back before the run goes on.
	heapDone := sync.OnceFunc(job.Validating())
	defer heapDone()
	sum, err := batch.Validate(cfg.Input, cfg.Settings.Input, cfg.MaxInputErrors)
	if err != nil {
		return job.Summary{}, err
	}
	if sum.Rows == 0 {
		return job.Summary{}, fmt.Errorf("%s: no rows to process", cfg.Input)
	}
	if prev, err := store.Load(cfg.Checkpoint); err == nil && !cfg.Force {
		// The same command every night: the run of this input carries on, or has nothing to do.
		if IsBatch(prev.Header) && prev.Header.InputSHA256 == sum.SHA256 && prev.Header.InputSize == sum.Size &&
			sameSettings(prev.Header.Settings, cfg.Settings) {
			e.log.Info("resuming the batch run of this input", "checkpoint", cfg.Checkpoint)
			return e.Resume(ctx)
		}
		if c := prev.Counts(); c.Succeeded+c.Failed < c.Rows {
			return job.Summary{}, fmt.Errorf("checkpoint %s %w for another run, not finished: use `batchgpt resume %s` to finish that run, or --force to abandon it",
				cfg.Checkpoint, store.ErrExists, cfg.Checkpoint)
		}
		// The nightly pattern over a file exported anew: the finished run of another night goes
		// to dated names beside it, as the asynchronous backend's does.
		if err := job.ArchiveRun(cfg.Checkpoint, prev.Header, e.log); err != nil {
			return job.Summary{}, err
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) && !cfg.Force {
		return job.Summary{}, fmt.Errorf("%w (--force starts over and replaces it)", err)
	}
	t, err := readTable(cfg.Input, cfg.Settings.Input, e.cacheScope(), sum.Rows, cfg.MaxInputErrors)
	if err != nil {
		return job.Summary{}, err
	}
	heapDone()
	settings, err := json.Marshal(cfg.Settings)
	if err != nil {
		return job.Summary{}, fmt.Errorf("encode settings: %w", err)
	}
	input, err := filepath.Abs(cfg.Input)
	if err != nil {
		return job.Summary{}, fmt.Errorf("input: %w", err)
	}
	results, err := filepath.Abs(cfg.Output)
	if err != nil {
		return job.Summary{}, fmt.Errorf("results: %w", err)
	}
	format := job.ResultsFormat(results)
	pre, err := job.Preamble(format)
	if err != nil {
		return job.Summary{}, err
	}
	h := store.Header{Version: store.BatchVersion, Created: time.Now().UTC(), Input: input, InputSHA256: sum.SHA256,
		InputSize: sum.Size, Rows: sum.Rows, Results: results, ResultsFormat: format, Settings: settings}
	w, err := store.Create(cfg.Checkpoint, h, pre, cfg.Force)
	if err != nil {
		return job.Summary{}, err
	}
	return e.execute(ctx, start, w, &store.State{Header: h}, t)
}

// Resume reopens a batch run's checkpoint and carries on from its last step.
func (e *Engine) Resume(ctx context.Context) (job.Summary, error) {
	start := time.Now()
	w, st, err := store.Open(e.cfg.Checkpoint)
	if err != nil {
		return job.Summary{}, err
	}
	for _, p := range st.Problems {
		e.log.Warn("checkpoint repaired", "checkpoint", e.cfg.Checkpoint, "problem", p)
	}
	if !IsBatch(st.Header) {
		w.Close()
		return job.Summary{}, fmt.Errorf("checkpoint %s is not a batch run's (version %d)", e.cfg.Checkpoint, st.Header.Version)
	}
	var s Settings
	if err := json.Unmarshal(st.Header.Settings, &s); err != nil {
		w.Close()
		return job.Summary{}, fmt.Errorf("checkpoint %s: settings: %w", e.cfg.Checkpoint, err)
	}
	if s.Emulator && !e.cfg.Settings.Emulator {
		w.Close()
		return job.Summary{}, fmt.Errorf("checkpoint %s was made against the built-in emulator: resume it with --emulator", e.cfg.Checkpoint)
	}
	// Everything but where the emulator listens is the run's own; --cleanup may be added.
	endpoint, cleanup := e.cfg.Settings.Endpoint, e.cfg.Settings.Cleanup
	e.cfg.Settings = s
	e.cfg.Settings.Cleanup = s.Cleanup || cleanup
	if s.Emulator {
		e.cfg.Settings.Endpoint = endpoint
	}
	e.cfg.Input = st.Header.Input
	if err := job.CheckInputHash(st.Header); err != nil {
		w.Close()
		return job.Summary{}, err
	}
	heapDone := job.Validating()
	t, err := readTable(st.Header.Input, s.Input, e.cacheScope(), st.Header.Rows, e.cfg.MaxInputErrors)
	heapDone()
	if err != nil {
		w.Close()
		return job.Summary{}, fmt.Errorf("resume: %w", err)
	}
	return e.execute(ctx, start, w, st, t)
}

// sameSettings reports whether a checkpoint's settings ask for what s asks: the same requests to
// the same place. Where the emulator listens changes with every start; --cleanup may be added.
func sameSettings(raw json.RawMessage, s Settings) bool {
	var old Settings
	if json.Unmarshal(raw, &old) != nil {
		return false
	}
	if old.Emulator && s.Emulator {
		old.Endpoint = s.Endpoint
	}
	old.Cleanup, old.Limits = s.Cleanup, s.Limits
	return reflect.DeepEqual(old, s)
}

// execute runs the steps left from st's on.
func (e *Engine) execute(ctx context.Context, start time.Time, w *store.Writer, st *store.State, t *table) (sum job.Summary, err error) {
	e.w, e.h, e.t = w, st.Header, t
	e.resolved = make([]uint64, (e.h.Rows+63)/64)
	base := store.Counts{Rows: e.h.Rows}
	if st.Len() > 0 {
		base = st.Counts()
		for i := range st.Len() {
			if st.Phase(i) == store.PhaseResolved {
				e.resolved[i/64] |= 1 << (i % 64)
			}
		}
	}
	e.rows.Store(int64(e.h.Rows))
	e.doneBefore.Store(int64(base.Succeeded + base.Failed))
	e.succeededBefore.Store(int64(base.Succeeded))
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close checkpoint: %w", cerr)
		}
		e.storeAnswers()
		if e.client != nil {
			_ = e.client.Close()
		}
		sum = e.summary(base, start)
		if err != nil && ctx.Err() != nil && !errors.Is(err, job.ErrInterrupted) && e.resolvedCount() < e.h.Rows {
			err = fmt.Errorf("%w: %w", job.ErrInterrupted, err)
		}
		sum.Interrupted = errors.Is(err, job.ErrInterrupted)
	}()
	if e.j, err = replay(st.Steps, e.h.Rows); err != nil {
		return sum, fmt.Errorf("checkpoint %s: %w", e.cfg.Checkpoint, err)
	}
	if e.h.ResultsFormat == job.FormatCSV {
		if e.csvCols, err = job.CSVHeader(e.h.Results); err != nil {
			return sum, err
		}
	}
	if e.cfg.Credentials == nil && e.cfg.Connect != nil {
		if e.cfg.Credentials, err = e.cfg.Connect(ctx); err != nil {
			return sum, err
		}
	}
	e.client, err = batchapi.Dial(ctx, batchapi.Config{Endpoint: e.cfg.Settings.Endpoint, Insecure: e.cfg.Insecure,
		Credentials: e.cfg.Credentials, FolderID: e.cfg.Settings.Input.Folder, HTTPClient: e.cfg.HTTPClient,
		PartSize: e.cfg.PartSize, TempDir: filepath.Dir(e.cfg.Checkpoint), Logger: e.log})
	if err != nil {
		return sum, err
	}
	if err := e.steps(ctx); err != nil {
		return sum, err
	}
	return sum, job.Finalize(w, e.cfg.Settings.Order == job.OrderInput)
}

// record journals a step, between the two points of the Crash hook.
func (e *Engine) record(s step) error {
	if e.cfg.Crash != nil {
		if err := e.cfg.Crash("before:" + s.Step); err != nil {
			return err
		}
	}
	if err := e.j.record(e.w, s, e.h.Rows); err != nil {
		return err
	}
	if e.cfg.Crash != nil {
		return e.cfg.Crash("after:" + s.Step)
	}
	return nil
}

// steps moves the run from its last journaled step to its end.
func (e *Engine) steps(ctx context.Context) error {
	j := e.j
	if j.last() == nil && !j.cancel {
		if err := e.answerFromCache(ctx); err != nil {
			return err
		}
		if err := e.newGen(e.openLeaders(nil)); err != nil {
			return err
		}
	}
	for !j.fetched {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", job.ErrInterrupted, err)
		}
		g := j.last()
		var err error
		switch {
		case j.cancel && j.task == "":
			err = e.cancelled(ctx, g)
		case g == nil || g.count == 0:
			err = e.record(step{Step: stepResultsFetched}) // nothing left to send
		case g.dataset == "":
			err = e.createDataset(ctx, g)
		case !g.uploaded:
			err = e.upload(ctx, g)
		case !g.validated:
			err = e.validate(ctx, g)
		case !g.valid:
			err = e.invalidRows(g)
		case j.task == "":
			err = e.startTask(ctx, g)
		default:
			err = e.await(ctx, g)
		}
		if err != nil {
			return err
		}
	}
	if e.cfg.Settings.Cleanup && !j.cleaned {
		return e.cleanup(ctx)
	}
	return nil
}

// isResolved reports whether row i's result line is queued or durable.
func (e *Engine) isResolved(i int32) bool { return e.resolved[i/64]&(1<<(i%64)) != 0 }

func (e *Engine) resolvedCount() int {
	n := 0
	for _, w := range e.resolved {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// openLeaders returns the bit set of the leaders not resolved, of the rows in within (all rows
// if nil).
func (e *Engine) openLeaders(within []uint64) []uint64 {
	set := make([]uint64, len(e.resolved))
	for i, l := range e.t.leader {
		r := int32(i)
		if l != r || e.isResolved(r) || within != nil && within[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		set[i/64] |= 1 << (i % 64)
	}
	return set
}

// newGen journals the "creating" step of a dataset of the rows in set.
func (e *Engine) newGen(set []uint64) error {
	n := 1
	if g := e.j.last(); g != nil {
		n = g.n + 1
	}
	rows, err := encodeRows(set)
	if err != nil {
		return fmt.Errorf("encode the dataset's rows: %w", err)
	}
	label := newRunLabel()
	return e.record(step{Step: stepCreating, Gen: n, Name: fmt.Sprintf("batchgpt %s %d", filepath.Base(e.h.Input), n),
		Labels: map[string]string{runLabel: label}, Rows: rows, Count: len(members(set))})
}

// createDataset creates the dataset of g, or adopts the one a crash left behind: a dataset with
// g's labels is looked up first.
func (e *Engine) createDataset(ctx context.Context, g *gen) error {
	found, err := e.client.FindDatasets(ctx, g.labels)
	if err != nil {
		return fmt.Errorf("look up the dataset of an interrupted run: %w", err)
	}
	if len(found) > 0 {
		e.log.Info("found the dataset an interrupted run created", "dataset", found[0].ID, "status", found[0].Status)
		return e.record(step{Step: stepCreated, Gen: g.n, Dataset: found[0].ID, Found: found[0].Status})
	}
	id, err := e.client.CreateDataset(ctx, g.name, g.labels)
	if err != nil {
		// ErrOutcomeUnknown included: the next attempt (a resume) looks it up first.
		return fmt.Errorf("create dataset: %w", err)
	}
	e.log.Info("created dataset", "dataset", id, "rows", g.count)
	return e.record(step{Step: stepCreated, Gen: g.n, Dataset: id})
}

// upload uploads g's rows unless the dataset has them already (an interrupted run uploaded them).
func (e *Engine) upload(ctx context.Context, g *gen) error {
	ds, err := e.client.DescribeDataset(ctx, g.dataset)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(e.cfg.Checkpoint), ".batchgpt-dataset-*.jsonl")
	if err != nil {
		return fmt.Errorf("dataset file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	hs := sha256.New()
	if err := writeDataset(io.MultiWriter(f, hs), e.h.Input, e.cfg.Settings.Input, g.rows); err != nil {
		return fmt.Errorf("dataset file: %w", err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("dataset file: %w", err)
	}
	s := step{Step: stepUploaded, Gen: g.n, Dataset: g.dataset, Size: size, SHA256: hex.EncodeToString(hs.Sum(nil))}
	if ds.Status != "DRAFT" {
		// Past DRAFT, the upload was made: a dataset takes data once.
		e.log.Info("the dataset was uploaded before the interruption", "dataset", g.dataset, "status", ds.Status)
		s.Found = ds.Status
		return e.record(s)
	}
	e.log.Info("uploading dataset", "dataset", g.dataset, "rows", g.count, "bytes", size)
	if err := e.client.Upload(ctx, g.dataset, f, size); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return e.record(s)
}

// validate validates g's dataset, or reads the outcome of a validation an interrupted run
// started.
func (e *Engine) validate(ctx context.Context, g *gen) error {
	for {
		ds, err := e.client.DescribeDataset(ctx, g.dataset)
		if err != nil {
			return fmt.Errorf("validate: %w", err)
		}
		switch ds.Status {
		case "DRAFT":
			res, err := e.client.Validate(ctx, g.dataset, min(e.cfg.PollEvery, batchapi.DefaultPollEvery))
			if err != nil {
				return err
			}
			return e.validated(g, res.Valid, res.Errors)
		case "READY":
			return e.validated(g, true, nil)
		case "INVALID":
			return e.validated(g, false, ds.ValidationErrors)
		case "VALIDATING":
			if err := sleep(ctx, min(e.cfg.PollEvery, batchapi.DefaultPollEvery)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("dataset %s is %s: it cannot be used", g.dataset, ds.Status)
		}
	}
}

func (e *Engine) validated(g *gen, valid bool, errs []batchapi.ValidationError) error {
	if !valid {
		n := 0
		for _, ve := range errs {
			n += len(ve.Lines)
		}
		e.log.Warn("the dataset has invalid lines: their rows fail, and a dataset of the others is made", "dataset", g.dataset, "lines", n)
	}
	return e.record(step{Step: stepValidated, Gen: g.n, Dataset: g.dataset, Valid: valid, Errors: errs})
}

// invalidRows fails the rows of g's invalid lines with the line's message, then journals the
// next dataset, of the rest.
func (e *Engine) invalidRows(g *gen) error {
	lines := members(g.rows)
	rest := append([]uint64(nil), g.rows...)
	for _, ve := range g.errors {
		msg := ve.Description
		if ve.Name != "" {
			msg = ve.Name + ": " + msg
		}
		for _, l := range ve.Lines {
			if l < 1 || l > int64(len(lines)) {
				e.log.Warn("a validation error names a line the dataset does not have", "dataset", g.dataset, "line", l)
				continue
			}
			r := lines[l-1]
			rest[r/64] &^= 1 << (r % 64)
			if err := e.resolve(r, e.failure(r, job.KindInvalid, "batch validation: "+msg), ""); err != nil {
				return err
			}
		}
	}
	if err := e.w.Flush(); err != nil {
		return err
	}
	if len(members(rest)) == len(lines) {
		return fmt.Errorf("dataset %s is invalid, but names no line of it: %v", g.dataset, g.errors)
	}
	return e.newGen(e.openLeaders(rest))
}

// startTask starts the batch task over g's dataset, or adopts the one an interrupted run
// started: a run never has two tasks.
func (e *Engine) startTask(ctx context.Context, g *gen) error {
	if e.j.taskStarting && e.j.taskDataset == g.dataset {
		if adopted, err := e.adoptTask(ctx, g); adopted || err != nil {
			return err
		}
	} else if err := e.record(step{Step: stepTaskStarting, Dataset: g.dataset}); err != nil {
		return err
	}
	spec := e.t.spec
	spec.SourceDatasetID = g.dataset
	id, op, err := e.client.StartTask(ctx, spec)
	if errors.Is(err, batchapi.ErrOutcomeUnknown) {
		if adopted, aerr := e.adoptTask(ctx, g); adopted || aerr != nil {
			return aerr
		}
	}
	if err != nil {
		return fmt.Errorf("start the batch task: %w", err)
	}
	e.log.Info("started the batch task", "task", id, "dataset", g.dataset, "rows", g.count)
	return e.record(step{Step: stepTaskStarted, Task: id, Operation: op})
}

// adoptTask looks for a task over g's dataset and adopts it.
func (e *Engine) adoptTask(ctx context.Context, g *gen) (bool, error) {
	found, err := e.client.FindTasks(ctx, g.dataset)
	if err != nil {
		return false, fmt.Errorf("look up the task of an interrupted run: %w", err)
	}
	if len(found) == 0 {
		return false, nil
	}
	t := found[0]
	for _, f := range found[1:] { // the oldest: the one started first
		if f.CreatedAt.Before(t.CreatedAt) {
			t = f
		}
	}
	e.log.Info("found the task an interrupted run started", "task", t.ID, "status", t.Status)
	return true, e.record(step{Step: stepTaskStarted, Task: t.ID, Operation: t.OperationID, Found: t.Status})
}

// await polls the task until it ends, then writes every row's result.
func (e *Engine) await(ctx context.Context, g *gen) error {
	var lastProgress time.Time
	for {
		t, err := e.client.DescribeTask(ctx, e.j.task)
		if err != nil {
			return fmt.Errorf("batch task %s: %w", e.j.task, err)
		}
		if t.Status != e.j.status || t.CompletedBatches != e.j.completed && time.Since(lastProgress) >= e.cfg.ProgressEvery {
			e.log.Info("batch task", "task", t.ID, "status", t.Status, "completed_batches", t.CompletedBatches, "total_batches", t.TotalBatches)
			if err := e.record(step{Step: stepProgress, Status: t.Status, Completed: t.CompletedBatches, Total: t.TotalBatches}); err != nil {
				return err
			}
			lastProgress = time.Now()
		}
		if t.Ended() {
			return e.collect(ctx, g, t)
		}
		if err := sleep(ctx, e.cfg.PollEvery); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", job.ErrInterrupted, ctx.Err())
	case <-timer.C:
		return nil
	}
}

// collect writes the results of an ended task: the answers of a completed one, joined to the
// rows by their request's content; its line errors; and a failure for every row left.
func (e *Engine) collect(ctx context.Context, g *gen, t *batchapi.Task) error {
	lines := members(g.rows)
	if t.Status == batchapi.TaskCompleted {
		for _, le := range t.LineErrors {
			if le.Line >= 1 && le.Line <= int64(len(lines)) {
				r := lines[le.Line-1]
				if err := e.resolve(r, e.failure(r, job.KindOpFailed, "batch task: "+le.Message), ""); err != nil {
					return err
				}
			}
		}
		n := 0
		err := e.client.Results(ctx, t.ResultDatasetID, func(rr batchapi.ResultRow) error {
			leader, ok := e.t.byContent[batchapi.RequestKey(rr.Request)]
			if !ok || e.isResolved(leader) {
				return nil // a request the run did not send, or a row resolved before a crash
			}
			var res *job.Result
			if rr.NoResponse {
				res = e.failure(leader, job.KindOpFailed, "the batch task's result has no response for this request")
			} else {
				res = &job.Result{ID: e.t.ids[leader], Status: job.StatusSucceeded, Text: rr.Response, OperationID: t.ID, Attempts: 1}
			}
			if n++; n%4096 == 0 {
				// Results download faster than lines are made durable: without waiting, the
				// writer's queue would hold every line of the run.
				if err := e.w.Flush(); err != nil {
					return err
				}
				e.storeAnswers()
			}
			return e.resolve(leader, res, e.t.model)
		})
		if err != nil {
			return fmt.Errorf("read the results of task %s: %w", t.ID, err)
		}
		if err := e.failOpenOf(lines, job.KindNotFound, "the batch task's results have no answer to this request"); err != nil {
			return err
		}
	} else {
		kind, msg := job.KindOpFailed, fmt.Sprintf("batch task %s %s", t.ID, t.Status)
		if t.Status == batchapi.TaskCanceled {
			kind = job.KindCancelled
		}
		if t.StatusMessage != "" {
			msg += ": " + t.StatusMessage
		}
		for _, be := range t.BatchErrors {
			msg += fmt.Sprintf("; batch %d (lines %d-%d): %s", be.Batch, be.FirstLine, be.LastLine, be.Message)
		}
		if err := e.failOpenOf(lines, kind, msg); err != nil {
			return err
		}
	}
	return e.fetched()
}

// cancelled ends a run cancelled before its task was known: a task an interrupted start left is
// adopted and cancelled; without one, no task is started and the open rows fail.
func (e *Engine) cancelled(ctx context.Context, g *gen) error {
	if e.j.taskStarting && g != nil {
		adopted, err := e.adoptTask(ctx, g)
		if err != nil || adopted {
			if err == nil {
				err = gone(e.client.CancelTask(ctx, e.j.task))
			}
			return err
		}
	}
	return e.failOpen(job.KindCancelled, "the run was cancelled before its batch task started")
}

// failOpen fails every open row (a run cancelled before its task).
func (e *Engine) failOpen(kind, msg string) error {
	return e.failOpenOf(members(e.openLeaders(nil)), kind, msg)
}

func (e *Engine) failOpenOf(leaders []int32, kind, msg string) error {
	for _, r := range leaders {
		if !e.isResolved(r) {
			if err := e.resolve(r, e.failure(r, kind, msg), ""); err != nil {
				return err
			}
		}
	}
	return e.fetched()
}

// fetched journals that every row is resolved, once their lines are durable.
func (e *Engine) fetched() error {
	if e.j.fetched {
		return nil
	}
	if err := e.w.Flush(); err != nil {
		return err
	}
	return e.record(step{Step: stepResultsFetched})
}

func (e *Engine) failure(r int32, kind, msg string) *job.Result {
	return &job.Result{ID: e.t.ids[r], Status: job.StatusFailed, OperationID: e.j.task, Attempts: 1,
		Error: &job.ResultError{Kind: kind, Message: msg}}
}

// resolve writes the result of leader and, first, the same answer for every open row that sends
// the same request. model, when not "", stores a success in the cache once its line is durable.
func (e *Engine) resolve(leader int32, res *job.Result, model string) error {
	for _, f := range e.t.followers[leader] {
		if e.isResolved(f) {
			continue
		}
		fr := *res
		fr.ID, fr.DeduplicatedFrom, fr.Attempts = e.t.ids[f], res.ID, 0
		if err := e.write(f, &fr, nil); err != nil {
			return err
		}
	}
	if e.isResolved(leader) {
		return nil // written before a crash: every row has one line
	}
	var entry *cache.Entry
	if model != "" && e.cfg.Cache != nil && !e.cfg.Settings.NoCache && res.Status == job.StatusSucceeded && !res.Cached {
		c := job.CacheEntry(e.t.cacheKey[leader], model, res)
		entry = &c
	}
	return e.write(leader, res, entry)
}

// write queues one result line; it is counted, and its answer cached, once durable.
func (e *Engine) write(r int32, res *job.Result, entry *cache.Entry) error {
	line, err := res.Encode(e.h.ResultsFormat, e.csvCols)
	if err != nil {
		return err
	}
	e.resolved[r/64] |= 1 << (r % 64)
	failed := res.Status == job.StatusFailed
	kind := ""
	if failed {
		kind = res.Error.Kind
		e.log.Warn("row failed", "id", res.ID, "kind", kind, "message", res.Error.Message)
	}
	cached, deduped := res.Cached && res.DeduplicatedFrom == "", res.DeduplicatedFrom != ""
	return e.w.ResultThen(int(r), failed, line, func() {
		switch {
		case failed:
			e.failed.Add(1)
			e.mu.Lock()
			e.failedByKind[kind]++
			e.mu.Unlock()
		default:
			e.succeeded.Add(1)
		}
		if cached {
			e.cached.Add(1)
		}
		if deduped {
			e.deduped.Add(1)
		}
		if entry != nil {
			e.mu.Lock()
			e.toCache = append(e.toCache, *entry)
			e.mu.Unlock()
		}
	})
}

// storeAnswers puts the answers whose lines are durable in the cache. A cache that fails is not
// a reason to fail the run: it is said once, and the run goes on without it.
func (e *Engine) storeAnswers() {
	if e.cfg.Cache == nil {
		return
	}
	_ = e.w.Flush() // an error is the writer's, and reported by it
	e.mu.Lock()
	todo := e.toCache
	e.toCache = nil
	off := e.cacheProblem != ""
	e.mu.Unlock()
	if off || len(todo) == 0 {
		return
	}
	// Not the run's context: answers paid for are stored even on Ctrl-C.
	if err := e.cfg.Cache.Put(context.Background(), todo); err != nil {
		e.mu.Lock()
		e.cacheProblem = "write: " + err.Error()
		e.mu.Unlock()
		e.log.Warn("the result cache failed; going on without it", "err", err)
	}
}

// lookupBatch is how many requests are looked up in the cache at once.
const lookupBatch = 256

// answerFromCache resolves, before any dataset is built, the rows whose request the cache has
// answered (with the results line the asynchronous backend writes for them).
func (e *Engine) answerFromCache(ctx context.Context) error {
	s := e.cfg.Settings
	if e.cfg.Cache == nil || s.NoCache || s.Refresh {
		return nil
	}
	leaders := members(e.openLeaders(nil))
	hits := 0
	for len(leaders) > 0 {
		part := leaders[:min(lookupBatch, len(leaders))]
		leaders = leaders[len(part):]
		keys := make([]batch.Key, len(part))
		for i, r := range part {
			keys[i] = e.t.cacheKey[r]
		}
		found, err := job.CacheLookup(ctx, e.cfg.Cache, keys, e.cfg.CacheTTL, s.AcceptFiltered)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", job.ErrInterrupted, ctx.Err())
			}
			e.mu.Lock()
			e.cacheProblem = "read: " + err.Error()
			e.mu.Unlock()
			e.log.Warn("the result cache failed; going on without it (every row is uploaded)", "err", err)
			return nil
		}
		for i, ent := range found {
			if ent == nil {
				continue
			}
			hits++
			if err := e.resolve(part[i], job.FromCache(e.t.ids[part[i]], ent, s.AcceptFiltered), ""); err != nil {
				return err
			}
		}
	}
	if hits > 0 {
		e.log.Info("answered from the result cache; not uploaded", "requests", hits)
	}
	return e.w.Flush()
}

// cleanup deletes the run's datasets and its task, once every result is durable. What is gone
// already is no error.
func (e *Engine) cleanup(ctx context.Context) error {
	var errs []error
	if e.j.task != "" {
		if t, err := e.client.DescribeTask(ctx, e.j.task); err == nil && t.ResultDatasetID != "" {
			errs = append(errs, gone(e.client.DeleteDataset(ctx, t.ResultDatasetID)))
		}
		errs = append(errs, gone(e.client.DeleteTask(ctx, e.j.task)))
	}
	for _, g := range e.j.gens {
		if g.dataset != "" {
			errs = append(errs, gone(e.client.DeleteDataset(ctx, g.dataset)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	e.log.Info("deleted the run's datasets and task", "task", e.j.task, "datasets", len(e.j.gens))
	return e.record(step{Step: stepCleaned})
}

// Progress returns what the run has resolved; safe while it runs.
func (e *Engine) Progress() job.Progress {
	s, f := e.succeeded.Load(), e.failed.Load()
	done, ok := e.doneBefore.Load(), e.succeededBefore.Load()
	return job.Progress{Rows: e.rows.Load(), Resolved: done + s + f, Succeeded: ok + s, Failed: done - ok + f,
		Cached: e.cached.Load(), Deduplicated: e.deduped.Load()}
}

func (e *Engine) summary(base store.Counts, start time.Time) job.Summary {
	s := job.Summary{Checkpoint: e.cfg.Checkpoint, Results: e.h.Results, Rows: e.h.Rows,
		Succeeded: base.Succeeded + int(e.succeeded.Load()), Failed: base.Failed + int(e.failed.Load()),
		CacheHits: e.cached.Load(), Deduplicated: e.deduped.Load(), Elapsed: time.Since(start)}
	s.Pending = s.Rows - s.Succeeded - s.Failed
	e.mu.Lock()
	defer e.mu.Unlock()
	s.CacheProblem = e.cacheProblem
	if len(e.failedByKind) > 0 {
		s.FailedByKind = map[string]int{}
		for k, v := range e.failedByKind {
			s.FailedByKind[k] = v
		}
	}
	return s
}
