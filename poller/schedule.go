package poller

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Schedule decides when to poll an operation next. Operations take from seconds to hours, so a
// fixed tick either wastes the poll quota or leaves finished results waiting. Instead it learns
// the distribution of completion times observed in this run and polls an operation when the
// chance that it finished since the last look is high enough; before it has learnt anything it
// backs off geometrically.
type Schedule struct {
	// Hazard is the probability of finding an operation done that justifies a poll: higher means
	// fewer polls per operation and more delay between done and written.
	Hazard  float64
	Initial time.Duration // first poll before anything was observed
	Factor  float64       // geometric growth of the gap while learning
	// TailFactor is the growth past what was observed: few operations get there, and each of
	// them is the one the whole run is waiting for.
	TailFactor float64
	MinGap     time.Duration
	MaxGap     time.Duration
	Explore    float64 // share of first polls made early, so the estimate cannot only drift upward
	MinLearn   int     // observations needed before the learnt distribution is trusted

	mu      sync.Mutex
	running time.Duration   // the greatest age at which an operation was seen still running
	samples []time.Duration // reservoir of completion-time estimates
	seen    int
	sorted  []time.Duration
	dirty   int
	rng     *rand.Rand
}

// NewSchedule returns a schedule with defaults suited to both the real API (minutes) and the
// emulator (milliseconds).
func NewSchedule() *Schedule {
	return &Schedule{
		// MaxGap only bounds the tail: real operations take minutes to hours, and a short cap
		// would poll a long operation dozens of times.
		Hazard: 0.75, Initial: 500 * time.Millisecond, Factor: 1.6, TailFactor: 1.3,
		MinGap: 5 * time.Millisecond, MaxGap: 30 * time.Minute,
		Explore: 0.05, MinLearn: 20,
		rng: rand.New(rand.NewPCG(1, 2)),
	}
}

const reservoir = 4096

// Observe records that an operation was seen running at age lo and done at age hi. The true
// completion time lies between; the midpoint is the estimate.
func (s *Schedule) Observe(lo, hi time.Duration) {
	est := lo + (hi-lo)/2
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	if len(s.samples) < reservoir {
		s.samples = append(s.samples, est)
	} else if j := s.rng.IntN(s.seen); j < reservoir {
		s.samples[j] = est
	} else {
		return
	}
	s.dirty++
}

// quantile of the learnt distribution; ok is false while too little was observed.
func (s *Schedule) quantile(q float64) (time.Duration, bool) {
	if len(s.samples) < s.MinLearn {
		return 0, false
	}
	// Re-sort after 5% new samples: cheap, and the estimate moves slowly anyway.
	if s.sorted == nil || s.dirty > len(s.samples)/20 {
		s.sorted = append(s.sorted[:0], s.samples...)
		slices.Sort(s.sorted)
		s.dirty = 0
	}
	i := int(math.Ceil(q*float64(len(s.sorted)))) - 1
	i = min(max(i, 0), len(s.sorted)-1)
	return s.sorted[i], true
}

// cdf is the learnt probability that an operation is done by age a.
func (s *Schedule) cdf(a time.Duration) float64 {
	n := len(s.sorted)
	i, _ := slices.BinarySearch(s.sorted, a)
	return float64(i) / float64(n)
}

// Next returns the age at which to poll an operation that was last seen running at age (0 for
// one never polled) after polls previous polls.
func (s *Schedule) Next(age time.Duration, polls int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Duration
	if _, ok := s.quantile(0.5); ok {
		// Poll when P(done by t | running at age) reaches Hazard.
		f := s.cdf(age)
		target := f + s.Hazard*(1-f)
		if polls == 0 && s.rng.Float64() < s.Explore {
			target = f + s.Hazard*(1-f)/3
		}
		q, _ := s.quantile(target)
		next = q
		switch {
		case polls == 0 && next <= age:
			next = age // never looked at and already older than typical (a resumed run): look now
		case target >= 0.999 || next <= age:
			// Past what was observed: back off geometrically from the current age.
			next = time.Duration(float64(age) * s.TailFactor)
		}
	} else {
		if polls == 0 {
			next = max(s.Initial, age)
		} else {
			next = time.Duration(float64(age) * s.Factor)
		}
		// Before anything finished, an operation younger than one seen still running is
		// unlikely to be done: only the oldest climb the ladder, the others catch up with them.
		next = max(next, s.running)
	}
	gap := next - age
	gap = min(max(gap, s.MinGap), s.MaxGap)
	return age + gap
}

// Running records that an operation was seen still running at age.
func (s *Schedule) Running(age time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = max(s.running, age)
}

// Learned reports whether enough completions were observed to schedule from them.
func (s *Schedule) Learned() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.samples) >= s.MinLearn
}

// Median is the learnt median completion time, for ETAs; ok is false while unknown.
func (s *Schedule) Median() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quantile(0.5)
}
