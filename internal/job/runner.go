package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/codes"
	"github.com/batchgpt/batchgpt/internal/retry"
	"github.com/batchgpt/batchgpt/poller"
	"github.com/batchgpt/batchgpt/store"
)

// runner holds what the submit workers and the poll handler share during one execution.
type runner struct {
	j         *Job
	w         *store.Writer
	client    *api.Client
	h         store.Header
	resubmit  chan work
	checkDone func()
	// fatal ends with the first error that must stop the run (auth, disk), its cause; nothing
	// else ends it, so an error after an interrupt is still reported.
	fatal  context.Context
	stop   context.CancelCauseFunc
	gaveUp retry.Streak // submissions in a row that exhausted their attempts
	ctx    context.Context
	cancel context.CancelCauseFunc // ends ctx: the run stops
	plan   *plan
	reread *batch.Rereader // nil when no row follows another
	cache  *cacheUse       // nil without a cache

	modelsMu sync.Mutex
	models   map[string]string // interned model URIs of pending rows

	// late holds, by row, the rows that wait for that row's answer although the input's groups
	// do not say so: rows whose fingerprint collided with their leader's and that send the same
	// request as another such row (see resolve and the strays in dispatch). Without it, each of
	// them was submitted and billed. In memory: a resume finds them open as strays, and groups
	// them again.
	lateMu sync.Mutex
	late   map[int][]batch.Pos
}

// wait makes the row at pos wait for row first's answer (see runner.late). It must be called
// before first can be resolved.
func (r *runner) wait(first int, pos batch.Pos) {
	r.lateMu.Lock()
	defer r.lateMu.Unlock()
	if r.late == nil {
		r.late = map[int][]batch.Pos{}
	}
	r.late[first] = append(r.late[first], pos)
}

// firstOf reports whether the row at pos is the first with request k among those seen (and
// notes it there); otherwise it makes that row wait for the first one's answer (runner.wait).
// seen is allocated on first use.
func (r *runner) firstOf(seen *map[batch.Key]int, k batch.Key, pos batch.Pos) bool {
	if first, ok := (*seen)[k]; ok {
		r.wait(first, pos)
		return false
	}
	if *seen == nil {
		*seen = map[batch.Key]int{}
	}
	(*seen)[k] = pos.Index
	return true
}

// takeLate returns, and forgets, the rows that wait for row index's answer by runner.wait.
func (r *runner) takeLate(index int) []batch.Pos {
	r.lateMu.Lock()
	defer r.lateMu.Unlock()
	ps := r.late[index]
	delete(r.late, index)
	return ps
}

// setFatal records the first error that must stop the run (auth, disk) and stops everything.
func (r *runner) setFatal(err error) {
	r.stop(err) // the cause of fatal if it is the first
	r.cancel(err)
}

// err is the error that stopped the run, or nil.
func (r *runner) err() error {
	if r.fatal.Err() == nil {
		return nil
	}
	return context.Cause(r.fatal)
}

// dispatch streams the input: rows never submitted (or in doubt) go to the submit workers, rows
// with an operation id go to the poller; then it serves resubmissions until every row is resolved.
func (r *runner) dispatch(ctx context.Context, p *plan, allDone <-chan struct{}) error {
	queue := make(chan work)
	workers := r.startSubmitters(ctx, queue)
	launch := func(wk work) bool {
		if ctx.Err() != nil {
			return false // stopped: no new work
		}
		select {
		case queue <- wk:
			return true
		case <-ctx.Done():
			return false
		}
	}
	err := r.feed(ctx, p, launch)
	p.submitted = nil // every pending operation was handed to the poller
	if err != nil {
		r.setFatal(err)
	} else {
		r.serveResubmissions(ctx, allDone, launch)
	}
	close(queue)
	_ = workers.Wait() // submit reports its failures through setFatal
	return r.err()
}

// startSubmitters starts the submit workers, which take rows from queue until it is closed. A
// fixed pool: a goroutine per row would grow a fresh stack for every request.
func (r *runner) startSubmitters(ctx context.Context, queue <-chan work) *errgroup.Group {
	var g errgroup.Group
	for range r.j.cfg.Tuning.Concurrency {
		g.Go(func() error {
			for wk := range queue {
				r.submit(ctx, wk)
			}
			return nil
		})
	}
	return &g
}

// feed hands every unresolved row of the run to the submit workers (through launch) or to the
// poller; for a collection, every outstanding operation to the poller.
func (r *runner) feed(ctx context.Context, p *plan, launch func(work) bool) error {
	if p.collect != nil {
		r.collectPending(p)
		return nil
	}
	if c := p.counts; c.New+c.InFlight+c.Submitted == 0 {
		return nil // everything resolved: nothing to read
	}
	j := r.j
	var rd *batch.Reader
	var err error
	if cs := r.h.InputChunks; len(cs) > 0 && p.resolved != nil {
		// A resume reads from the chunk of the first row that needs the input: the rows before
		// it are resolved, and their chunks are neither read nor verified. (A new run has just
		// validated the whole input, and reads it from the start.)
		rd, err = batch.OpenChunks(j.cfg.Input, j.cfg.Settings.Input, r.h.InputSize, batchChunks(cs), p.firstOpen())
		if err == nil {
			rd.SkipChunks(p.nextNeeded) // and the later chunks whose rows are all done, too
		}
	} else {
		rd, err = batch.Open(j.cfg.Input, j.cfg.Settings.Input)
	}
	if err != nil {
		if ch := changed(err); errors.Is(ch, ErrInputChanged) {
			return ch
		}
		return fmt.Errorf("open input: %w", err)
	}
	defer rd.Close()
	var lookups []work // rows for the cache, looked up lookupBatch at a time
	// dispatch hands row on; false: stop.
	dispatch := func(row batch.Row) bool {
		wk, send := r.route(p, row)
		switch {
		case !send:
		case r.cache == nil:
			return launch(wk)
		default:
			lookups = append(lookups, wk)
			if len(lookups) == lookupBatch {
				if !r.lookupAndLaunch(ctx, lookups, launch) {
					return false
				}
				lookups = lookups[:0]
			}
		}
		return true
	}
	// Strays that send the same request (true duplicates of each other, whose fingerprint
	// collided with their leader's) go out once: the later ones wait for the first's answer.
	// All are registered before any is dispatched: a first answered at once would not find a
	// row registered after it. Strays are few (about 45 collisions in ten million rows).
	var strayFirst map[batch.Key]int
	var strayRows []batch.Row
	for _, pos := range p.strays {
		row, err := r.reread.Row(pos)
		if ch := changed(err); errors.Is(ch, ErrInputChanged) {
			return ch
		}
		if err != nil {
			return fmt.Errorf("re-read row %d of %s: %w", pos.Index+1, j.cfg.Input, err)
		}
		if r.firstOf(&strayFirst, r.key(row), pos) {
			strayRows = append(strayRows, row)
		}
	}
	for _, row := range strayRows {
		if !dispatch(row) {
			return nil
		}
	}
	for {
		row, err := rd.Next()
		if err == io.EOF {
			if len(lookups) > 0 {
				r.lookupAndLaunch(ctx, lookups, launch)
			}
			return nil
		}
		if ch := changed(err); errors.Is(ch, ErrInputChanged) {
			// No row of the chunk that differs (or later) was handed out.
			return ch
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		if row.Index >= p.rows {
			return fmt.Errorf("input %s has more rows than the checkpoint's %d", j.cfg.Input, p.rows)
		}
		if p.stray(row.Index) {
			continue // read by position above
		}
		if !dispatch(row) {
			return nil
		}
	}
}

// route decides what becomes of one input row: nothing (resolved, or resolved with its leader's
// answer), polling (it has an operation id), or a submission (send, of wk).
func (r *runner) route(p *plan, row batch.Row) (wk work, send bool) {
	if p.following(row.Index) {
		return work{}, false // resolved with its leader's answer
	}
	rs := p.row(row.Index)
	switch rs.Phase {
	case store.PhaseResolved:
		return work{}, false
	case store.PhaseSubmitted:
		if b := r.j.budget; b != nil {
			b.hold(row, r.model(row)) // in flight, at its estimate until it is answered
		}
		r.j.addPending(row, int(rs.Attempt), r.key(row), r.model(row))
		r.j.poll.Add(poller.Item{Row: row.Index, OpID: rs.OpID, SubmittedAt: time.UnixMilli(rs.SubmittedAt)})
		return work{}, false
	}
	// New, or in doubt: the request may have reached the API before the crash, and sending it
	// again may bill twice. The cache may answer either without a submission.
	return work{row: row, key: r.key(row), attempt: int(rs.Attempt) + 1, fresh: true, inDoubt: rs.Phase == store.PhaseInFlight}, true
}

// serveResubmissions launches the rows handed back for another submission until every row is
// resolved or the run stops.
func (r *runner) serveResubmissions(ctx context.Context, allDone <-chan struct{}, launch func(work) bool) {
	for {
		select {
		case wk := <-r.resubmit:
			if !launch(wk) {
				return
			}
		case <-allDone:
			return
		case <-ctx.Done():
			return
		}
	}
}

// collectPending hands every outstanding operation of a collection to the poller, named as the
// journal names its row.
func (r *runner) collectPending(p *plan) {
	j := r.j
	unnamed := 0
	for i, rs := range p.submitted {
		n, ok := p.collect[i]
		if !ok {
			// Journaled by a batchgpt that kept no names: the row number stands in for its id,
			// and the answer is not cached (its request is unknown).
			n = store.Named{ID: strconv.Itoa(i + 1)}
			unnamed++
		}
		pr := &pendingRow{id: n.ID, attempt: int(rs.Attempt), key: n.Key, model: n.Model}
		j.mu.Lock()
		j.pending[i] = pr
		j.mu.Unlock()
		j.poll.Add(poller.Item{Row: i, OpID: rs.OpID, SubmittedAt: time.UnixMilli(rs.SubmittedAt)})
	}
	if unnamed > 0 {
		j.log.Warn("operations of a checkpoint written by an older batchgpt: their results carry the row number as id", "rows", unnamed)
	}
}

// lookupBatch is how many rows the dispatcher looks up in the cache at once: one query instead
// of many, and still a negligible delay before the first submission.
const lookupBatch = 256

// doubt journals (queued) and counts one possible billed duplicate of row: a try, or an
// operation, that may have been billed and whose answer is never used. The D record also closes
// that try in the journal, so it is never counted twice (see store/doc.go).
func (r *runner) doubt(row batch.Row, why string) error {
	if err := r.w.Doubt(row.Index); err != nil {
		return err
	}
	r.j.inDoubt.Add(1)
	r.j.log.Warn(why+" (possible duplicate: may be billed twice)", "id", row.ID, "row", row.Index+1)
	return nil
}

// lookupAndLaunch answers the rows the cache knows and submits the others.
func (r *runner) lookupAndLaunch(ctx context.Context, wks []work, launch func(work) bool) bool {
	keys := make([]batch.Key, len(wks))
	for i := range wks {
		keys[i] = wks[i].key
	}
	hits := r.cache.lookup(ctx, keys)
	for i, wk := range wks {
		if hits != nil && hits[i] != nil {
			if wk.inDoubt {
				// Its try of the previous run may have created an operation, now never used.
				if err := r.doubt(wk.row, "row was being submitted when the previous run stopped; answered from the cache"); err != nil {
					r.setFatal(err)
					return false
				}
			}
			r.resolve(wk.row.Index, wk.key, "", FromCache(wk.row.ID, hits[i], r.j.cfg.Settings.AcceptFiltered)) // stored already
			continue
		}
		if !launch(wk) {
			return false
		}
	}
	return true
}

// key is the row's request key.
func (r *runner) key(row batch.Row) batch.Key { return batch.RequestKey(r.j.scope, row.Body) }

// model returns the row's model URI, interned: pending rows of one model share one string.
func (r *runner) model(row batch.Row) string {
	m := batch.ModelOf(row.Body)
	r.modelsMu.Lock()
	defer r.modelsMu.Unlock()
	if s, ok := r.models[m]; ok {
		return s
	}
	r.models[m] = m
	return m
}

func (j *Job) addPending(row batch.Row, attempt int, key batch.Key, model string) {
	j.mu.Lock()
	j.pending[row.Index] = &pendingRow{id: row.ID, offset: row.Offset, line: row.Line, attempt: attempt, key: key, model: model}
	j.mu.Unlock()
}

func (j *Job) takePending(index int) *pendingRow {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.pending[index]
	delete(j.pending, index)
	return p
}

// submit sends one row and journals its operation id.
//
// Possible duplicates are counted per try, each once (docs/api.md §6: a request sent twice is
// billed twice): a try that failed in a way that may have created an operation is journaled as a
// D record before the next try goes out, or right after the call if it was the last; a row in
// doubt (its try of a crashed run, or an operation given up on) gets its D when this submission
// actually goes out. A try that never left (a refused connection, a 4xx, a 429) is not counted.
func (r *runner) submit(ctx context.Context, wk work) {
	j := r.j
	row := wk.row
	if !r.admit(row) {
		return // over the spend limit: the row stays as it is, unsubmitted (budget.go)
	}
	sub, err := r.client.Submit(ctx, row.Body, func(afterDoubt bool) error {
		if afterDoubt {
			// Durable (with the intent) before the next try leaves: a crash during that try
			// leaves the row in flight again, to be counted for that try alone.
			if err := r.doubt(row, "a failed submission may have created an operation; trying again"); err != nil {
				return err
			}
		} else {
			if wk.inDoubt {
				if err := r.doubt(row, "submitting the row again: its previous try or operation may have been billed"); err != nil {
					return err
				}
			}
			if wk.fresh {
				// What collecting its operation needs without the input; durable with the intent.
				if err := r.w.Name(row.Index, store.Named{ID: row.ID, Key: wk.key, Model: r.model(row)}); err != nil {
					return err
				}
			}
		}
		return r.w.Intent(row.Index, wk.attempt)
	})
	if sub.InDoubt {
		// The last try may have created an operation; no other try will tell.
		if derr := r.doubt(row, "a failed submission may have created an operation"); derr != nil {
			r.setFatal(derr)
			return
		}
	}
	if err != nil {
		r.submitFailed(wk, sub, err)
		return
	}
	r.gaveUp.Succeeded()
	now := time.Now() // the API's answer has just arrived
	lag := j.cfg.JournalLag
	// The row counts as submitted once its operation id is durable: until then a kill -9 leaves
	// it in flight, and the next process counts it as a possible duplicate when it sends it again.
	err = r.w.SubmittedThen(row.Index, wk.attempt, sub.OpID, now, func() {
		if lag != nil {
			lag(time.Since(now))
		}
		j.submissions.Add(1)
		if wk.fresh {
			j.submitted.Add(1)
		}
	})
	if err != nil {
		r.setFatal(err)
		return
	}
	j.addPending(row, wk.attempt, wk.key, r.model(row))
	j.poll.Add(poller.Item{Row: row.Index, OpID: sub.OpID, SubmittedAt: now})
}

// submitFailed settles a submission that ended without an operation id, by the class of its
// error: the run stops (the journal failed, the credentials were refused, or retry.StopAfter
// submissions in a row gave up: the API is down), or the row fails, or it goes to the back of the
// queue for another submission while it has attempts left.
func (r *runner) submitFailed(wk work, sub api.Submission, err error) {
	j := r.j
	row := wk.row
	switch retry.Classify(err) {
	case retry.Canceled:
		r.unsent(row.Index, sub)
	case retry.Local:
		r.setFatal(fmt.Errorf("checkpoint: %w", err))
	case retry.Auth:
		if r.deniedOwnModel(row, err) {
			r.resolve(row.Index, wk.key, "", failure(row.ID, "", wk.attempt, KindPermissionDenied, err))
			return
		}
		r.unsent(row.Index, sub)
		r.setFatal(fmt.Errorf("%w: %w", ErrAuth, err))
	case retry.Permanent, retry.NotFound:
		r.resolve(row.Index, wk.key, "", failure(row.ID, "", wk.attempt, KindInvalid, err))
	default:
		// One row that keeps failing is that row's problem; several in a row mean the API is
		// down or unreachable, and failing every row until it is back would leave a night's
		// work to --retry-failed: stop instead, resumable.
		if r.gaveUp.GaveUp() {
			r.unsent(row.Index, sub)
			r.setFatal(fmt.Errorf("%w: %d submissions in a row kept failing, the last: %w", ErrUnavailable, retry.StopAfter, err))
			return
		}
		if wk.attempt < j.cfg.Tuning.MaxAttempts {
			r.unsent(row.Index, sub)
			j.log.Warn("submission kept failing; the row goes to the back of the queue", "id", row.ID, "attempt", wk.attempt, "err", err)
			r.requeue(work{row: row, key: wk.key, attempt: wk.attempt + 1, fresh: wk.fresh})
			return
		}
		r.resolve(row.Index, wk.key, "", failure(row.ID, "", wk.attempt, KindGaveUp, err))
	}
}

// unsent handles a submission that ended without an operation id and without a verdict on the
// row. With no try sent there is no intent either (a row in doubt stays so, to be counted when it
// is sent). Otherwise the row is plainly unsubmitted again: a last try that may have created an
// operation was counted, and its D record closed the intent; a U record closes it otherwise.
func (r *runner) unsent(row int, sub api.Submission) {
	if sub.Tries > 0 && !sub.InDoubt {
		if err := r.w.Reopen(row); err != nil {
			r.setFatal(err)
		}
	}
}

// handle takes a finished operation from the poller.
func (r *runner) handle(o poller.Outcome[*api.Operation]) {
	j := r.j
	pr := j.takePending(o.Row)
	if pr == nil {
		j.log.Error("internal: operation for a row that is not pending", "row", o.Row, "operation_id", o.OpID)
		return
	}
	var res *Result
	switch {
	case o.Err != nil && retry.Classify(o.Err) == retry.NotFound:
		if r.again(o, pr, "operation not found: a result is kept 3 days on the server, or the operation never became visible; submitting the row again") {
			return
		}
		res = failure(pr.id, o.OpID, pr.attempt, KindNotFound, o.Err)
	case o.Err != nil:
		res = failure(pr.id, o.OpID, pr.attempt, KindGaveUp, o.Err)
	case o.Op.Failed() && retry.Resubmit(codes.Code(o.Op.Error.Code)):
		if r.again(o, pr, fmt.Sprintf("operation failed with transient code %d (%s); submitting the row again", o.Op.Error.Code, o.Op.Error.Message)) {
			return
		}
		res = fromOperation(pr.id, o.Op, pr.attempt, j.cfg.Settings.AcceptFiltered)
	default:
		res = fromOperation(pr.id, o.Op, pr.attempt, j.cfg.Settings.AcceptFiltered)
	}
	r.resolve(o.Row, pr.key, pr.model, res)
}

// again queues a row for a new submission if attempts remain (never while collecting).
func (r *runner) again(o poller.Outcome[*api.Operation], pr *pendingRow, why string) bool {
	j := r.j
	if pr.attempt >= j.cfg.Tuning.MaxAttempts || r.plan.collect != nil {
		return false
	}
	row, err := batch.ReadRow(j.cfg.Input, j.cfg.Settings.Input, pr.offset, o.Row, pr.line)
	if err != nil {
		r.setFatal(fmt.Errorf("re-read row %d of %s: %w", o.Row+1, j.cfg.Input, err))
		return true
	}
	j.log.Warn(why, "id", pr.id, "operation_id", o.OpID, "attempt", pr.attempt+1)
	j.resubmitted.Add(1)
	// The operation given up on was created, and may be billed (docs/api.md §6): counted when the
	// row goes out.
	r.requeue(work{row: row, key: pr.key, attempt: pr.attempt + 1, inDoubt: true})
	return true
}

// requeue hands a row back to the dispatcher for another submission. It never blocks the
// caller (a poller or submit worker): the dispatcher drains the channel until every row is
// resolved.
func (r *runner) requeue(wk work) {
	go func() {
		select {
		case r.resubmit <- wk:
		case <-r.ctx.Done():
		}
	}()
}

// resolve writes the row's result, and first that of every row waiting for it as its leader:
// a leader's R record is never durable before its followers', so a resumed run never finds a
// resolved leader with a follower still waiting. model is the row's model URI ("" when the result
// will not be cached).
func (r *runner) resolve(index int, key batch.Key, model string, res *Result) {
	j := r.j
	// Rows whose fingerprint collided with this leader's go on their own, once for each request
	// they send: alone lists the first of each, the others wait for its answer.
	var alone []work
	var sent map[batch.Key]int // the first of each in alone, by request
	for _, f := range append(r.plan.waiting(index), r.takeLate(index)...) {
		row, err := r.reread.Row(f)
		if ch := changed(err); errors.Is(ch, ErrInputChanged) {
			// Neither the leader's line nor its followers' is written: the leader stays
			// submitted, and the collection that follows writes its answer.
			r.setFatal(ch)
			return
		}
		if err != nil {
			r.setFatal(fmt.Errorf("re-read row %d of %s: %w", f.Index+1, j.cfg.Input, err))
			return
		}
		if k := r.key(row); k != key {
			// Two different requests whose fingerprints collide: the row goes on its own, and
			// the cache may know its answer (the lookup that answers other rows was skipped for
			// it, a follower).
			if hits := r.cache.lookup(r.ctx, []batch.Key{k}); hits != nil && hits[0] != nil {
				j.log.Info("row has its own request after all; answered from the cache", "id", row.ID, "row", f.Index+1)
				r.resolve(f.Index, k, "", FromCache(row.ID, hits[0], j.cfg.Settings.AcceptFiltered))
				continue
			}
			if r.firstOf(&sent, k, f) {
				j.log.Info("row has its own request after all; submitting it", "id", row.ID, "row", f.Index+1)
				alone = append(alone, work{row: row, key: k, attempt: 1, fresh: true})
			}
			continue
		}
		fr := *res
		fr.ID, fr.DeduplicatedFrom, fr.Attempts = row.ID, res.ID, 0
		if !r.write(f.Index, &fr, nil) {
			return
		}
	}
	for _, wk := range alone {
		r.requeue(wk) // after the rows that wait for it were registered: it cannot be answered first
	}
	var durable func()
	if r.cache != nil && res.Status == StatusSucceeded && !res.Cached && model != "" {
		e := CacheEntry(key, model, res)
		durable = func() { r.cache.store(e) }
	}
	r.write(index, res, durable)
}

// write queues one result line and counts it.
func (r *runner) write(index int, res *Result, durable func()) bool {
	j := r.j
	line, err := res.Encode(r.h.ResultsFormat, j.csvCols)
	if err != nil {
		r.setFatal(err)
		return false
	}
	if err := r.w.ResultThen(index, res.Status == StatusFailed, line, durable); err != nil {
		r.setFatal(err)
		return false
	}
	if res.Status == StatusSucceeded {
		j.succeeded.Add(1)
	} else {
		j.log.Warn("row failed", "id", res.ID, "operation_id", res.OperationID, "kind", res.Error.Kind,
			"code", res.Error.Code, "message", res.Error.Message, "request_id", res.Error.RequestID, "attempts", res.Attempts)
		j.failed.Add(1)
		j.mu.Lock()
		j.failedByKind[res.Error.Kind]++
		j.mu.Unlock()
	}
	j.countAnswer(res)
	reused := res.Cached || res.DeduplicatedFrom != ""
	switch {
	case res.DeduplicatedFrom != "":
		j.deduped.Add(1)
	case res.Cached:
		j.cacheHits.Add(1)
	}
	if reused {
		j.submitted.Add(1) // past the submission stage without one
	}
	if b := j.budget; b != nil {
		var billed *Usage
		if !reused {
			billed = res.Usage
		}
		b.settle(index, billed)
	}
	if res.Usage != nil {
		if reused {
			j.savedTokens.Add(res.Usage.InputTokens + res.Usage.CompletionTokens)
		} else {
			j.tokensIn.Add(res.Usage.InputTokens)
			j.tokensOut.Add(res.Usage.CompletionTokens)
		}
	}
	j.resolved.Add(1)
	r.checkDone()
	return true
}
