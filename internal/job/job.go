// Package job runs a batch end to end: it validates the input, creates or reopens the
// checkpoint, submits rows through the API client with bounded concurrency, hands operation ids
// to the poller, and writes one result per row. It is the only package that knows batch, poller
// and store together.
package job

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
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/retry"
	"github.com/batchgpt/batchgpt/poller"
	"github.com/batchgpt/batchgpt/store"
)

// Settings are the request settings of a run. They live in the checkpoint (never secrets) so that
// resume sends exactly what run would have sent.
type Settings struct {
	Input              batch.Options `json:"input"`
	Endpoint           string        `json:"endpoint"`
	OperationsEndpoint string        `json:"operations_endpoint"`
	NoDataLogging      bool          `json:"no_data_logging,omitempty"`
	Emulator           bool          `json:"emulator,omitempty"`
	// Order "input" rewrites the results in input order once every row is resolved; otherwise
	// they stay in the order rows resolved.
	Order string `json:"order,omitempty"`
	// NoDedup submits every row, even one whose request an earlier row of the run sends too.
	NoDedup bool `json:"no_dedup,omitempty"`
	// NoCache neither reads nor writes the result cache; Refresh does not read it (every row is
	// submitted) but stores the new answers. Both change what is sent, so resume keeps them.
	NoCache bool `json:"no_cache,omitempty"`
	Refresh bool `json:"refresh,omitempty"`
	// AcceptFiltered keeps a content-filtered answer (ALTERNATIVE_STATUS_CONTENT_FILTER) as a
	// success, and lets the cache answer with one; without it such a row fails. It decides what
	// the results say, so resume keeps it.
	AcceptFiltered bool `json:"accept_filtered,omitempty"`
	// Limits are the run's spend limits (budget.go). They change nothing that is sent: a run over
	// the same input with other limits is the same run, and a resume may change them.
	Limits *Limits `json:"limits,omitempty"`
}

// KeyScope is where the run's requests go, part of every request key: an answer of the
// built-in emulator (whose address changes with every start) must never answer a real run.
func (s Settings) KeyScope() string {
	if s.Emulator {
		return "emulator"
	}
	return strings.TrimRight(s.Endpoint, "/")
}

// OrderInput is the Settings.Order that sorts the results by input row.
const OrderInput = "input"

// Config is everything a run or resume needs.
type Config struct {
	Input      string
	Checkpoint string
	Output     string
	Force      bool
	Settings   Settings
	Tuning     Tuning

	Credentials api.Credentials
	// Connect, when Credentials is nil, finds the credentials once the input is known to be
	// valid, so that a bad input is reported first and without any credential lookup.
	Connect    func(context.Context) (api.Credentials, error)
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Kill aborts requests already on the wire (a second Ctrl-C); the context given to Run or
	// Resume only stops new work.
	Kill context.Context
	// MaxInputErrors bounds how many input problems are listed.
	MaxInputErrors int
	// RetryFailed (resume) reopens the rows that failed, to submit them again.
	RetryFailed bool
	// DiscardPending (run) drops the outstanding operations of an earlier run at the checkpoint's
	// path instead of collecting them before the new run.
	DiscardPending bool
	// Cache answers rows whose request was answered before and keeps new answers; nil for none
	// (or when Settings.NoCache). Entries stored longer than CacheTTL ago are ignored (0: any age).
	Cache    ResultCache
	CacheTTL time.Duration
	// Limits (run and resume) sets or removes the spend limits; unset fields keep the
	// checkpoint's. Prices price them (nil: DefaultPrices).
	Limits LimitChange
	Prices Prices
	// JournalLag, if set, is told for every operation id how long after the API's answer its S
	// record became durable: the window in which a kill -9 leaves the row in doubt (for
	// measurement; it runs on the journal's goroutine and must be quick).
	JournalLag func(time.Duration)
	// ChunkSize is the size of the sections of the input a new run's checkpoint keeps a SHA-256
	// of, which a resume verifies as it reads them (0: batch.ChunkSize).
	ChunkSize int64
	// CompactFrom is the smallest journal the checkpoint's writer compacts when it has doubled
	// (0: store's default, 64 MiB).
	CompactFrom int64
}

// ErrInterrupted is returned when the context ended before every row was resolved. Everything
// acknowledged is on disk; the run can be resumed.
var ErrInterrupted = errors.New("interrupted")

// ErrInputChanged means the input of a checkpoint is not the file it was made from any more.
var ErrInputChanged = errors.New("resume: the input changed since the run started")

// ErrAuth wraps authentication failures that stopped the run.
var ErrAuth = errors.New("authentication failed")

// ErrUnavailable wraps the failure that stopped a run because the API kept failing.
var ErrUnavailable = errors.New("the API is unavailable")

// Summary describes what a run or resume did.
type Summary struct {
	Checkpoint   string         `json:"checkpoint"`
	Results      string         `json:"results"`
	Rows         int            `json:"rows"`
	Succeeded    int            `json:"succeeded"`
	Failed       int            `json:"failed"`
	FailedByKind map[string]int `json:"failed_by_kind,omitempty"`
	Pending      int            `json:"pending"`
	Submissions  int64          `json:"submissions"`   // completionAsync requests accepted by this process
	Resubmitted  int64          `json:"resubmitted"`   // rows submitted again (failed operation, purged result)
	InDoubt      int64          `json:"in_doubt"`      // possible billed duplicates this process counted (D records)
	InputTokens  int64          `json:"input_tokens"`  // tokens of rows resolved by this process
	OutputTokens int64          `json:"output_tokens"` // likewise
	Polls        int64          `json:"polls"`
	Throttled    int64          `json:"throttled"` // 429 answers
	// CacheHits rows were answered from the result cache and Deduplicated rows by another row of
	// the run with the same request: nothing was submitted for them. SavedTokens are their tokens,
	// which nobody paid for again.
	CacheHits    int64         `json:"cache_hits"`
	Deduplicated int64         `json:"deduplicated"`
	SavedTokens  int64         `json:"saved_tokens"`
	Cache        string        `json:"cache,omitempty"`         // the cache file, set by the caller
	CacheProblem string        `json:"cache_problem,omitempty"` // why the run went on without the cache
	SavedCost    float64       `json:"saved_cost,omitempty"`    // SavedTokens at the price table, in Currency
	Elapsed      time.Duration `json:"elapsed_ns"`
	Interrupted  bool          `json:"interrupted"`
	NothingToDo  bool          `json:"nothing_to_do,omitempty"` // run found its input's run complete
	// EstimatedCost prices the tokens of this process at the async price table, in Currency.
	EstimatedCost float64 `json:"estimated_cost,omitempty"`
	Currency      string  `json:"currency,omitempty"`
	// ContentFiltered answers were stopped by the API's content filter (failed rows unless
	// --accept-filtered); Truncated answers were cut at maxTokens (succeeded). Both count the
	// result lines this process wrote, as FailedByKind does.
	ContentFiltered int64 `json:"content_filtered"`
	Truncated       int64 `json:"truncated"`
	// StoppedAtLimit: the run stopped submitting at its spend limit (ErrSpendLimit); Spend is
	// what the run spent against its limits (nil without limits).
	StoppedAtLimit bool   `json:"stopped_at_limit"`
	Spend          *Spend `json:"spend,omitempty"`
}

// ModelURI is the run's default model URI ("" when the rows carry their own).
func (j *Job) ModelURI() string {
	o := j.cfg.Settings.Input
	if o.Model == "" {
		return ""
	}
	uri, err := batch.ModelURI(o.Folder, o.Model)
	if err != nil {
		return ""
	}
	return uri
}

// Job is one run or resume. Progress may be read while it runs.
type Job struct {
	cfg Config
	log *slog.Logger

	total       atomic.Int64
	submitted   atomic.Int64 // rows with an operation id (all time)
	resolved    atomic.Int64
	succeeded   atomic.Int64
	failed      atomic.Int64
	submissions atomic.Int64
	resubmitted atomic.Int64
	inDoubt     atomic.Int64
	tokensIn    atomic.Int64
	tokensOut   atomic.Int64
	cacheHits   atomic.Int64
	deduped     atomic.Int64
	savedTokens atomic.Int64
	scope       string // see Settings.KeyScope

	truncated       atomic.Int64 // answers cut at maxTokens
	contentFiltered atomic.Int64 // content-filtered answers, failed or accepted
	csvCols         []string     // columns of a CSV results file's header, in which its lines are written
	budget          *budget      // nil without spend limits
	leftByLimit     atomic.Int64 // rows left unsubmitted at the spend limit, their waiting duplicates too

	mu           sync.Mutex
	cacheProblem string
	failedByKind map[string]int
	pending      map[int]*pendingRow
	poll         *poller.Poller[*api.Operation]
	submitPacer  *api.Pacer
	pollPacer    *api.Pacer
	schedule     *poller.Schedule
	pace         pace // rows leaving the queue at recent progress reports, for the ETA
}

type pendingRow struct {
	id      string
	offset  int64
	line    int
	attempt int
	key     batch.Key
	model   string // the row's model URI, for its cache entry
}

// New prepares a job.
func New(cfg Config) *Job {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Kill == nil {
		cfg.Kill = context.Background()
	}
	if cfg.MaxInputErrors <= 0 {
		cfg.MaxInputErrors = 50
	}
	if cfg.Tuning.Concurrency <= 0 {
		cfg.Tuning.Concurrency = DefaultTuning().Concurrency
	}
	if cfg.Tuning.MaxAttempts <= 0 {
		cfg.Tuning.MaxAttempts = DefaultTuning().MaxAttempts
	}
	return &Job{cfg: cfg, log: cfg.Logger, failedByKind: map[string]int{}, pending: map[int]*pendingRow{}}
}

// Progress is a snapshot of the counters.
type Progress struct {
	Rows, Submitted, Resolved, Succeeded, Failed int64
	// Cached and Deduplicated rows are resolved without a submission; Submitted counts them too,
	// as rows past the submission stage.
	Cached, Deduplicated int64
	Pending              int     // operations being polled
	SubmitRate           float64 // current adaptive submissions/s limit (0 = unlimited)
	// ETA estimates the time to resolve every row: the submissions left under both quota windows,
	// plus the median operation time observed so far (0 while unknown).
	ETA time.Duration
}

// Progress returns current counts; safe while the job runs.
func (j *Job) Progress() Progress {
	p := Progress{Rows: j.total.Load(), Submitted: j.submitted.Load(), Resolved: j.resolved.Load(),
		Succeeded: j.succeeded.Load(), Failed: j.failed.Load(), Cached: j.cacheHits.Load(), Deduplicated: j.deduped.Load()}
	j.mu.Lock()
	defer j.mu.Unlock()
	p.Pending = len(j.pending)
	if j.submitPacer == nil {
		return p
	}
	p.SubmitRate = j.submitPacer.Rate()
	_, perHour := j.submitPacer.Limits()
	eta := SubmitETA(int(p.Rows-p.Submitted), j.submitPacer.InWindow(), p.SubmitRate, perHour)
	// The quota bounds the pace from above; the run's own pace (the API's latency, the cache, the
	// machine) may be slower, and without a quota it is all there is.
	done := p.Submitted // rows answered by the cache or a duplicate count there too
	j.pace.add(time.Now(), done)
	if observed, ok := j.pace.eta(p.Rows - done); ok && observed > eta {
		eta = observed
	}
	if med, ok := j.schedule.Median(); ok && p.Resolved < p.Rows {
		eta += med
	}
	p.ETA = eta
	return p
}

// DefaultPaths derives the checkpoint and results paths from the input path.
func DefaultPaths(input string) (checkpoint, results string) {
	base := strings.TrimSuffix(input, filepath.Ext(input))
	return base + ".checkpoint.json", base + ".results.jsonl"
}

// Run validates the input, creates the checkpoint and processes every row.
func (j *Job) Run(ctx context.Context) (Summary, error) {
	start := time.Now()
	j.cfg.Settings.Limits = j.cfg.Limits.Apply(nil)
	cfg := j.cfg
	j.scope = cfg.Settings.KeyScope()
	sum, dups, err := validate(cfg.Input, cfg.Settings, cfg.MaxInputErrors, batch.WithChunkSize(cfg.ChunkSize))
	if err != nil {
		return Summary{}, err
	}
	if sum.Rows == 0 {
		return Summary{}, fmt.Errorf("%s: no rows to process", cfg.Input)
	}
	// The nightly pattern: the same command every night, whatever happened the night before.
	// Lean: only the header and the rows' phases matter here, and a ten-million-row run loaded in
	// full would hold 80 MB more.
	if prev, err := store.LoadLean(cfg.Checkpoint); err == nil {
		if prev.Header.Version == store.BatchVersion && !cfg.Force {
			return Summary{}, fmt.Errorf("checkpoint %s is a run of the batch backend: `batchgpt resume %s` continues it, --force starts over",
				cfg.Checkpoint, cfg.Checkpoint)
		}
		date := prev.Header.Created.UTC().Format(time.DateOnly)
		c := prev.Counts()
		if !cfg.Force && prev.Header.InputSHA256 == sum.SHA256 && prev.Header.InputSize == sum.Size &&
			sameSettings(prev.Header.Settings, cfg.Settings) {
			if c.Succeeded+c.Failed == c.Rows {
				j.log.Info("the run of this input is complete: nothing to do", "run_of", date, "results", prev.Header.Results)
				return j.complete(prev, start), nil
			}
			j.log.Info("resuming the run of this input", "run_of", date, "rows_left", c.Rows-c.Succeeded-c.Failed)
			return j.Resume(ctx)
		}
		if err := j.retire(ctx, prev.Header, c, date); err != nil {
			return Summary{}, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) && !cfg.Force {
		return Summary{}, fmt.Errorf("%w (--force starts over and replaces it)", err)
	}
	if err := j.connect(ctx); err != nil {
		return Summary{}, err
	}
	settings, err := json.Marshal(cfg.Settings)
	if err != nil {
		return Summary{}, fmt.Errorf("encode settings: %w", err)
	}
	input, err := filepath.Abs(cfg.Input)
	if err != nil {
		return Summary{}, err
	}
	results, err := filepath.Abs(cfg.Output)
	if err != nil {
		return Summary{}, err
	}
	format := ResultsFormat(results)
	pre, err := Preamble(format)
	if err != nil {
		return Summary{}, err
	}
	h := store.Header{Version: store.Version, Created: time.Now().UTC(), Input: input, InputSHA256: sum.SHA256,
		InputSize: sum.Size, Rows: sum.Rows, Results: results, ResultsFormat: format, Settings: settings, Duplicates: dups.Count(),
		InputChunks: storeChunks(sum.Chunks)}
	opts := j.storeOptions()
	if dups.Count() > 0 {
		// The groups go into the checkpoint: a resume reads them there instead of the whole input.
		blob, err := dups.MarshalBinary()
		if err != nil {
			return Summary{}, fmt.Errorf("duplicate rows: %w", err)
		}
		opts = append(opts, store.Groups(blob))
	}
	w, err := store.Create(cfg.Checkpoint, h, pre, cfg.Force, opts...)
	if err != nil {
		return Summary{}, err
	}
	if l := cfg.Settings.Limits; l.any() {
		j.budget = newBudget(*l, cfg.Prices, j.log)
	}
	// A new run has no row state: every row is new.
	return j.execute(ctx, start, w, h, newPlan(&store.State{Header: h}, dups), nil)
}

// sameSettings reports whether a checkpoint's settings are s: the same requests would be sent.
func sameSettings(raw json.RawMessage, s Settings) bool {
	var old Settings
	if json.Unmarshal(raw, &old) != nil {
		return false
	}
	if old.Emulator && s.Emulator { // its address changes with every start
		old.Endpoint, old.OperationsEndpoint = s.Endpoint, s.OperationsEndpoint
	}
	old.Limits = s.Limits // limits change nothing that is sent; resume takes the new ones

	return reflect.DeepEqual(old, s)
}

// complete is the summary of a run that has nothing left to do.
func (j *Job) complete(st *store.State, start time.Time) Summary {
	c := st.Counts()
	j.succeeded.Store(int64(c.Succeeded))
	j.failed.Store(int64(c.Failed))
	j.resolved.Store(int64(c.Succeeded + c.Failed))
	s := j.summary(st.Header, start, false)
	s.NothingToDo = true
	return s
}

// retire makes way for a new run over other content (or --force) at the checkpoint's path: the
// earlier run's outstanding operations are paid for, so they are collected first (polled and
// written, never submitted again) unless DiscardPending; then its checkpoint and results go to
// dated names beside them. h and c are the earlier run's header and counts, taken rather than
// its state so that nothing of it stays in memory while it is collected.
func (j *Job) retire(ctx context.Context, h store.Header, c store.Counts, date string) error {
	switch {
	case c.Submitted > 0 && j.cfg.DiscardPending:
		j.log.Warn("discarding the outstanding operations of the earlier run (--discard-pending): they are paid for and will not be written",
			"run_of", date, "operations", c.Submitted)
	case c.Submitted > 0:
		cfg := j.cfg
		cfg.RetryFailed = false
		sj := New(cfg)
		sum, err := sj.Collect(ctx)
		j.cfg.Credentials = sj.cfg.Credentials // found once for both
		if err != nil {
			return fmt.Errorf("collect the earlier run of %s (%s): %w", date, j.cfg.Checkpoint, err)
		}
		j.log.Info("collected the outstanding operations of the earlier run", "run_of", date,
			"succeeded", sum.Succeeded, "failed", sum.Failed, "results", sum.Results)
	}
	// Reload: the collection wrote results. A cache that fails here is not a reason to stop.
	if st, err := store.LoadLean(j.cfg.Checkpoint); err == nil {
		if n, err := j.backfillCache(ctx, j.cfg.Checkpoint, st); err != nil {
			j.log.Warn("could not store the earlier run's answers in the result cache", "err", err)
		} else if n > 0 {
			j.log.Info("stored answers of the earlier run that the result cache lacked", "answers", n)
		}
	}
	if c.InFlight > 0 {
		j.log.Warn("rows were being submitted when the earlier run stopped: those still in the input are submitted again and may be billed twice",
			"run_of", date, "in_doubt", c.InFlight)
	}
	return ArchiveRun(j.cfg.Checkpoint, h, j.log)
}

// ArchiveRun moves the run whose checkpoint is at checkpoint (with header h) to the dated names
// beside it (ArchiveNames, the date of its start), and logs where it went.
func ArchiveRun(checkpoint string, h store.Header, log *slog.Logger) error {
	date := h.Created.UTC().Format(time.DateOnly)
	ckpt, results := archiveNames(checkpoint, h.Results, date)
	if err := store.Archive(checkpoint, ckpt, results); err != nil {
		return err
	}
	log.Info("archived the earlier run", "run_of", date, "checkpoint", ckpt, "results", results)
	return nil
}

// archiveNames are the dated names beside checkpoint and results that an earlier run of date
// moves to: prompts.checkpoint.json -> prompts.2026-11-28.checkpoint.json, and -2, -3... when a
// day has several.
func archiveNames(checkpoint, results, date string) (string, string) {
	for n := 1; ; n++ {
		tag := date
		if n > 1 {
			tag = fmt.Sprintf("%s-%d", date, n)
		}
		c, r := datedName(checkpoint, tag), datedName(results, tag)
		_, errC := os.Lstat(c)
		_, errR := os.Lstat(r)
		if errors.Is(errC, fs.ErrNotExist) && errors.Is(errR, fs.ErrNotExist) {
			return c, r
		}
	}
}

func datedName(path, tag string) string {
	dir, name := filepath.Split(path)
	for _, suffix := range []string{".checkpoint.json", ".results.jsonl", ".results.csv"} {
		if stem, ok := strings.CutSuffix(name, suffix); ok {
			return filepath.Join(dir, stem+"."+tag+suffix)
		}
	}
	ext := filepath.Ext(name)
	return filepath.Join(dir, strings.TrimSuffix(name, ext)+"."+tag+ext)
}

// Resume reopens a checkpoint and finishes its run.
func (j *Job) Resume(ctx context.Context) (Summary, error) {
	start := time.Now()
	// Loading the checkpoint builds its state (about 2 bytes a row, 10 when store.Open must load
	// where each row's line is) and garbage besides (the names and operation ids of the journal's
	// tail): collected often, as validation is, until the state is condensed into the plan and
	// dropped. At ten million rows the collector's default let the heap grow to about twice the
	// state before a collection: 262 MiB of peak RSS.
	heapDone := sync.OnceFunc(Validating())
	defer heapDone()
	w, st, s, err := j.open()
	if err != nil {
		return Summary{}, err
	}
	dups, err := checkInput(st, s)
	if errors.Is(err, ErrInputChanged) {
		w.Close()
		return j.collectChanged(ctx, st.Header, err)
	}
	if err != nil {
		w.Close()
		return Summary{}, err
	}
	if err := j.connect(ctx); err != nil {
		w.Close()
		return Summary{}, err
	}
	if err := j.adopt(st.Header, s); err != nil {
		w.Close()
		return Summary{}, err
	}
	if st.Doubts > 0 {
		j.log.Warn("earlier runs of this checkpoint made submissions that may have been billed twice", "in_doubt", st.Doubts)
	}
	if err := j.limits(w, st, s); err != nil {
		w.Close()
		return Summary{}, err
	}
	if j.cfg.RetryFailed {
		reopened := 0
		for i := range st.Len() {
			if st.Phase(i) == store.PhaseResolved && st.Failed(i) {
				if err := w.Retry(i); err != nil {
					w.Close()
					return Summary{}, fmt.Errorf("reopen failed rows: %w", err)
				}
				// A full set of tries: a row that used them all would otherwise get one.
				st.Retried(i)
				reopened++
			}
		}
		j.log.Info("submitting failed rows again", "rows", reopened)
	}
	// The whole state is dropped before the rows run (see execute), and its memory goes back to
	// the system at once: the first submissions follow within a second, and the run's own
	// garbage would otherwise pile up on top of it before the next collection.
	h, pl, recent := st.Header, newPlan(st, dups), recentSubmissions(st, time.Now())
	st = nil
	heapDone() // the collector's setting back, and the state's memory returned at once
	sum, err := j.execute(ctx, start, w, h, pl, recent)
	if errors.Is(err, ErrInputChanged) {
		// A chunk read on the way differed: what was sent before it stays, as after an interrupt.
		j.mu.Lock()
		j.pending = map[int]*pendingRow{} // the collection hands the poller every operation left
		j.mu.Unlock()
		return j.collectChanged(ctx, h, err)
	}
	return sum, err
}

// collectChanged ends a resume whose input changed (err): the rows the checkpoint refers to are
// gone, but its operations are paid for, so they are collected.
func (j *Job) collectChanged(ctx context.Context, h store.Header, err error) (Summary, error) {
	sum, cerr := j.Collect(ctx)
	if cerr != nil {
		return sum, cerr
	}
	return sum, fmt.Errorf("%w; its outstanding operations were collected into %s: start a new run with `batchgpt run %s`",
		err, h.Results, h.Input)
}

// storeOptions are the checkpoint writer's options of the configuration.
func (j *Job) storeOptions() []store.Option {
	if j.cfg.CompactFrom > 0 {
		return []store.Option{store.CompactFrom(j.cfg.CompactFrom)}
	}
	return nil
}

// open locks and loads the checkpoint (reporting its repairs) and reads the run's settings.
func (j *Job) open() (*store.Writer, *store.State, Settings, error) {
	var s Settings
	w, st, err := store.Open(j.cfg.Checkpoint, j.storeOptions()...)
	if err != nil {
		return nil, nil, s, err
	}
	if st.Header.Version == store.BatchVersion {
		// Its rows are answered by a batch task: sending them one by one would pay twice.
		w.Close()
		return nil, nil, s, fmt.Errorf("checkpoint %s is a run of the batch backend: the asynchronous backend cannot resume it", j.cfg.Checkpoint)
	}
	for _, p := range st.Problems {
		j.log.Warn("checkpoint repaired", "checkpoint", j.cfg.Checkpoint, "problem", p)
	}
	if err := json.Unmarshal(st.Header.Settings, &s); err != nil {
		w.Close()
		return nil, nil, s, fmt.Errorf("checkpoint %s: settings: %w", j.cfg.Checkpoint, err)
	}
	j.scope = s.KeyScope()
	return w, st, s, nil
}

// adopt takes the request settings of the checkpoint with header h: resume and collection send
// exactly what the run would have sent.
func (j *Job) adopt(h store.Header, s Settings) error {
	// Endpoints of an emulator run change with every start; everything else is the run's own.
	if s.Emulator && j.cfg.Settings.Endpoint == "" {
		return fmt.Errorf("checkpoint %s was made against the built-in emulator: resume it with --emulator", j.cfg.Checkpoint)
	}
	if !s.Emulator {
		j.cfg.Settings.Endpoint, j.cfg.Settings.OperationsEndpoint = s.Endpoint, s.OperationsEndpoint
	}
	j.cfg.Settings.Input = s.Input
	j.cfg.Settings.NoDataLogging = s.NoDataLogging || j.cfg.Settings.NoDataLogging
	j.cfg.Settings.Order = s.Order
	j.cfg.Settings.NoDedup = s.NoDedup
	j.cfg.Settings.NoCache = s.NoCache || j.cfg.Settings.NoCache
	j.cfg.Settings.Refresh = s.Refresh
	j.cfg.Settings.AcceptFiltered = s.AcceptFiltered
	j.cfg.Settings.Emulator = s.Emulator
	j.cfg.Input = h.Input
	return nil
}

// connect resolves the credentials through Config.Connect when none were given.
func (j *Job) connect(ctx context.Context) error {
	if j.cfg.Credentials != nil || j.cfg.Connect == nil {
		return nil
	}
	c, err := j.cfg.Connect(ctx)
	if err != nil {
		return err
	}
	j.cfg.Credentials = c
	return nil
}

// validate checks the input and, unless deduplication is off, finds the rows that send the same
// request as an earlier row.
func validate(path string, s Settings, maxErrors int, po ...batch.PassOption) (batch.Summary, *batch.Duplicates, error) {
	defer Validating()()
	if s.NoDedup {
		sum, err := batch.Validate(path, s.Input, maxErrors, po...)
		return sum, nil, err
	}
	return batch.ValidateDedup(path, s.Input, maxErrors, s.KeyScope(), po...)
}

// Validating prepares for a pass over the input and returns what ends it. Validation builds
// structures of a few tens of bytes per row (the id set, the request fingerprints) that live
// until it ends: collecting more often keeps the heap near them instead of at twice their size,
// at no measurable cost, and their memory goes back to the system before the run starts, or the
// run's own garbage would grow to that peak before the next collection.
func Validating() (done func()) {
	old := debug.SetGCPercent(25)
	return func() {
		debug.SetGCPercent(old)
		debug.FreeOSMemory()
	}
}

// checkInput refuses to resume over an input that changed since run: the checkpoint refers to
// rows by position. With a chunk table it checks only the size and the preamble here, and the
// runner verifies each chunk it reads (batch.OpenChunks, batch.OpenChunkRereader). The groups of
// duplicate rows come from the checkpoint when it keeps them (version 4); an older checkpoint's
// are found again by reading the whole input.
func checkInput(st *store.State, s Settings) (*batch.Duplicates, error) {
	h := st.Header
	if len(h.InputChunks) > 0 && (s.NoDedup || h.Duplicates == 0 || len(st.Groups()) > 0) {
		if err := changed(batch.CheckPreamble(h.Input, h.InputSize, batchChunks(h.InputChunks))); err != nil {
			return nil, err
		}
		if s.NoDedup || h.Duplicates == 0 {
			return nil, nil // no row follows another
		}
		dups, err := batch.DecodeDuplicates(st.Groups(), h.Rows)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		if dups.Count() != h.Duplicates {
			return nil, fmt.Errorf("checkpoint: %d duplicate rows in its groups, %d in its header", dups.Count(), h.Duplicates)
		}
		return dups, nil
	}
	if s.NoDedup || h.Duplicates == 0 {
		return nil, CheckInputHash(h)
	}
	// The run validated this input; that it is the same file is checked below, so its ids need
	// not be checked again.
	done := Validating()
	sum, dups, err := batch.ScanDedup(h.Input, s.Input, s.KeyScope())
	done()
	if sum.SHA256 == "" { // the file could not be read
		if err == nil {
			err = errors.New("empty summary")
		}
		return nil, fmt.Errorf("resume: input of the run: %w", err)
	}
	if err := inputChanged(h, sum.Size, sum.SHA256); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("resume: input %s: %w", h.Input, err)
	}
	return dups, nil
}

// CheckInputHash refuses a resume over an input that is not, byte for byte, the one h's run
// started with (ErrInputChanged): rows are known by position. It reads the whole input.
func CheckInputHash(h store.Header) error {
	f, err := os.Open(h.Input)
	if err != nil {
		return fmt.Errorf("resume: input of the run: %w", err)
	}
	defer f.Close()
	hs := sha256.New()
	n, err := io.Copy(hs, f)
	if err != nil {
		return fmt.Errorf("resume: read input %s: %w", h.Input, err)
	}
	return inputChanged(h, n, hex.EncodeToString(hs.Sum(nil)))
}

// changed marks an input that is not what its chunk table says as ErrInputChanged; any other
// error is a failure to read it.
func changed(err error) error {
	var ce *batch.ChangedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return fmt.Errorf("%w: %w", ErrInputChanged, err)
	default:
		return fmt.Errorf("resume: input of the run: %w", err)
	}
}

// storeChunks is the chunk table of a validated input as the checkpoint keeps it.
func storeChunks(cs []batch.Chunk) []store.InputChunk {
	out := make([]store.InputChunk, len(cs))
	for i, c := range cs {
		out[i] = store.InputChunk{Row: c.Row, Line: c.Line, Offset: c.Offset, SHA256: c.SHA256}
	}
	return out
}

// batchChunks is storeChunks undone.
func batchChunks(cs []store.InputChunk) []batch.Chunk {
	out := make([]batch.Chunk, len(cs))
	for i, c := range cs {
		out[i] = batch.Chunk{Row: c.Row, Line: c.Line, Offset: c.Offset, SHA256: c.SHA256}
	}
	return out
}

// inputChanged says how the input differs from the one the run started with, if it does.
func inputChanged(h store.Header, n int64, got string) error {
	if n != h.InputSize || got != h.InputSHA256 {
		return fmt.Errorf("%w: %s (size %d, was %d; sha256 %.12s…, was %.12s…)", ErrInputChanged, h.Input, n, h.InputSize, got, h.InputSHA256)
	}
	return nil
}

// work is one row to submit.
type work struct {
	row     batch.Row
	key     batch.Key
	attempt int  // the attempt this submission is
	fresh   bool // the row had no operation id before (counts as newly submitted)
	// inDoubt: a try of a crashed run (intent without operation id) or an operation given up on
	// (vanished, failed) may have been billed; counted when this submission goes out.
	inDoubt bool
}

// execute processes the rows of plan p. The full store.State is not kept: for a resumed
// million-row checkpoint it would hold tens of megabytes for the whole run.
func (j *Job) execute(ctx context.Context, start time.Time, w *store.Writer, h store.Header, pl *plan, recent []api.Burst) (sum Summary, err error) {
	cfg := j.cfg
	j.total.Store(int64(h.Rows))
	counts := pl.counts
	if counts.InFlight > 0 {
		j.log.Warn("rows were being submitted when the previous run stopped: they are submitted again and may be billed twice",
			"in_doubt", counts.InFlight)
	}
	j.resolved.Store(int64(counts.Succeeded + counts.Failed))
	j.succeeded.Store(int64(counts.Succeeded))
	j.failed.Store(int64(counts.Failed))
	j.submitted.Store(int64(counts.Submitted + counts.Succeeded + counts.Failed))
	// A run is done when every row is resolved; a collection when its outstanding operations are.
	target := int64(h.Rows)
	if pl.collect != nil {
		target = int64(counts.Succeeded + counts.Failed + len(pl.submitted))
	}

	var cu *cacheUse
	if cfg.Cache != nil && !cfg.Settings.NoCache {
		cu = newCacheUse(cfg.Cache, j.log, cfg.Settings.Refresh, cfg.CacheTTL, cfg.Settings.AcceptFiltered)
	}
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close checkpoint: %w", cerr)
		}
		if cu != nil {
			// After the writer closed, every answer that became durable has been handed over.
			problem := cu.close()
			j.mu.Lock()
			j.cacheProblem = problem
			j.mu.Unlock()
		}
		sum = j.summary(h, start, ctx.Err() != nil && j.resolved.Load() < target)
		if sum.Interrupted && err == nil {
			err = ErrInterrupted
		}
		if sum.StoppedAtLimit && err == nil {
			err = ErrSpendLimit
		}
	}()

	if h.ResultsFormat == FormatCSV {
		// Lines go in the columns of the file's header, which an older batchgpt may have written.
		if j.csvCols, err = CSVHeader(h.Results); err != nil {
			return sum, err
		}
	}
	t := cfg.Tuning
	submitPacer := api.NewPacer(t.SubmitRPS, t.SubmitPerHour)
	submitPacer.Seed(recent)
	pollPacer := api.NewPacer(t.PollRPS, 0)
	client, err := api.New(api.Config{
		Endpoint: cfg.Settings.Endpoint, OperationsEndpoint: cfg.Settings.OperationsEndpoint,
		Credentials: cfg.Credentials, NoDataLogging: cfg.Settings.NoDataLogging, HTTPClient: cfg.HTTPClient,
		SubmitPacer: submitPacer, PollPacer: pollPacer,
		Retry:          retry.Policy{Attempts: t.MaxAttempts, Backoff: retry.Backoff{Base: t.BackoffBase}},
		RequestTimeout: t.RequestTimeout,
		Logger:         j.log, InFlight: cfg.Kill,
	})
	if err != nil {
		return sum, err
	}
	schedule := t.Schedule
	if schedule == nil {
		schedule = poller.NewSchedule()
	}
	p := poller.New(client.Operation, retry.Poll, poller.Config{Schedule: schedule, Concurrency: t.PollWorkers})
	j.mu.Lock()
	j.poll, j.submitPacer, j.pollPacer, j.schedule = p, submitPacer, pollPacer, schedule
	j.mu.Unlock()

	allDone := make(chan struct{})
	var doneOnce sync.Once
	checkDone := func() {
		if j.resolved.Load()+j.leftByLimit.Load() >= target {
			doneOnce.Do(func() { close(allDone) })
		}
	}
	checkDone()

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The first fatal error is the cause of fatal, which nothing else ends (not an interrupt).
	fatal, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stop(nil)
	g, gctx := errgroup.WithContext(rctx)
	resubmit := make(chan work, 1024)
	r := &runner{j: j, w: w, client: client, h: h, resubmit: resubmit, checkDone: checkDone, ctx: gctx, cancel: cancel,
		fatal: fatal, stop: stop, plan: pl, models: map[string]string{}}
	if pl.dups.Count() > 0 {
		var rr *batch.Rereader
		if cs := h.InputChunks; len(cs) > 0 {
			// Followers are read where they are, maybe in chunks that the input's reader
			// never enters: each is verified when a row in it is first read again.
			rr, err = batch.OpenChunkRereader(cfg.Input, cfg.Settings.Input, h.InputSize, batchChunks(cs))
		} else {
			rr, err = batch.OpenRereader(cfg.Input, cfg.Settings.Input)
		}
		if ch := changed(err); errors.Is(ch, ErrInputChanged) {
			return sum, ch
		}
		if err != nil {
			return sum, fmt.Errorf("open input: %w", err)
		}
		defer rr.Close()
		r.reread = rr
	}
	r.cache = cu

	g.Go(func() error {
		err := p.Run(gctx, r.handle)
		if errors.Is(err, poller.ErrFatal) {
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
		if gctx.Err() != nil {
			return nil
		}
		return err
	})
	g.Go(func() error {
		select {
		case <-allDone:
			p.CloseWhenEmpty()
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error { return r.dispatch(gctx, pl, allDone) })
	err = g.Wait()
	if ferr := r.err(); ferr != nil {
		err = ferr
	}
	if err == nil && j.resolved.Load() >= int64(h.Rows) {
		err = j.finalize(w)
	}
	return sum, err
}

// finalize rewrites the results file when it must change shape (see Finalize).
func (j *Job) finalize(w *store.Writer) error {
	return Finalize(w, j.cfg.Settings.Order == OrderInput)
}

// Finalize rewrites the results file of a run whose rows are all resolved when it must change
// shape: input order was asked for, or rows resolved again (retried failures) left superseded
// lines. The store does it crash-safely.
func Finalize(w *store.Writer, inputOrder bool) error {
	if err := w.Flush(); err != nil {
		return err
	}
	if !inputOrder && !w.NeedsFinalize() {
		return nil
	}
	if err := w.Finalize(inputOrder); err != nil {
		return fmt.Errorf("finalize results: %w", err)
	}
	return nil
}

func (j *Job) summary(h store.Header, start time.Time, interrupted bool) Summary {
	s := Summary{Checkpoint: j.cfg.Checkpoint, Results: h.Results, Rows: h.Rows,
		Succeeded: int(j.succeeded.Load()), Failed: int(j.failed.Load()),
		Submissions: j.submissions.Load(), Resubmitted: j.resubmitted.Load(), InDoubt: j.inDoubt.Load(),
		InputTokens: j.tokensIn.Load(), OutputTokens: j.tokensOut.Load(), Elapsed: time.Since(start), Interrupted: interrupted,
		CacheHits: j.cacheHits.Load(), Deduplicated: j.deduped.Load(), SavedTokens: j.savedTokens.Load(),
		ContentFiltered: j.contentFiltered.Load(), Truncated: j.truncated.Load()}
	s.Pending = s.Rows - s.Succeeded - s.Failed
	j.mu.Lock()
	s.CacheProblem = j.cacheProblem
	if len(j.failedByKind) > 0 {
		s.FailedByKind = map[string]int{}
		for k, v := range j.failedByKind {
			s.FailedByKind[k] = v
		}
	}
	if j.poll != nil {
		s.Polls = j.poll.Polls()
	}
	if j.submitPacer != nil {
		s.Throttled = j.submitPacer.Throttles() + j.pollPacer.Throttles()
	}
	j.mu.Unlock()
	if j.budget != nil {
		left := j.leftByLimit.Load()
		s.Spend = j.budget.spend(left)
		s.StoppedAtLimit = left > 0 && s.Pending > 0
	}
	return s
}
