package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/store"
)

// Spend limits. A run may be given a budget in money (--max-cost, in the price
// table's currency) and in tokens (--max-total-tokens). Before each submission the spend so far
// plus the estimates of the rows in flight plus the estimate of the row about to go must stay
// within every limit; the first row that would cross one stops all further submissions of the
// process. What is in flight is still polled and written, and the run ends with ErrSpendLimit,
// resumable with a higher limit.
//
// Spent is what the API reported: the usage (input + completion tokens) of every result line of
// the run that was billed, in every process of the run; rows answered from the cache or by a
// duplicate cost nothing, and neither do possible billed duplicates (D records), whose usage the
// API never reported. A row in flight counts at its estimate (see estimate) until its result is
// written, then at its usage. So the limit is overrun by no more than the estimates fell short:
//
//	billed ≤ limit + Σ (billed − estimate) over the rows in flight at the last admission
//
// and never when every estimate is an upper bound (maxTokens set, and input tokens no more than
// characters ÷ 4). The README states the bound for users.

// Limits are a run's spend limits, kept in the checkpoint's settings; zero is no limit.
type Limits struct {
	// MaxCost bounds the cost of the billed tokens at the price table (--price), in its currency.
	MaxCost float64 `json:"max_cost,omitempty"`
	// MaxTotalTokens bounds the billed tokens, input and output. Not completionOptions.maxTokens
	// (--max-tokens), which bounds the length of each answer.
	MaxTotalTokens int64 `json:"max_total_tokens,omitempty"`
}

// any reports whether a limit is set.
func (l *Limits) any() bool { return l != nil && (l.MaxCost > 0 || l.MaxTotalTokens > 0) }

// LimitChange is what a command line says about the limits: a nil field keeps the checkpoint's
// value (none for a new run), a zero removes the limit.
type LimitChange struct {
	MaxCost        *float64
	MaxTotalTokens *int64
}

// Apply returns the limits old (nil: none) changed by c; nil when no limit is left.
func (c LimitChange) Apply(old *Limits) *Limits {
	var l Limits
	if old != nil {
		l = *old
	}
	if c.MaxCost != nil {
		l.MaxCost = *c.MaxCost
	}
	if c.MaxTotalTokens != nil {
		l.MaxTotalTokens = *c.MaxTotalTokens
	}
	if !l.any() {
		return nil
	}
	return &l
}

// ErrSpendLimit is returned when the run stopped submitting at its spend limit: what was
// submitted was written, the rest was not sent; resumable with a higher limit.
var ErrSpendLimit = errors.New("stopped at the spend limit")

// Spend is what the run spent, against its limits, for the summary.
type Spend struct {
	Tokens         int64   `json:"tokens"`           // billed tokens of the run, every process (input + output)
	Cost           float64 `json:"cost"`             // their price, in Currency
	Currency       string  `json:"currency"`         // of the price table
	MaxCost        float64 `json:"max_cost"`         // 0: no limit
	MaxTotalTokens int64   `json:"max_total_tokens"` // 0: no limit
	// NotSubmitted rows were left unsubmitted by the limit (and the duplicates waiting for them).
	NotSubmitted int64 `json:"not_submitted"`
}

// withLimits returns the settings JSON raw with its "limits" replaced by l (removed when nil);
// every other field is kept as it is, including fields this batchgpt does not know.
func withLimits(raw json.RawMessage, l *Limits) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "limits")
	if l != nil {
		b, err := json.Marshal(l)
		if err != nil {
			return nil, err
		}
		m["limits"] = b
	}
	return json.Marshal(m)
}

// reservation is a row in flight: its estimate, and the price its usage will be charged at.
type reservation struct {
	tokens int64
	cost   float64
	price  float64
}

// budget holds a run's spend against its limits; safe for concurrent use.
type budget struct {
	limits   Limits
	prices   Prices
	currency string
	log      *slog.Logger

	mu       sync.Mutex
	tokens   int64   // spent: billed tokens reported
	cost     float64 // their cost
	outputs  int64   // completion tokens of the billed answers so far (for the output guess)
	answered int64   // billed answers so far
	inFlight map[int]reservation
	resTok   int64   // Σ inFlight tokens
	resCost  float64 // Σ inFlight cost
	stopped  bool
	unpriced map[string]bool // models without a price, warned about once
}

func newBudget(l Limits, prices Prices, log *slog.Logger) *budget {
	if prices == nil {
		prices = DefaultPrices()
	}
	return &budget{limits: l, prices: prices, currency: DefaultCurrency, log: log,
		inFlight: map[int]reservation{}, unpriced: map[string]bool{}}
}

// highest is the highest price of the table: the price of a model it lacks, so that the cost is
// never underestimated for want of a price.
func (b *budget) highest() float64 {
	h := 0.0
	for _, p := range b.prices {
		h = math.Max(h, p)
	}
	return h
}

// price is the price of 1,000 tokens of model (a URI); see highest for a model without one.
func (b *budget) price(model string) float64 {
	if p, ok := b.prices.For(model); ok {
		return p
	}
	b.mu.Lock()
	warn := !b.unpriced[model]
	b.unpriced[model] = true
	b.mu.Unlock()
	if warn && b.limits.MaxCost > 0 {
		b.log.Warn("no price for the model: --max-cost counts it at the highest price of the table (set one with --price)",
			"model", model, "price", b.highest())
	}
	return b.highest()
}

// past adds the spend of the earlier processes of the run: the billed tokens of the result lines
// the checkpoint vouches for, read once from the results file (as `status` tallies them). Their
// rows' models are not in the result lines: they are charged at the highest price among the
// models the checkpoint names (the N records, which every submitted row has) and the run's
// default model, which is exact for a run of one model and never less than the truth otherwise.
// A checkpoint that names none (written before names were kept, or snapshotted by a finalize)
// falls back on the run's model, else on the highest price of the table.
func (b *budget) past(st *store.State, defaultModel string) error {
	t, err := tallyResults(st.Header.Results, st.Header.ResultsFormat, st.ResultsEnd, latestLines(st))
	if err != nil {
		return fmt.Errorf("spend so far: %w", err)
	}
	in, out, answered := t.InputTokens, t.OutTokens, int64(t.BilledRows)
	models := st.Models()
	if defaultModel != "" {
		models = append(models, defaultModel)
	}
	price := -1.0
	for _, m := range models {
		price = math.Max(price, b.price(m))
	}
	if price < 0 {
		price = b.highest()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens += in + out
	b.cost += Cost(in+out, price)
	b.outputs += out
	b.answered += answered
	return nil
}

// estimate is a row's tokens before it is answered: its input, characters ÷ 4 as --dry-run
// estimates it (batch.EstimateTokens), plus its output, maxTokens when the row (or the run) sets
// one, since the API never answers longer. Without one, the output is guessed as the mean output
// of the answers billed so far in the run (all its processes): over the many rows in flight the
// errors of a mean cancel out, where the longest answer so far would stop a run for one outlier.
// Before any answer, the input estimate stands in for it: a prompt and its answer of similar
// length. guess is that output guess.
func estimate(row batch.Row, guess int64) int64 {
	in := batch.EstimateTokens(int64(row.PromptChars))
	if m := row.MaxTokens; m > 0 {
		return in + m
	}
	if guess > 0 {
		return in + guess
	}
	return 2 * in
}

// guess is the output guess of estimate; b.mu held.
func (b *budget) guess() int64 {
	if b.answered == 0 {
		return 0
	}
	return (b.outputs + b.answered - 1) / b.answered // rounded up
}

// admit reserves the estimate of row for its submission if the spend so far, the rows in flight
// and this row stay within every limit; otherwise it stops the budget and every later admission
// fails. A row admitted again (a resubmission) replaces its reservation.
func (b *budget) admit(row batch.Row, model string) bool {
	price := b.price(model)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	tok := estimate(row, b.guess())
	cost := Cost(tok, price)
	old := b.inFlight[row.Index]
	resTok, resCost := b.resTok-old.tokens, b.resCost-old.cost
	over := b.limits.MaxTotalTokens > 0 && b.tokens+resTok+tok > b.limits.MaxTotalTokens ||
		b.limits.MaxCost > 0 && b.cost+resCost+cost > b.limits.MaxCost
	if over {
		b.stopped = true
		b.log.Warn("spend limit reached: nothing more is submitted; the operations in flight are polled and written",
			"spent_tokens", b.tokens, "spent_cost", b.cost, "in_flight_tokens", b.resTok, "next_row_tokens", tok,
			"max_total_tokens", b.limits.MaxTotalTokens, "max_cost", b.limits.MaxCost)
		return false
	}
	b.inFlight[row.Index] = reservation{tokens: tok, cost: cost, price: price}
	b.resTok, b.resCost = resTok+tok, resCost+cost
	return true
}

// hold reserves the estimate of a row submitted by an earlier process, whose operation is still
// to be polled: it is in flight whatever the limits.
func (b *budget) hold(row batch.Row, model string) {
	price := b.price(model)
	b.mu.Lock()
	defer b.mu.Unlock()
	tok := estimate(row, b.guess())
	old := b.inFlight[row.Index]
	b.inFlight[row.Index] = reservation{tokens: tok, cost: Cost(tok, price), price: price}
	b.resTok += tok - old.tokens
	b.resCost += Cost(tok, price) - old.cost
}

// settle ends row's reservation, if any, once its result is written, and adds the usage the API
// reported for it (nil when it was not billed: cached, deduplicated, failed without an answer).
func (b *budget) settle(index int, u *Usage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	res, ok := b.inFlight[index]
	if ok {
		delete(b.inFlight, index)
		b.resTok -= res.tokens
		b.resCost -= res.cost
	}
	if u == nil {
		return
	}
	n := u.InputTokens + u.CompletionTokens
	if n == 0 {
		return
	}
	price := res.price
	if !ok {
		price = b.highest() // every billed row was admitted or held: not expected
	}
	b.tokens += n
	b.cost += Cost(n, price)
	b.outputs += u.CompletionTokens
	b.answered++
}

// spend is the summary's view of b.
func (b *budget) spend(notSubmitted int64) *Spend {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &Spend{Tokens: b.tokens, Cost: b.cost, Currency: b.currency,
		MaxCost: b.limits.MaxCost, MaxTotalTokens: b.limits.MaxTotalTokens, NotSubmitted: notSubmitted}
}

// limits takes the run's spend limits from the checkpoint's settings s, changed by the command
// line (the checkpoint's header is rewritten when they change, so a later resume keeps them), and
// starts the budget from the spend of the earlier processes of the run.
func (j *Job) limits(w *store.Writer, st *store.State, s Settings) error {
	l := j.cfg.Limits.Apply(s.Limits)
	j.cfg.Settings.Limits = l
	if (l == nil) != (s.Limits == nil) || l != nil && *l != *s.Limits {
		raw, err := withLimits(st.Header.Settings, l)
		if err != nil {
			return fmt.Errorf("checkpoint %s: settings: %w", j.cfg.Checkpoint, err)
		}
		if err := w.SetSettings(raw); err != nil {
			return fmt.Errorf("keep the new spend limits: %w", err)
		}
		st.Header.Settings = raw
		var now Limits
		if l != nil {
			now = *l
		}
		j.log.Info("spend limits changed (0: none)", "max_cost", now.MaxCost, "max_total_tokens", now.MaxTotalTokens)
	}
	if !l.any() {
		return nil
	}
	b := newBudget(*l, j.cfg.Prices, j.log)
	if err := b.past(st, j.ModelURI()); err != nil {
		return err
	}
	j.budget = b
	return nil
}

// admit asks the budget (if any) to let row go out; when it does not, the row and the duplicates
// waiting for it stay unsubmitted, and count as left so that the run can end.
func (r *runner) admit(row batch.Row) bool {
	b := r.j.budget
	if b == nil || b.admit(row, r.model(row)) {
		return true
	}
	r.j.leftByLimit.Add(int64(1 + len(r.plan.waiting(row.Index))))
	r.checkDone()
	return false
}
