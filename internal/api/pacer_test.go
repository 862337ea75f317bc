package api

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// fakeClock replaces a pacer's clock: sleeping advances it at once and is recorded.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	return nil
}

// slept returns and forgets the recorded sleeps.
func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sleeps
	c.sleeps = nil
	return s
}

var clockStart = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fakePacer(perSecond float64, perHour int) (*Pacer, *fakeClock) {
	c := &fakeClock{t: clockStart}
	p := NewPacer(perSecond, perHour)
	p.now, p.sleep = c.now, c.sleep
	return p, c
}

func TestPacerHourWindow(t *testing.T) {
	p, c := fakePacer(0, 3)
	ctx := t.Context()
	// Three requests a minute apart pass at once.
	for i := range 3 {
		if i > 0 {
			c.advance(time.Minute)
		}
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.slept(); len(s) != 0 {
		t.Fatalf("slept %v within the quota", s)
	}
	// The fourth waits until the first is exactly an hour old: 12:00 + 1h.
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := c.now(), clockStart.Add(time.Hour); !got.Equal(want) {
		t.Errorf("fourth request at %v, want %v (slept %v)", got, want, c.slept())
	}
	c.slept()
	// The fifth waits for the second (12:01) to be an hour old.
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := c.now(), clockStart.Add(time.Hour+time.Minute); !got.Equal(want) {
		t.Errorf("fifth request at %v, want %v", got, want)
	}
	// Long after, the window is empty again.
	c.advance(3 * time.Hour)
	c.slept()
	for range 3 {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.slept(); len(s) != 0 {
		t.Errorf("slept %v after a quiet hour", s)
	}
}

func TestPacerHourWindowNeverExceeded(t *testing.T) {
	// Whatever the arrival pattern, no sliding hour holds more than perHour starts.
	const perHour = 5
	p, c := fakePacer(0, perHour)
	var starts []time.Time
	gaps := []time.Duration{0, time.Second, 10 * time.Minute, 0, 0, 59 * time.Minute, time.Second, 0, 2 * time.Hour, 0, 0, 0, 0, 0, 0, 30 * time.Minute}
	for _, g := range gaps {
		c.advance(g)
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, c.now())
	}
	for i := range starts {
		n := 0
		for j := range starts {
			if !starts[j].Before(starts[i]) && starts[j].Sub(starts[i]) < time.Hour {
				n++
			}
		}
		if n > perHour {
			t.Errorf("%d starts in the hour from %v", n, starts[i])
		}
	}
}

func TestPacerSeed(t *testing.T) {
	ago := func(d time.Duration) time.Time { return clockStart.Add(-d) }
	tests := []struct {
		name    string
		perHour int
		seed    []time.Time
		// want is when the next request may start, relative to now.
		want time.Duration
	}{
		{"room left", 3, []time.Time{ago(50 * time.Minute), ago(10 * time.Minute)}, 0},
		{"full, sorted", 3, []time.Time{ago(50 * time.Minute), ago(30 * time.Minute), ago(10 * time.Minute)}, 10 * time.Minute},
		{"full, unsorted", 3, []time.Time{ago(10 * time.Minute), ago(50 * time.Minute), ago(30 * time.Minute)}, 10 * time.Minute},
		// Rows come in row order, not time order: the two most recent are 5 and 40 minutes old.
		{"more than the quota, unsorted", 2, []time.Time{ago(5 * time.Minute), ago(50 * time.Minute), ago(40 * time.Minute)}, 20 * time.Minute},
		{"older than an hour ignored", 2, []time.Time{ago(2 * time.Hour), ago(61 * time.Minute), ago(time.Minute)}, 0},
		{"exactly an hour old is gone", 1, []time.Time{ago(time.Hour)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := fakePacer(0, tt.perHour)
			p.Seed(ones(tt.seed))
			if err := p.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := c.now().Sub(clockStart); got != tt.want {
				t.Errorf("first request after %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPacerSeedWithoutHourLimit(t *testing.T) {
	p, c := fakePacer(0, 0)
	p.Seed([]Burst{{At: clockStart, N: 2}})
	for range 100 {
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.slept(); len(s) != 0 {
		t.Errorf("an unlimited pacer slept %v", s)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPacerAIMD(t *testing.T) {
	p, c := fakePacer(10, 0)
	if r := p.Rate(); r != 10 {
		t.Fatalf("initial rate %v, want 10", r)
	}
	if ps, ph := p.Limits(); ps != 10 || ph != 0 {
		t.Errorf("Limits = %v, %v", ps, ph)
	}
	p.Throttled(0)
	if r := p.Rate(); !near(r, 8.5) {
		t.Errorf("after one 429: rate %v, want 8.5", r)
	}
	// More 429s within a second are the same overload: no further cut.
	c.advance(500 * time.Millisecond)
	p.Throttled(0)
	if r := p.Rate(); !near(r, 8.5) {
		t.Errorf("after a second 429 half a second later: rate %v, want 8.5", r)
	}
	c.advance(600 * time.Millisecond)
	p.Throttled(0)
	if r := p.Rate(); !near(r, 8.5*0.85) {
		t.Errorf("after a 429 1.1 s after the cut: rate %v, want %v", r, 8.5*0.85)
	}
	for range 50 {
		c.advance(time.Second)
		p.Throttled(0)
	}
	if r := p.Rate(); !near(r, 0.2) {
		t.Errorf("after many 429s: rate %v, want the floor 0.2", r)
	}
	if n := p.Throttles(); n != 53 {
		t.Errorf("Throttles = %d, want 53", n)
	}
	// Four successes change nothing; the fifth adds 1% of the cap.
	for range 4 {
		p.Succeeded()
	}
	if r := p.Rate(); !near(r, 0.2) {
		t.Errorf("after 4 successes: rate %v, want 0.2", r)
	}
	p.Succeeded()
	if r := p.Rate(); !near(r, 0.3) {
		t.Errorf("after 5 successes: rate %v, want 0.3", r)
	}
	// A 429 resets the streak.
	for range 4 {
		p.Succeeded()
	}
	c.advance(time.Second)
	p.Throttled(0)
	r0 := p.Rate()
	for range 4 {
		p.Succeeded()
	}
	if r := p.Rate(); r != r0 {
		t.Errorf("the streak survived a 429: rate %v, want %v", r, r0)
	}
	// Enough successes climb back to the cap, never above.
	for range 1000 {
		p.Succeeded()
	}
	if r := p.Rate(); r != 10 {
		t.Errorf("after many successes: rate %v, want the cap 10", r)
	}
}

func TestPacerFloor(t *testing.T) {
	tests := []struct {
		perSecond, floor float64
	}{
		{50, 1},     // cap/50
		{10, 0.2},   // at least 0.2
		{1.39, 0.2}, // 5000/hour
		{0.1, 0.1},  // a cap below 0.2: never raised by a 429
	}
	for _, tt := range tests {
		p, c := fakePacer(tt.perSecond, 0)
		for range 100 {
			c.advance(time.Second)
			p.Throttled(0)
		}
		if r := p.Rate(); !near(r, tt.floor) {
			t.Errorf("NewPacer(%v): rate after many 429s = %v, want %v", tt.perSecond, r, tt.floor)
		}
		if r := p.Rate(); r > tt.perSecond {
			t.Errorf("NewPacer(%v): rate %v above the cap", tt.perSecond, r)
		}
	}
}

func TestPacerThrottledPauses(t *testing.T) {
	p, c := fakePacer(0, 0) // unlimited: only the pause applies
	p.Throttled(5 * time.Second)
	p.Throttled(2 * time.Second) // a shorter pause does not shorten the first
	if r := p.Rate(); r != 0 {
		t.Errorf("unlimited pacer rate %v, want 0", r)
	}
	if n := p.Throttles(); n != 2 {
		t.Errorf("Throttles = %d, want 2", n)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := c.now().Sub(clockStart); got != 5*time.Second {
		t.Errorf("waited %v, want 5s", got)
	}
	c.slept()
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := c.slept(); len(s) != 0 {
		t.Errorf("slept %v after the pause", s)
	}
}

func TestPacerWaitCanceled(t *testing.T) {
	t.Run("during a pause", func(t *testing.T) {
		p := NewPacer(0, 0)
		started := make(chan struct{})
		p.sleep = func(ctx context.Context, d time.Duration) error {
			close(started)
			return retry.Sleep(ctx, d)
		}
		p.Throttled(time.Hour)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- p.Wait(ctx) }()
		<-started
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	})
	t.Run("in the hour window", func(t *testing.T) {
		p := NewPacer(0, 1)
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	})
	t.Run("in the rate limiter", func(t *testing.T) {
		p := NewPacer(0.001, 0) // one request per 1000 s
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- p.Wait(ctx) }()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	})
}

func TestPacerConcurrentHourWindow(t *testing.T) {
	const perHour = 8
	p := NewPacer(0, perHour)
	var wg sync.WaitGroup
	for range perHour {
		wg.Go(func() {
			if err := p.Wait(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// The quota is used up: the next one would wait an hour.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("request %d: Wait = %v, want it held back", perHour+1, err)
	}
}

// The hour window costs O(3,600) whatever the quota: a quota of 100,000,000 an hour once
// allocated one time per allowed request (gigabytes) before sending anything.
func TestPacerHourWindowMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, c := fakePacer(0, 100_000_000)
	// Two hours of requests 20 ms apart (360,000 of them), then a seed of as many.
	var seed []time.Time
	for range 360_000 {
		c.advance(20 * time.Millisecond)
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		seed = append(seed, c.now())
	}
	p.Seed(ones(seed[len(seed)/2:]))
	seed = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("the hour window holds %d MiB", grew>>20)
	}
	if got, want := p.InWindow(), 180_000+180_000; got < want-100 || got > want+100 {
		// An hour of live requests plus the seeded copies of the same hour.
		t.Errorf("InWindow = %d, want about %d", got, want)
	}
	runtime.KeepAlive(p)
}

// ones makes one request at each of times.
func ones(times []time.Time) []Burst {
	out := make([]Burst, len(times))
	for i, t := range times {
		out[i] = Burst{At: t, N: 1}
	}
	return out
}
