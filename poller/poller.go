package poller

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Operation is what the poller needs to know of an operation it read.
type Operation interface {
	// Finished reports whether the operation is done, with an answer or an error.
	Finished() bool
}

// Verdict is what the poller does after a failed read of an operation.
type Verdict int

const (
	// Retry: the failure was transient and the operation id is safe; look again after
	// Policy.RetryDelay.
	Retry Verdict = iota
	// Interrupted: the read was cut short because the context ended; it does not count as a poll.
	Interrupted
	// Fatal stops polling altogether (authentication): Run returns the error with ErrFatal.
	Fatal
	// Missing: the operation was not found. A young one may not be visible yet and is looked at
	// again (Config.FreshNotFound, FreshWindow); an older one was purged and is handed over.
	Missing
	// GiveUp hands the error over as the operation's outcome.
	GiveUp
)

// Policy judges the failed reads of operations: it is the caller's retry policy, the poller
// keeps only the loop.
type Policy interface {
	// Verdict says what to do about err, the failure of one read.
	Verdict(err error) Verdict
	// RetryDelay is the wait before looking again at an operation whose last failures reads in
	// a row failed with Retry.
	RetryDelay(failures int) time.Duration
}

// Item is one pending operation.
type Item struct {
	Row         int
	OpID        string
	SubmittedAt time.Time
}

// Outcome is a finished look at an operation: done (Op set), or given up on (Err set, for
// example a 404 for an operation older than the fresh window: purged after retention).
type Outcome[O Operation] struct {
	Item
	Op    O // the zero value when Err is set
	Err   error
	Polls int
	// Age is how long after submission the operation was seen done.
	Age time.Duration
}

// DefaultConcurrency is the polls in flight of a Config that sets none.
const DefaultConcurrency = 32

// Config tunes the poller.
type Config struct {
	Schedule    *Schedule
	Concurrency int // polls in flight at once; the reader's pacer sets the rate
	// FreshNotFound is how many 404s a young operation may get before it is given up on
	// (docs/api.md §4: a new operation may not be on all replicas yet).
	FreshNotFound int
	FreshWindow   time.Duration
	Now           func() time.Time
}

// ErrFatal wraps errors that stop polling altogether (authentication).
var ErrFatal = errors.New("polling stopped")

type entry struct {
	Item
	due      time.Time
	polls    int
	notFound int
	errs     int
	lastRun  time.Duration // age when last seen running
	learned  bool          // due was computed from a learnt distribution
	index    int
}

type queue []*entry

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q queue) Swap(i, j int)      { q[i], q[j] = q[j], q[i]; q[i].index = i; q[j].index = j }
func (q *queue) Push(x any)        { e := x.(*entry); e.index = len(*q); *q = append(*q, e) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// Poller owns the pending operations.
type Poller[O Operation] struct {
	read   func(ctx context.Context, id string) (O, error)
	policy Policy
	cfg    Config

	mu       sync.Mutex
	q        queue
	inFlight int
	wake     chan struct{}
	closed   bool
	polls    int64
}

// New returns a poller that reads operations with read and judges its failures by policy.
func New[O Operation](read func(ctx context.Context, id string) (O, error), policy Policy, cfg Config) *Poller[O] {
	if cfg.Schedule == nil {
		cfg.Schedule = NewSchedule()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.FreshNotFound <= 0 {
		cfg.FreshNotFound = 3
	}
	if cfg.FreshWindow <= 0 {
		cfg.FreshWindow = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Poller[O]{read: read, policy: policy, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Add queues an operation. Safe for concurrent use, also while Run is running.
func (p *Poller[O]) Add(it Item) {
	now := p.cfg.Now()
	age := now.Sub(it.SubmittedAt)
	e := &entry{Item: it, learned: p.cfg.Schedule.Learned()}
	e.due = it.SubmittedAt.Add(p.cfg.Schedule.Next(max(age, 0), 0))
	p.mu.Lock()
	heap.Push(&p.q, e)
	p.mu.Unlock()
	p.signal()
}

// CloseWhenEmpty tells Run to return once nothing is pending or in flight and no more Adds come.
func (p *Poller[O]) CloseWhenEmpty() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.signal()
}

// Pending counts operations queued or being polled.
func (p *Poller[O]) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.q) + p.inFlight
}

// Polls counts the GET requests made (retries inside the client not included).
func (p *Poller[O]) Polls() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls
}

func (p *Poller[O]) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run polls until CloseWhenEmpty was called and everything is resolved, or ctx ends, or a fatal
// error occurs. handle is called from several goroutines for each finished operation.
func (p *Poller[O]) Run(ctx context.Context, handle func(Outcome[O])) error {
	// Long-lived workers: a goroutine per poll would grow a fresh stack for every HTTP call. The
	// first fatal error of one ends the group's context, and Run returns it as the cause.
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan *entry)
	for range p.cfg.Concurrency {
		g.Go(func() error {
			for e := range jobs {
				if err := p.poll(ctx, e, handle); err != nil {
					return err
				}
			}
			return nil
		})
	}
	defer func() { _ = g.Wait() }() // the cause, if any, is returned by Run itself
	defer close(jobs)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		p.mu.Lock()
		if p.closed && len(p.q) == 0 && p.inFlight == 0 {
			p.mu.Unlock()
			return nil
		}
		var wait time.Duration = time.Hour
		var e *entry
		if len(p.q) > 0 {
			now := p.cfg.Now()
			if d := p.q[0].due.Sub(now); d <= 0 {
				e = heap.Pop(&p.q).(*entry)
				if p.reschedule(e, now) {
					heap.Push(&p.q, e)
					p.mu.Unlock()
					continue
				}
				p.inFlight++
			} else {
				wait = d
			}
		}
		p.mu.Unlock()

		if e == nil {
			// Since Go 1.23 Reset never leaves a stale tick in the channel: no drain needed.
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-p.wake:
			case <-timer.C:
			}
			continue
		}
		select {
		case jobs <- e:
		case <-ctx.Done():
			p.requeue(e)
			return context.Cause(ctx)
		}
	}
}

// reschedule revisits, when it falls due, a poll planned before anything was learnt: what is
// known now (completions observed, or older operations still running) may say it is too early,
// and the cold-start ladder would otherwise spend the poll quota on operations unlikely to be done.
func (p *Poller[O]) reschedule(e *entry, now time.Time) bool {
	if e.learned {
		return false
	}
	e.learned = p.cfg.Schedule.Learned()
	due := e.SubmittedAt.Add(p.cfg.Schedule.Next(e.lastRun, e.polls))
	if due.Sub(now) <= p.cfg.Schedule.MinGap {
		return false
	}
	e.due = due
	return true
}

func (p *Poller[O]) requeue(e *entry) {
	p.mu.Lock()
	p.inFlight--
	heap.Push(&p.q, e)
	p.mu.Unlock()
	p.signal()
}

func (p *Poller[O]) finish() {
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
	p.signal()
}

// poll looks at one operation once and reschedules or hands it over.
func (p *Poller[O]) poll(ctx context.Context, e *entry, handle func(Outcome[O])) error {
	op, err := p.read(ctx, e.OpID)
	var verdict Verdict
	if err != nil {
		verdict = p.policy.Verdict(err)
	}
	if err != nil && verdict == Interrupted {
		p.requeue(e) // not a poll: nothing was learnt
		return nil
	}
	now := p.cfg.Now()
	age := now.Sub(e.SubmittedAt)
	p.mu.Lock()
	p.polls++
	p.mu.Unlock()
	e.polls++
	if err != nil {
		switch verdict {
		case Fatal:
			p.requeue(e)
			return errors.Join(ErrFatal, err)
		case Missing:
			e.notFound++
			if age < p.cfg.FreshWindow && e.notFound <= p.cfg.FreshNotFound {
				e.due = now.Add(time.Duration(e.notFound) * 500 * time.Millisecond)
				p.requeue(e)
				return nil
			}
			p.finish()
			handle(Outcome[O]{Item: e.Item, Err: err, Polls: e.polls, Age: age})
			return nil
		case GiveUp:
			p.finish()
			handle(Outcome[O]{Item: e.Item, Err: err, Polls: e.polls, Age: age})
			return nil
		default:
			// Transient after the reader's own retries: the id is safe, keep trying later.
			e.errs++
			e.due = now.Add(p.policy.RetryDelay(e.errs))
			p.requeue(e)
			return nil
		}
	}
	e.errs = 0
	if !op.Finished() {
		e.lastRun = age
		p.cfg.Schedule.Running(age)
		e.learned = p.cfg.Schedule.Learned()
		e.due = e.SubmittedAt.Add(p.cfg.Schedule.Next(age, e.polls))
		p.requeue(e)
		return nil
	}
	p.cfg.Schedule.Observe(e.lastRun, age)
	p.finish()
	handle(Outcome[O]{Item: e.Item, Op: op, Polls: e.polls, Age: age})
	return nil
}
