// Package poller waits for operations to finish: it keeps every pending operation in a queue
// ordered by when it is worth looking at next (see Schedule), spends the shared poll quota on the
// ones most likely to be done, and hands each finished operation to the caller.
package poller

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// Getter reads one operation; *api.Client implements it.
type Getter interface {
	Operation(ctx context.Context, id string) (*api.Operation, error)
}

// Item is one pending operation.
type Item struct {
	Row         int
	OpID        string
	SubmittedAt time.Time
}

// Outcome is a finished look at an operation: done (Op set), or given up on (Err set, for
// example a 404 for an operation older than the fresh window: purged after retention).
type Outcome struct {
	Item
	Op    *api.Operation
	Err   error
	Polls int
	// Age is how long after submission the operation was seen done.
	Age time.Duration
}

// Config tunes the poller.
type Config struct {
	Schedule    *Schedule
	Concurrency int // polls in flight at once; the pacer inside the Getter sets the rate
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
type Poller struct {
	get Getter
	cfg Config

	mu       sync.Mutex
	q        queue
	inFlight int
	wake     chan struct{}
	closed   bool
	polls    int64
}

// New returns a poller that reads operations with get.
func New(get Getter, cfg Config) *Poller {
	if cfg.Schedule == nil {
		cfg.Schedule = NewSchedule()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
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
	return &Poller{get: get, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Add queues an operation. Safe for concurrent use, also while Run is running.
func (p *Poller) Add(it Item) {
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
func (p *Poller) CloseWhenEmpty() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.signal()
}

// Pending counts operations queued or being polled.
func (p *Poller) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.q) + p.inFlight
}

// Polls counts the GET requests made (retries inside the client not included).
func (p *Poller) Polls() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls
}

func (p *Poller) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run polls until CloseWhenEmpty was called and everything is resolved, or ctx ends, or a fatal
// error occurs. handle is called from several goroutines for each finished operation.
func (p *Poller) Run(ctx context.Context, handle func(Outcome)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Long-lived workers: a goroutine per poll would grow a fresh stack for every HTTP call.
	jobs := make(chan *entry)
	var wg sync.WaitGroup
	for range p.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				if err := p.poll(ctx, e, handle); err != nil {
					cancel(err)
				}
			}
		}()
	}
	defer wg.Wait()
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
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-p.wake:
			case <-timer.C:
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
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
func (p *Poller) reschedule(e *entry, now time.Time) bool {
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

func (p *Poller) requeue(e *entry) {
	p.mu.Lock()
	p.inFlight--
	heap.Push(&p.q, e)
	p.mu.Unlock()
	p.signal()
}

func (p *Poller) finish() {
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
	p.signal()
}

// poll looks at one operation once and reschedules or hands it over.
func (p *Poller) poll(ctx context.Context, e *entry, handle func(Outcome)) error {
	op, err := p.get.Operation(ctx, e.OpID)
	if err != nil && retry.Classify(err) == retry.Canceled {
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
		switch retry.Classify(err) {
		case retry.Auth:
			p.requeue(e)
			return errors.Join(ErrFatal, err)
		case retry.NotFound:
			e.notFound++
			if age < p.cfg.FreshWindow && e.notFound <= p.cfg.FreshNotFound {
				e.due = now.Add(time.Duration(e.notFound) * 500 * time.Millisecond)
				p.requeue(e)
				return nil
			}
			p.finish()
			handle(Outcome{Item: e.Item, Err: err, Polls: e.polls, Age: age})
			return nil
		case retry.Permanent:
			p.finish()
			handle(Outcome{Item: e.Item, Err: err, Polls: e.polls, Age: age})
			return nil
		default:
			// Transient after the client's own retries: the id is safe, keep trying later.
			e.errs++
			e.due = now.Add(min(time.Duration(e.errs)*time.Second, time.Minute))
			p.requeue(e)
			return nil
		}
	}
	e.errs = 0
	if !op.Done {
		e.lastRun = age
		p.cfg.Schedule.Running(age)
		e.learned = p.cfg.Schedule.Learned()
		e.due = e.SubmittedAt.Add(p.cfg.Schedule.Next(age, e.polls))
		p.requeue(e)
		return nil
	}
	p.cfg.Schedule.Observe(e.lastRun, age)
	p.finish()
	handle(Outcome{Item: e.Item, Op: op, Polls: e.polls, Age: age})
	return nil
}
