package poller_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/retry"
	"github.com/batchgpt/batchgpt/poller"
)

// outcome and apiPoller are the poller's types for the API's operations, as the runner uses them.
type (
	outcome   = poller.Outcome[*api.Operation]
	apiPoller = poller.Poller[*api.Operation]
)

const (
	testKey    = "AQVNpollerSECRET0123456789"
	testFolder = "b1gpollfolder"
	unknownOp  = "d7qunknown0000000000"
)

type apiKey string

func (k apiKey) Authorization(context.Context) (string, error) { return "Api-Key " + string(k), nil }
func (apiKey) Invalidate(string)                               {}

// env is an emulator and a client for it.
type env struct {
	emu    *emulator.Server
	client *api.Client
}

func newEnv(t *testing.T, cfg emulator.Config, key string) *env {
	t.Helper()
	emu := emulator.New(cfg)
	base, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	c, err := api.New(api.Config{
		Endpoint: base, OperationsEndpoint: base, Credentials: apiKey(key), Folder: testFolder,
		Retry:          retry.Policy{Attempts: 5, Backoff: retry.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}},
		RequestTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &env{emu: emu, client: c}
}

// submit creates n operations and returns them as items.
func (e *env) submit(t *testing.T, n int) []poller.Item {
	t.Helper()
	items := make([]poller.Item, n)
	for i := range items {
		body := fmt.Appendf(nil, `{"modelUri":"gpt://%s/yandexgpt-lite","messages":[{"role":"user","text":"question %d"}]}`, testFolder, i)
		sub, err := e.client.Submit(t.Context(), body, nil)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = poller.Item{Row: i, OpID: sub.OpID, SubmittedAt: time.Now()}
	}
	return items
}

// fastSchedule suits the emulator's milliseconds.
func fastSchedule() *poller.Schedule {
	s := poller.NewSchedule()
	s.Initial = 5 * time.Millisecond
	s.MinGap = time.Millisecond
	s.MaxGap = 50 * time.Millisecond
	s.MinLearn = 10
	return s
}

// collector gathers outcomes from concurrent handle calls.
type collector struct {
	mu   sync.Mutex
	outs []outcome
}

func (c *collector) handle(o outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outs = append(c.outs, o)
}

func (c *collector) outcomes() []outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]outcome(nil), c.outs...)
}

// run starts p.Run and returns its result channel.
func run(ctx context.Context, p *apiPoller, c *collector) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx, c.handle) }()
	return errc
}

// wait returns Run's error, failing the test if it does not return in time.
func wait(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// eventually polls cond briefly; the conditions depend on other goroutines' progress.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPollerAllDone(t *testing.T) {
	tests := []struct {
		name   string
		faults emulator.Faults
	}{
		{"clean", emulator.Faults{}},
		{"faults", emulator.Faults{Rate500: 0.1, RateReset: 0.05, RateGarbage: 0.05, Rate429: 0.05, RateNoDone: 0.3, RateOpError: 0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{
				Seed:    3,
				Latency: emulator.Latency{Kind: emulator.LatencyLognormal, Median: 30 * time.Millisecond, Sigma: 0.5, Max: 300 * time.Millisecond},
			}, testKey)
			items := e.submit(t, 60)
			e.emu.SetFaults(tt.faults)
			sched := fastSchedule()
			p := poller.New(e.client.Operation, retry.Poll, poller.Config{Schedule: sched, Concurrency: 8})
			var c collector
			// Half queued before Run, half while it runs.
			for _, it := range items[:30] {
				p.Add(it)
			}
			errc := run(t.Context(), p, &c)
			var wg sync.WaitGroup
			for _, it := range items[30:] {
				wg.Go(func() { p.Add(it) })
			}
			wg.Wait()
			p.CloseWhenEmpty()
			if err := wait(t, errc); err != nil {
				t.Fatalf("Run = %v", err)
			}
			outs := c.outcomes()
			seen := make(map[string]int)
			polls := 0
			for _, o := range outs {
				seen[o.OpID]++
				polls += o.Polls
				if o.Err != nil || o.Op == nil || !o.Op.Done || o.Op.ID != o.OpID {
					t.Errorf("row %d: outcome %+v", o.Row, o)
					continue
				}
				if want := items[o.Row]; want.OpID != o.OpID {
					t.Errorf("row %d: op %s, want %s", o.Row, o.OpID, want.OpID)
				}
				if !o.Op.Failed() && (o.Op.Response == nil || len(o.Op.Response.Alternatives) == 0) {
					t.Errorf("row %d: done without a response: %+v", o.Row, o.Op)
				}
				if o.Polls < 1 || o.Age <= 0 {
					t.Errorf("row %d: %d polls, age %v", o.Row, o.Polls, o.Age)
				}
			}
			for _, it := range items {
				if seen[it.OpID] != 1 {
					t.Errorf("row %d: handled %d times, want once", it.Row, seen[it.OpID])
				}
			}
			if n := p.Pending(); n != 0 {
				t.Errorf("Pending = %d after Run", n)
			}
			if int64(polls) != p.Polls() {
				t.Errorf("outcomes count %d polls, poller %d", polls, p.Polls())
			}
			if st := e.emu.Stats(); st.Polls < p.Polls() || tt.faults == (emulator.Faults{}) && st.Polls != p.Polls() {
				t.Errorf("emulator saw %d polls, poller made %d", st.Polls, p.Polls())
			}
			if _, ok := sched.Median(); !ok {
				t.Error("the schedule learnt nothing from 60 operations")
			}
		})
	}
}

func TestPollerFresh404(t *testing.T) {
	e := newEnv(t, emulator.Config{Faults: emulator.Faults{RateFresh404: 1}}, testKey)
	items := e.submit(t, 5)
	p := poller.New(e.client.Operation, retry.Poll, poller.Config{Schedule: fastSchedule()})
	var c collector
	for _, it := range items {
		p.Add(it)
	}
	p.CloseWhenEmpty()
	if err := wait(t, run(t.Context(), p, &c)); err != nil {
		t.Fatal(err)
	}
	outs := c.outcomes()
	if len(outs) != len(items) {
		t.Fatalf("%d outcomes, want %d", len(outs), len(items))
	}
	for _, o := range outs {
		if o.Err != nil || o.Op == nil || !o.Op.Done || o.Polls < 2 {
			t.Errorf("row %d: %+v; want done after a tolerated 404", o.Row, o)
		}
	}
	if n := e.emu.Stats().Faults[emulator.FaultFresh404]; n != int64(len(items)) {
		t.Errorf("%d fresh 404s, want %d", n, len(items))
	}
}

func TestPollerNotFound(t *testing.T) {
	tests := []struct {
		name      string
		cfg       poller.Config
		age       time.Duration
		wantPolls int
	}{
		{"after the fresh window", poller.Config{FreshWindow: time.Millisecond}, 0, 1},
		{"fresh, tolerated once", poller.Config{FreshWindow: time.Minute, FreshNotFound: 1}, 0, 2},
		{"resumed, purged", poller.Config{}, time.Hour, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{}, testKey)
			known := e.submit(t, 1)[0]
			tt.cfg.Schedule = fastSchedule()
			p := poller.New(e.client.Operation, retry.Poll, tt.cfg)
			var c collector
			p.Add(poller.Item{Row: 7, OpID: unknownOp, SubmittedAt: time.Now().Add(-tt.age)})
			p.Add(known)
			p.CloseWhenEmpty()
			if err := wait(t, run(t.Context(), p, &c)); err != nil {
				t.Fatal(err)
			}
			outs := c.outcomes()
			if len(outs) != 2 {
				t.Fatalf("%d outcomes, want 2", len(outs))
			}
			for _, o := range outs {
				switch o.OpID {
				case unknownOp:
					if o.Row != 7 || o.Op != nil || retry.Classify(o.Err) != retry.NotFound || o.Polls != tt.wantPolls {
						t.Errorf("unknown op: %+v (%v); want a not-found error after %d polls", o, retry.Classify(o.Err), tt.wantPolls)
					}
				case known.OpID:
					if o.Err != nil || !o.Op.Done {
						t.Errorf("known op: %+v", o)
					}
				default:
					t.Errorf("outcome for %s", o.OpID)
				}
			}
		})
	}
}

func TestPollerAuthFailure(t *testing.T) {
	e := newEnv(t, emulator.Config{APIKeys: []string{testKey}}, "AQVNwrongSECRET")
	p := poller.New(e.client.Operation, retry.Poll, poller.Config{Schedule: fastSchedule(), Concurrency: 2})
	var c collector
	for i := range 3 {
		p.Add(poller.Item{Row: i, OpID: fmt.Sprintf("d7qauth%013d", i), SubmittedAt: time.Now()})
	}
	err := wait(t, run(t.Context(), p, &c))
	if !errors.Is(err, poller.ErrFatal) || retry.Classify(err) != retry.Auth {
		t.Fatalf("Run = %v, want an auth error wrapping poller.ErrFatal", err)
	}
	if outs := c.outcomes(); len(outs) != 0 {
		t.Errorf("outcomes %+v after an auth failure", outs)
	}
	if n := p.Pending(); n != 3 {
		t.Errorf("Pending = %d, want 3: nothing may be lost", n)
	}
}

func TestPollerCloseWhenEmpty(t *testing.T) {
	t.Run("nothing added", func(t *testing.T) {
		e := newEnv(t, emulator.Config{}, testKey)
		p := poller.New(e.client.Operation, retry.Poll, poller.Config{})
		p.CloseWhenEmpty()
		var c collector
		if err := wait(t, run(t.Context(), p, &c)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("closed while running", func(t *testing.T) {
		e := newEnv(t, emulator.Config{}, testKey)
		items := e.submit(t, 3)
		p := poller.New(e.client.Operation, retry.Poll, poller.Config{Schedule: fastSchedule()})
		var c collector
		errc := run(t.Context(), p, &c)
		for _, it := range items {
			p.Add(it)
		}
		eventually(t, "three outcomes", func() bool { return len(c.outcomes()) == 3 })
		select {
		case err := <-errc:
			t.Fatalf("Run returned %v before CloseWhenEmpty", err)
		default:
		}
		p.CloseWhenEmpty()
		if err := wait(t, errc); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPollerCancel(t *testing.T) {
	tests := []struct {
		name   string
		faults emulator.Faults
		// ready: Run is busy (waiting for the next poll, or with a poll on the wire).
		ready func(e *env, p *apiPoller) bool
	}{
		{"between polls", emulator.Faults{}, func(_ *env, p *apiPoller) bool { return p.Polls() >= 2 }},
		{"during a poll", emulator.Faults{RateSlow: 1, SlowDelay: time.Hour}, func(e *env, _ *apiPoller) bool { return e.emu.Stats().Polls >= 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{Latency: emulator.Latency{Median: time.Hour}}, testKey)
			items := e.submit(t, 1)
			e.emu.SetFaults(tt.faults)
			p := poller.New(e.client.Operation, retry.Poll, poller.Config{Schedule: fastSchedule()})
			p.Add(items[0])
			ctx, cancel := context.WithCancel(t.Context())
			var c collector
			errc := run(ctx, p, &c)
			eventually(t, "polling", func() bool { return tt.ready(e, p) })
			cancel()
			if err := wait(t, errc); !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
			if n := p.Pending(); n != 1 {
				t.Errorf("Pending = %d after cancel, want 1", n)
			}
			if outs := c.outcomes(); len(outs) != 0 {
				t.Errorf("outcomes %+v", outs)
			}
		})
	}
}

// getter is a scripted Getter: answers for each id in turn, the last one repeating.
type getter struct {
	mu      sync.Mutex
	answers map[string][]func(id string) (*api.Operation, error)
	calls   map[string]int
}

func (g *getter) Operation(_ context.Context, id string) (*api.Operation, error) {
	g.mu.Lock()
	a := g.answers[id]
	i := g.calls[id]
	g.calls[id]++
	g.mu.Unlock()
	return a[min(i, len(a)-1)](id)
}

func running(id string) (*api.Operation, error) { return &api.Operation{ID: id}, nil }
func done(id string) (*api.Operation, error)    { return &api.Operation{ID: id, Done: true}, nil }
func failWith(err error) func(string) (*api.Operation, error) {
	return func(string) (*api.Operation, error) { return nil, err }
}

func TestPollerErrors(t *testing.T) {
	permanent := &api.Error{Op: "get operation", HTTPStatus: 400, Code: 3, Message: "bad id"}
	transient := fmt.Errorf("%w: %w", api.ErrTooManyAttempts, &api.Error{Op: "get operation", HTTPStatus: 503, Code: 14})
	g := &getter{calls: map[string]int{}, answers: map[string][]func(string) (*api.Operation, error){
		"perm":      {failWith(permanent)},
		"transient": {failWith(transient), done},
		"running":   {running, running, done},
	}}
	p := poller.New(g.Operation, retry.Poll, poller.Config{Schedule: fastSchedule()})
	for i, id := range []string{"perm", "transient", "running"} {
		p.Add(poller.Item{Row: i, OpID: id, SubmittedAt: time.Now()})
	}
	p.CloseWhenEmpty()
	var c collector
	if err := wait(t, run(t.Context(), p, &c)); err != nil {
		t.Fatal(err)
	}
	got := map[string]outcome{}
	for _, o := range c.outcomes() {
		got[o.OpID] = o
	}
	if o := got["perm"]; !errors.Is(o.Err, permanent) || o.Op != nil || o.Polls != 1 {
		t.Errorf("permanent: %+v, want its error after one poll", o)
	}
	if o := got["transient"]; o.Err != nil || o.Op == nil || !o.Op.Done || o.Polls != 2 {
		t.Errorf("transient: %+v, want done on the second poll", o)
	}
	if o := got["running"]; o.Err != nil || o.Op == nil || !o.Op.Done || o.Polls != 3 {
		t.Errorf("running: %+v, want done on the third poll", o)
	}
	if len(got) != 3 {
		t.Errorf("%d outcomes, want 3", len(got))
	}
}
