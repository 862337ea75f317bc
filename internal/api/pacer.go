package api

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// Pacer enforces one quota for the whole process: a per-second rate that adapts to 429 answers
// (multiplicative decrease, gradual increase back to the cap) and, optionally, an exact sliding
// window of at most N requests per hour (in O(3,600) memory whatever N). Every worker waits on the same Pacer, so a 429 slows
// them all at once instead of each backing off on its own.
//
// Requests are spaced evenly (a token bucket of one): a server that counts a sliding one-second
// window sees at most the rate, never a burst. The 429s that requests already in flight collect
// from one overload are one event: the rate is cut at most once per cutInterval, by cutFactor.
type Pacer struct {
	limiter *rate.Limiter
	cap     float64 // configured requests per second; the adaptive rate never exceeds it
	floor   float64

	mu       sync.Mutex
	current  float64
	pausedTo time.Time // after a Retry-After: nobody starts a request before this
	lastCut  time.Time
	okStreak int
	quota429 int64

	// Sliding hour window. Requests that start within a second of each other share a bucket, so
	// the window holds at most ~3,600 buckets whatever the quota (one time per request would cost
	// gigabytes at --submit-per-hour 100000000). A bucket leaves the window an hour after its last
	// request: exact when a bucket holds one request, at most a second late otherwise, never early.
	perHour int
	buckets []hourBucket // oldest first, from head
	head    int
	inHour  int // requests in buckets[head:]

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// NewPacer returns a pacer for perSecond requests a second (0 = unlimited) and at most perHour
// requests in any sliding hour (0 = unlimited).
func NewPacer(perSecond float64, perHour int) *Pacer {
	p := &Pacer{cap: perSecond, current: perSecond, perHour: perHour, now: time.Now, sleep: retry.Sleep}
	if perSecond > 0 {
		// Not above the cap: a 429 must never raise the rate.
		p.floor = math.Min(math.Max(perSecond/50, 0.2), perSecond)
		p.limiter = rate.NewLimiter(rate.Limit(perSecond), 1)
	}
	return p
}

// hourBucket counts the requests that started in [first, first+1s); last is the latest of them.
type hourBucket struct {
	first, last time.Time
	n           int
}

// Burst is N requests made at about the time At.
type Burst struct {
	At time.Time
	N  int
}

// Seed records requests already made in the last hour (for example by the run this one resumes),
// so that the hour window holds across restarts.
func (p *Pacer) Seed(bursts []Burst) {
	if p.perHour == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Buckets must be in time order, and callers pass times in row order: merge and sort.
	type mark struct {
		t time.Time
		n int
	}
	cut := p.now().Add(-time.Hour)
	var all []mark
	for _, b := range p.buckets[p.head:] {
		all = append(all, mark{b.last, b.n})
	}
	for _, b := range bursts {
		if b.At.After(cut) && b.N > 0 {
			all = append(all, mark{b.At, b.N})
		}
	}
	slices.SortFunc(all, func(a, b mark) int { return a.t.Compare(b.t) })
	p.buckets, p.head, p.inHour = nil, 0, 0
	for _, m := range all {
		p.record(m.t, m.n)
	}
}

// record adds n requests started at t, the latest so far.
func (p *Pacer) record(t time.Time, n int) {
	p.inHour += n
	if last := len(p.buckets) - 1; last >= p.head && t.Sub(p.buckets[last].first) < time.Second {
		b := &p.buckets[last]
		b.n += n
		if t.After(b.last) {
			b.last = t
		}
		return
	}
	p.buckets = append(p.buckets, hourBucket{first: t, last: t, n: n})
}

// expire drops the buckets whose last request is an hour old or more.
func (p *Pacer) expire(now time.Time) {
	for p.head < len(p.buckets) && !now.Before(p.buckets[p.head].last.Add(time.Hour)) {
		p.inHour -= p.buckets[p.head].n
		p.head++
	}
	// Reuse the slice's space once most of it is dead, so it stays O(buckets in an hour).
	if p.head > 0 && p.head >= len(p.buckets)/2 {
		p.buckets = append(p.buckets[:0], p.buckets[p.head:]...)
		p.head = 0
	}
}

// Wait blocks until one more request may start.
func (p *Pacer) Wait(ctx context.Context) error {
	for {
		p.mu.Lock()
		now := p.now()
		wait := p.pausedTo.Sub(now)
		if p.perHour > 0 {
			p.expire(now)
			if p.inHour >= p.perHour {
				// Wait for the oldest bucket to leave the hour.
				if w := p.buckets[p.head].last.Add(time.Hour).Sub(now); w > wait {
					wait = w
				}
			}
		}
		if wait <= 0 {
			if p.perHour > 0 {
				p.record(now, 1)
			}
			p.mu.Unlock()
			break
		}
		p.mu.Unlock()
		if err := p.sleep(ctx, wait); err != nil {
			return err
		}
	}
	if p.limiter != nil {
		if err := p.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	return nil
}

// Adaptation constants: one cut per overload event, a gentle climb back.
const (
	cutInterval = time.Second
	cutFactor   = 0.85
	climbEvery  = 5    // successes
	climbStep   = 0.01 // of the cap
)

// Throttled is called after a 429. The rate drops by 15% (not below a floor) unless it was cut
// less than a second ago: the other requests of the same overload add nothing. retryAfter, when
// the server sent one, pauses every caller that long.
func (p *Pacer) Throttled(retryAfter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.quota429++
	p.okStreak = 0
	now := p.now()
	if until := now.Add(retryAfter); retryAfter > 0 && until.After(p.pausedTo) {
		p.pausedTo = until
	}
	if p.limiter == nil || now.Sub(p.lastCut) < cutInterval {
		return
	}
	p.lastCut = now
	p.current = math.Max(p.current*cutFactor, p.floor)
	p.limiter.SetLimit(rate.Limit(p.current))
}

// Limited reports whether the pacer has a rate: an unlimited one cannot slow anybody down, so a
// caller that got a 429 must back off on its own.
func (p *Pacer) Limited() bool { return p.limiter != nil }

// Succeeded is called after an accepted request: the rate climbs back toward the cap by 1% of
// the cap every few successes, so a run converges on what the server accepts.
func (p *Pacer) Succeeded() {
	if p.limiter == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current >= p.cap {
		return
	}
	p.okStreak++
	if p.okStreak < climbEvery {
		return
	}
	p.okStreak = 0
	p.current = math.Min(p.current+p.cap*climbStep, p.cap)
	p.limiter.SetLimit(rate.Limit(p.current))
}

// Rate is the current requests-per-second limit (0 = unlimited).
func (p *Pacer) Rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// Throttles counts the 429 answers reported to this pacer.
func (p *Pacer) Throttles() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.quota429
}

// InWindow counts the requests made in the last hour (0 without an hour window).
func (p *Pacer) InWindow() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perHour == 0 {
		return 0
	}
	p.expire(p.now())
	return p.inHour
}

// Limits returns the configured per-second and per-hour caps.
func (p *Pacer) Limits() (perSecond float64, perHour int) { return p.cap, p.perHour }
