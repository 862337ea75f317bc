package job

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/retry"
	"github.com/batchgpt/batchgpt/poller"
	"github.com/batchgpt/batchgpt/store"
)

// CancelSummary is what Cancel did.
type CancelSummary struct {
	Checkpoint string `json:"checkpoint"`
	Results    string `json:"results"`
	// Cancelled operations were stopped by their cancel: their rows failed with kind cancelled.
	Cancelled int `json:"cancelled"`
	// Finished operations were done before their cancel arrived: their rows have their real
	// result (an answer is kept, and stored in the cache).
	Finished int `json:"finished"`
	// Pending operations are still pending: their cancel failed for good, was refused, or the
	// API accepted it while the operation still ran. Their rows stay submitted.
	Pending int `json:"pending"`
	// InFlight rows were being submitted when a run stopped (an intent without an operation id):
	// there is no operation id to cancel. NotSubmitted rows were never sent. Both stay so.
	InFlight     int `json:"in_flight"`
	NotSubmitted int `json:"not_submitted"`
}

// ErrCancelIncomplete means some operations could not be cancelled: their rows stay pending.
var ErrCancelIncomplete = errors.New("not every operation could be cancelled")

// cancelTarget is one outstanding operation to cancel.
type cancelTarget struct {
	row  int
	opID string
	name store.Named
	try  int // the attempt that created the operation
}

// Cancel cancels every operation of a checkpoint still pending at the API and records each
// cancelled row as failed with kind cancelled, without the input file. An operation that finished
// before its cancel arrived keeps its real result. Rows never submitted, or in flight at a crash
// (no operation id), are left as they are. It takes the checkpoint's lock: a running batchgpt must
// be stopped first (store.ErrLocked otherwise).
//
// Cancels are operation calls: they go through the poll pacer, and a cancel that fails
// transiently is retried by the API client under the retry policy. A cancel that failed for good
// leaves its row pending, and Cancel returns ErrCancelIncomplete.
func (j *Job) Cancel(ctx context.Context) (sum CancelSummary, err error) {
	sum.Checkpoint = j.cfg.Checkpoint
	w, st, s, err := j.open()
	if err != nil {
		return sum, err
	}
	var cu *cacheUse
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close checkpoint: %w", cerr)
		}
		if cu != nil {
			cu.close() // after the writer closed: every answer that became durable was handed over
		}
	}()
	sum.Results = st.Header.Results
	if s.Emulator {
		return sum, fmt.Errorf("checkpoint %s was made against the built-in emulator: its operations ended with that process; "+
			"resume it with --emulator", j.cfg.Checkpoint)
	}
	if err := j.adopt(st.Header, s); err != nil {
		return sum, err
	}
	c := st.Counts()
	sum.InFlight, sum.NotSubmitted = c.InFlight, c.New
	if c.InFlight > 0 {
		j.log.Warn("rows were being submitted when the run stopped: they have no operation id and cannot be cancelled; they stay as they are",
			"rows", c.InFlight)
	}
	var targets []cancelTarget
	for i := range st.Len() {
		if st.Phase(i) != store.PhaseSubmitted {
			continue
		}
		r := st.Row(i)
		n, ok := st.Named[i]
		if !ok {
			// Journaled by a batchgpt that kept no names: the row number stands in for its id.
			n = store.Named{ID: strconv.Itoa(i + 1)}
		}
		targets = append(targets, cancelTarget{row: i, opID: r.OpID, name: n, try: int(r.Attempt)})
	}
	if len(targets) == 0 {
		j.log.Info("no operation is pending: nothing to cancel")
		return sum, nil
	}
	if err := j.connect(ctx); err != nil {
		return sum, err
	}
	var cols []string
	if st.Header.ResultsFormat == FormatCSV {
		if cols, err = CSVHeader(st.Header.Results); err != nil {
			return sum, err
		}
	}
	t := j.cfg.Tuning
	client, err := api.New(api.Config{
		Endpoint: j.cfg.Settings.Endpoint, OperationsEndpoint: j.cfg.Settings.OperationsEndpoint,
		Credentials: j.cfg.Credentials, HTTPClient: j.cfg.HTTPClient,
		PollPacer:      api.NewPacer(t.PollRPS, 0),
		Retry:          retry.Policy{Attempts: t.MaxAttempts, Backoff: retry.Backoff{Base: t.BackoffBase}},
		RequestTimeout: t.RequestTimeout, Logger: j.log, InFlight: j.cfg.Kill,
	})
	if err != nil {
		return sum, err
	}
	if j.cfg.Cache != nil && !j.cfg.Settings.NoCache {
		cu = newCacheUse(j.cfg.Cache, j.log, false, 0, j.cfg.Settings.AcceptFiltered)
	}
	j.log.Info("cancelling the pending operations", "operations", len(targets))

	var mu sync.Mutex // guards sum
	cc := &canceller{j: j, client: client, w: w, format: st.Header.ResultsFormat, cols: cols, cache: cu}
	workers := t.PollWorkers
	if workers <= 0 {
		workers = poller.DefaultConcurrency
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, tg := range targets {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			out, err := cc.cancel(gctx, tg)
			mu.Lock()
			defer mu.Unlock()
			switch out {
			case cancelDone:
				sum.Cancelled++
			case cancelFinished:
				sum.Finished++
			case cancelPending:
				sum.Pending++
			}
			return err
		})
	}
	err = g.Wait()
	if err == nil && ctx.Err() != nil {
		err = ErrInterrupted
	}
	if err != nil {
		// Stopped (auth, disk, a signal): what was not settled is still pending.
		sum.Pending = len(targets) - sum.Cancelled - sum.Finished
		return sum, err
	}
	if c.Succeeded+c.Failed+sum.Cancelled+sum.Finished == c.Rows {
		if err := j.finalize(w); err != nil {
			return sum, err
		}
	} else if err := w.Flush(); err != nil {
		return sum, err
	}
	if sum.Pending > 0 {
		return sum, fmt.Errorf("%w: %d operation(s) left pending (see the warnings above); run batchgpt cancel again later, or resume to collect them",
			ErrCancelIncomplete, sum.Pending)
	}
	return sum, nil
}

// What became of one operation's cancel.
type cancelOutcome int

const (
	cancelPending  cancelOutcome = iota // not settled: the row stays pending
	cancelDone                          // cancelled: the row failed with kind cancelled
	cancelFinished                      // done before the cancel: the row has its real result
)

// canceller settles operations by cancelling them.
type canceller struct {
	j      *Job
	client *api.Client
	w      *store.Writer
	format string
	cols   []string
	cache  *cacheUse
}

// cancel cancels one operation and records its row's result if the operation is done. An error
// stops the whole cancel: the credentials were refused, the journal failed, or the context ended.
func (cc *canceller) cancel(ctx context.Context, tg cancelTarget) (cancelOutcome, error) {
	log := cc.j.log
	op, err := cc.client.Cancel(ctx, tg.opID)
	if err != nil {
		switch retry.Classify(err) {
		case retry.Canceled:
			return cancelPending, ErrInterrupted
		case retry.Auth:
			return cancelPending, fmt.Errorf("%w: %w", ErrAuth, err)
		case retry.Permanent:
			// Refused: perhaps because the operation is done (what the API answers then is
			// UNCONFIRMED, docs/api.md §8). Its state says.
			log.Debug("cancel refused; reading the operation", "operation_id", tg.opID, "err", err)
			if op, _ = cc.client.Operation(ctx, tg.opID); op == nil || !op.Done {
				log.Warn("the API refused the cancel; the row stays pending", "id", tg.name.ID, "operation_id", tg.opID, "err", err)
				return cancelPending, nil
			}
		default: // not found, or transient beyond the retry policy
			log.Warn("operation not cancelled; the row stays pending", "id", tg.name.ID, "operation_id", tg.opID, "err", err)
			return cancelPending, nil
		}
	}
	if !op.Done {
		// Best effort (docs/api.md §8): the cancel was taken, the operation may still finish.
		if again, err := cc.client.Operation(ctx, tg.opID); err == nil && again.Done {
			op = again
		} else {
			log.Warn("the API took the cancel but the operation still runs; the row stays pending", "id", tg.name.ID, "operation_id", tg.opID)
			return cancelPending, nil
		}
	}
	res := fromOperation(tg.name.ID, op, tg.try, cc.j.cfg.Settings.AcceptFiltered)
	out := cancelFinished
	if res.Error != nil && res.Error.Kind == KindCancelled {
		out = cancelDone
	}
	line, err := res.Encode(cc.format, cc.cols)
	if err != nil {
		return cancelPending, err
	}
	var durable func()
	if cc.cache != nil && res.Status == StatusSucceeded && tg.name.Model != "" {
		e := CacheEntry(tg.name.Key, tg.name.Model, res)
		durable = func() { cc.cache.store(e) }
	}
	if err := cc.w.ResultThen(tg.row, res.Status == StatusFailed, line, durable); err != nil {
		return cancelPending, fmt.Errorf("checkpoint: %w", err)
	}
	if out == cancelFinished {
		log.Info("operation finished before its cancel: its result is kept", "id", tg.name.ID, "operation_id", tg.opID, "status", res.Status)
	}
	return out, nil
}
